"""The names and defaults that the stack, the agent and the provisioner share.

Everything that decides where a user's data lives, or what a policy or token
role is called, is derived here, so that the Vault stack that declares a path
and the agent that writes to it can never disagree. The defaults are the
runbook's values; each can be overridden from the environment, which is what
the systemd unit's ``EnvironmentFile`` sets on a workstation.

This module imports nothing beyond the standard library: the agent imports it
on every run, and a workstation install carries neither cdktf nor hvac here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_KV_MOUNT = "secret"
DEFAULT_KV_PREFIX = "workstation/claude-users"
DEFAULT_TOKEN_PERIOD_HOURS = 768  # 32 days: longer than a month of missed runs
DEFAULT_TIMER_PERIOD_HOURS = 6
DEFAULT_LOGIN_WARN_DAYS = 3
#: The CLI retries network errors for minutes; a probe that takes longer than
#: this is an outage, not a verdict on the login.
DEFAULT_PROBE_TIMEOUT_SECONDS = 120
DEFAULT_KV_MAX_VERSIONS = 10  # Vault's own default: ten backups of audit history

#: Every policy and token role of this product starts with this, which is what
#: lets the provisioner's policy allow "create through these roles" by glob.
NAME_PREFIX = "workstation-claude-"
PROVISIONER_POLICY = NAME_PREFIX + "provisioner"

#: The syslog identifier the unit logs under and the Loki rules select on.
LOG_IDENTIFIER = "claude-auth-sync"

# A KV mount or prefix ends up inside policy paths, where "*" and "+" are globs
# and "..", empty segments or a leading "/" would name other paths.
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class SettingsError(ValueError):
    """A setting from the environment cannot be used; the message says which."""


def _check_path(name: str, value: str) -> str:
    segments = value.split("/")
    bad = [s for s in segments if not _PATH_SEGMENT.match(s) or s in (".", "..")]
    if not value or bad:
        raise SettingsError(
            f"{name}={value!r} is not a plain Vault path: use letters, digits, "
            "'_', '-' and '.' in '/'-separated segments, with no globs ('*', '+'), "
            "no empty segment and no '..'."
        )
    return value


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise SettingsError(f"{name}={value!r} must be a whole number above 0.")
    return number


def _cidrs(name: str, value: str) -> tuple[str, ...]:
    """Comma- or space-separated networks, normalised as the roster's are."""
    try:
        return tuple(
            str(ipaddress.ip_network(text, strict=True))
            for text in value.replace(",", " ").split()
        )
    except ValueError:
        raise SettingsError(
            f"{name}={value!r} must list networks in CIDR form with their host "
            "bits zero, separated by commas, such as '10.20.0.0/16,192.0.2.7/32'."
        ) from None


