"""The agent's errors, and the exit code each one ends a run with.

Every expected failure is an ``AgentError``: its text says what failed and on
what, ``action`` says what the person or operator must do, and ``reason`` is
the short word the log line carries for the alert rules. A subclass exists
only where a caller must tell the cases apart. Messages never include a token
or any part of the credentials file: they are printed and shipped to Loki.
"""

from __future__ import annotations

from enum import IntEnum

#: What to do about a missing, dead or foreign scoped token: only an
#: administrator can mint a new one, through the user's token role.
REMINT_ACTION = (
    "An administrator reruns the provisioner with an admin Vault token: "
    "sudo --preserve-env=VAULT_ADDR,VAULT_TOKEN claude-auth-provision"
)


class ExitCode(IntEnum):
    """How ``claude-auth-sync run`` ends; the values are documented in cli."""

    OK = 0
    INTERNAL = 1
    CONFIG = 2
    SSO_REQUIRED = 3
    VAULT = 4
    VAULT_TOKEN = 5
    CLAUDE_UNREACHABLE = 6
    CREDENTIALS = 7
    PROBE_FAILED = 8


class AgentError(Exception):
    """A failure the agent expected and can explain; never a traceback."""

    reason = "internal"
    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str, action: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.action = action


class ConfigError(AgentError):
    """A required setting is missing or unusable, such as ``VAULT_ADDR``."""

    reason = "config"
    exit_code = ExitCode.CONFIG


class TokenFileError(AgentError):
    """The scoped token file is missing, unsafe, or not one token."""

    reason = "token_file"
    exit_code = ExitCode.VAULT_TOKEN


class CredentialsFileError(AgentError):
    """Claude's credentials file is a symlink, someone else's, or unreadable."""

    reason = "credentials_file"
    exit_code = ExitCode.CREDENTIALS


class CredentialsChanged(CredentialsFileError):
    """Claude rewrote the credentials file while a restore was merging into it.

    Claude has then refreshed the login itself; the restore starts over
    rather than overwrite what Claude wrote.
    """

    reason = "credentials_changed"


class VaultError(AgentError):
    """Vault answered with something the agent cannot work with."""

    reason = "vault_error"
    exit_code = ExitCode.VAULT


class VaultUnavailable(VaultError):
    """Vault is down, sealed, unreachable, overloaded or timing out.

    An outage: the next run retries, and the login is still probed.
    """

    reason = "vault_unavailable"


class VaultTLSError(VaultError):
    """The TLS connection to Vault failed: wrong CA, wrong name, plain HTTP."""

    reason = "vault_tls"


class BackupConflict(VaultError):
    """Another writer kept changing the backup between read and write."""

    reason = "backup_conflict"


class VaultDataError(VaultError):
    """The stored ``claudeAiOauth`` copy is malformed and cannot be restored."""

    reason = "vault_data"


class TokenInvalid(VaultError):
    """Vault refused the scoped token itself: expired, revoked or unknown."""

    reason = "token_invalid"
    exit_code = ExitCode.VAULT_TOKEN


class TokenDrift(VaultError):
    """The scoped token is valid but is not this user's token.

    No further request is made with it: it may be another user's.
    """

    reason = "token_drift"
    exit_code = ExitCode.VAULT_TOKEN


class TokenNotRenewed(VaultError):
    """Renewing the scoped token did not give it its full period again."""

    reason = "token_not_renewed"
    exit_code = ExitCode.VAULT_TOKEN


class VaultDenied(VaultError):
    """The token is this user's, but its policy refuses the user's own path."""

    reason = "vault_denied"
    exit_code = ExitCode.VAULT_TOKEN


class ProbeError(AgentError):
    """The Claude CLI could not be run, or answered in a way not understood."""

    reason = "probe_failed"
    exit_code = ExitCode.PROBE_FAILED