def _flag(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in ("", "true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{name}={value!r} must be true or false.")
    return text in ("true", "1", "yes")


@dataclass(frozen=True)
class Settings:
    """Where the per-user data lives in Vault, and how long tokens last.

    ``vault_addr`` may be ``None`` for the stack's synthesis, which does not
    talk to Vault; the agent refuses to run without it.
    """

    vault_addr: str | None = None
    kv_mount: str = DEFAULT_KV_MOUNT
    kv_prefix: str = DEFAULT_KV_PREFIX
    token_period_hours: int = DEFAULT_TOKEN_PERIOD_HOURS
    timer_period_hours: int = DEFAULT_TIMER_PERIOD_HOURS
    login_warn_days: int = DEFAULT_LOGIN_WARN_DAYS
    probe_timeout_seconds: int = DEFAULT_PROBE_TIMEOUT_SECONDS
    #: Networks every user token is bound to, unless the roster names its own.
    token_bound_cidrs: tuple[str, ...] = ()
    #: Whether the stack manages the KV mount's settings (``max_versions``);
    #: off by default, because the mount usually belongs to someone else.
    manage_mount: bool = False
    kv_max_versions: int = DEFAULT_KV_MAX_VERSIONS

    def __post_init__(self) -> None:
        _check_path("CLAUDE_AUTH_SYNC_KV_MOUNT", self.kv_mount)
        _check_path("CLAUDE_AUTH_SYNC_KV_PREFIX", self.kv_prefix)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings, taking the runbook's defaults for what is unset.

        Raises ``SettingsError`` naming the variable when a value is unusable.
        """
        env = os.environ if environ is None else environ
        ints = {
            "token_period_hours": "CLAUDE_AUTH_SYNC_TOKEN_PERIOD_HOURS",
            "timer_period_hours": "CLAUDE_AUTH_SYNC_TIMER_PERIOD_HOURS",
            "login_warn_days": "CLAUDE_AUTH_SYNC_LOGIN_WARN_DAYS",
            "probe_timeout_seconds": "CLAUDE_AUTH_SYNC_PROBE_TIMEOUT",
            "kv_max_versions": "CLAUDE_AUTH_SYNC_KV_MAX_VERSIONS",
        }
        numbers = {
            field: _positive_int(var, env[var])
            for field, var in ints.items()
            if env.get(var, "").strip()
        }
        return cls(
            vault_addr=env.get("VAULT_ADDR", "").strip() or None,
            kv_mount=env.get("CLAUDE_AUTH_SYNC_KV_MOUNT", "").strip().strip("/")
            or DEFAULT_KV_MOUNT,
            kv_prefix=env.get("CLAUDE_AUTH_SYNC_KV_PREFIX", "").strip().strip("/")
            or DEFAULT_KV_PREFIX,
            token_bound_cidrs=_cidrs(
                "CLAUDE_AUTH_SYNC_TOKEN_BOUND_CIDRS",
                env.get("CLAUDE_AUTH_SYNC_TOKEN_BOUND_CIDRS", ""),
            ),
            manage_mount=_flag(
                "CLAUDE_AUTH_SYNC_MANAGE_MOUNT",
                env.get("CLAUDE_AUTH_SYNC_MANAGE_MOUNT", ""),
            ),
            **numbers,
        )

    @property
    def token_period_seconds(self) -> int:
        return self.token_period_hours * 3600

    def secret_path(self, user: str) -> str:
        """The user's KV path relative to the mount, as hvac's KV v2 calls take it."""
        return f"{self.kv_prefix}/{user}"

    def data_path(self, user: str) -> str:
        """The full API path of the user's data, as a policy names it."""
        return f"{self.kv_mount}/data/{self.kv_prefix}/{user}"

    def metadata_path(self, user: str) -> str:
        """The full API path of the user's metadata, as a policy names it."""
        return f"{self.kv_mount}/metadata/{self.kv_prefix}/{user}"


def policy_name(user: str) -> str:
    """The name of the user's Vault policy; the token role has the same name."""
    return NAME_PREFIX + user


def role_name(user: str) -> str:
    return NAME_PREFIX + user


def token_display_name(user: str) -> str:
    """The display name the provisioner gives a user's token when minting it.

    Vault stores it with a ``token-`` prefix; see ``expected_display_name``.
    """
    return f"claude-auth-sync-{user}"


def expected_display_name(user: str) -> str:
    """The display name that ``lookup-self`` reports for the user's own token."""
    return "token-" + token_display_name(user)


#: Where a user's files live, relative to their home: the scoped Vault token
#: that the provisioner writes and the agent reads, and the agent's state (lock,
#: ``sync.log``, ``status.json``) that the login notice reads.
TOKEN_FILE = ".config/claude-auth-sync/vault-token"  # noqa: S105  # a path
STATE_DIR = ".local/state/claude-auth-sync"


def token_file(home: str | os.PathLike[str]) -> str:
    return os.path.join(home, TOKEN_FILE)


def state_dir(home: str | os.PathLike[str]) -> str:
    return os.path.join(home, STATE_DIR)
