"""The agent's only conversation with Vault, through an hvac client passed in.

Each call turns Vault's HTTP answers into what the operator must do: a 403 on
``lookup-self`` means the token is dead or not a token at all; a sealed,
overloaded or unreachable server is an outage that the next run retries; a
403 elsewhere means the user's policy does not match this agent. The token is
checked to be this user's before anything else is asked with it, because a
foreign token (another user's, or an admin's) must read nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import hvac
import hvac.exceptions
import requests.exceptions

from agent.credentials import OAUTH_KEY, oauth_problem
from agent.errors import (
    REMINT_ACTION,
    BackupConflict,
    TokenDrift,
    TokenInvalid,
    TokenNotRenewed,
    VaultDenied,
    VaultError,
    VaultTLSError,
    VaultUnavailable,
)
from agent.settings import Settings, expected_display_name, policy_name

log = logging.getLogger(__name__)

VAULT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class TokenInfo:
    """What ``lookup-self`` said about the scoped token (nothing secret)."""

    display_name: str
    policies: tuple[str, ...]
    ttl: int


@dataclass(frozen=True)
class StoredCopy:
    """The latest version at the user's path, as read.

    ``data`` is every key stored there (other tools may keep their own);
    ``oauth`` the ``claudeAiOauth`` object if well formed, else None with
    ``problem`` saying why. ``version`` is what check-and-set compares.
    """

    version: int
    data: dict[str, Any]
    oauth: dict[str, Any] | None
    problem: str = ""


def make_client(
    settings: Settings, token: str, environ: Mapping[str, str]
) -> hvac.Client:
    """An hvac client for ``VAULT_ADDR`` with the usual TLS variables honoured.

    The token is passed explicitly, so hvac never falls back to a
    ``VAULT_TOKEN`` in the environment or an admin's ``~/.vault-token``.
    """
    verify: bool | str = True
    if environ.get("VAULT_CACERT", "").strip():
        verify = environ["VAULT_CACERT"].strip()
    if environ.get("VAULT_SKIP_VERIFY", "").strip().lower() in ("1", "true", "yes"):
        log.warning("VAULT_SKIP_VERIFY is set: Vault's TLS certificate is not checked")
        verify = False
    return hvac.Client(
        url=settings.vault_addr,
        token=token,
        verify=verify,
        timeout=VAULT_TIMEOUT_SECONDS,
        namespace=environ.get("VAULT_NAMESPACE", "").strip() or None,
    )


class UserVault:
    """One user's token and KV path, spoken to through ``client``."""

    def __init__(self, client: hvac.Client, settings: Settings, user: str) -> None:
        self.client = client
        self.settings = settings
        self.user = user
        self.addr = settings.vault_addr or "Vault"
        self.path = settings.secret_path(user)

    def check_token(self) -> TokenInfo:
        """Look the token up and refuse it unless it is exactly this user's.

        Raises ``TokenInvalid`` when Vault refuses the token itself,
        ``TokenDrift`` when it belongs to someone or something else, and
        ``VaultUnavailable`` during an outage.
        """
        with self._answer("look up the scoped token", on_403=self._token_refused):
            data = self.client.auth.token.lookup_self()["data"]

        info = TokenInfo(
            display_name=str(data.get("display_name", "")),
            policies=tuple(sorted(data.get("policies") or ())),
            ttl=int(data.get("ttl") or 0),
        )
        identity = tuple(data.get("identity_policies") or ())
        expected = (expected_display_name(self.user), (policy_name(self.user),))
        if (info.display_name, info.policies) != expected or identity:
            raise TokenDrift(
                f"The scoped Vault token is not {self.user}'s: it is named "
                f"{info.display_name!r} with policies "
                f"{', '.join(info.policies + identity) or 'none'}, where "
                f"{expected[0]!r} with only {expected[1][0]!r} was expected; it "
                "was not used further.",
                REMINT_ACTION
                + f" (confirm first that policy {expected[1][0]} exists).",
            )
        return info

    def renew(self) -> int:
        """Renew the token and return its new TTL in seconds.

        Raises ``TokenNotRenewed`` when the TTL is short of the full period:
        the token then has a hard limit and will expire however often it runs.
        """
        with self._answer("renew the scoped token", on_403=self._token_refused):
            auth = self.client.auth.token.renew_self()["auth"]

        ttl = int(auth.get("lease_duration") or 0)
        if ttl < self.settings.token_period_seconds:
            raise TokenNotRenewed(
                f"Renewing the scoped Vault token gave it {ttl // 3600} h, not the "
                f"full period of {self.settings.token_period_hours} h: it will "
                f"expire in {ttl // 86400} days whatever the agent does.",
                REMINT_ACTION + " to mint a periodic token through the user's role.",
            )
        return ttl

    def read_latest(self) -> StoredCopy | None:
        """The latest version at the user's path; None when there is none.

        Never an older version: a refresh token is single-use, and replaying
        a spent one can make the provider revoke the whole login.
        """
        with self._answer("read the stored login", on_403=self._path_refused):
            try:
                answer = self.client.secrets.kv.v2.read_secret_version(
                    path=self.path,
                    mount_point=self.settings.kv_mount,
                    raise_on_deleted_version=False,
                )
            except hvac.exceptions.InvalidPath:
                return None
        return _stored_copy(answer)

    def write_oauth(self, oauth: Mapping[str, Any], seen: StoredCopy | None) -> int:
        """Store ``oauth`` beside the keys in ``seen``, only if still latest.

        Check-and-set against ``seen.version`` (0: the path must be empty)
        means a write that another host made in between is never overwritten:
        ``BackupConflict`` is raised instead. Returns the new version.
        """
        data = dict(seen.data) if seen else {}
        data[OAUTH_KEY] = dict(oauth)
        with self._answer("store the login", on_403=self._path_refused):
            try:
                answer = self.client.secrets.kv.v2.create_or_update_secret(
                    path=self.path,
                    secret=data,
                    cas=seen.version if seen else 0,
                    mount_point=self.settings.kv_mount,
                )
            except hvac.exceptions.InvalidRequest as err:
                if "check-and-set" not in str(err):
                    raise
                raise BackupConflict(
                    f"Another writer changed {self._where()} between read and write.",
                    "Nothing to do: the next run stores the login again.",
                ) from None
        return int(answer["data"]["version"])

    def update_facts(self, facts: Mapping[str, str]) -> None:
        """Merge non-secret facts into the path's ``custom_metadata``.

        Vault replaces ``custom_metadata`` as a whole, so the keys other tools
        keep there are read first and kept.
        """
        with self._answer("update the audit metadata", on_403=self._path_refused):
            try:
                current = self.client.secrets.kv.v2.read_secret_metadata(
                    path=self.path, mount_point=self.settings.kv_mount
                )["data"].get("custom_metadata")
            except hvac.exceptions.InvalidPath:
                current = None
            merged = {**(current or {}), **facts}
            # Only custom_metadata is sent: hvac's update_metadata would also
            # reset delete_version_after, which belongs to the operator.
            self.client.adapter.post(
                url=f"/v1/{self.settings.metadata_path(self.user)}",
                json={"custom_metadata": merged},
            )

    def _where(self) -> str:
        return f"{self.addr} {self.settings.kv_mount}/data/{self.path}"

    def _token_refused(self, doing: str) -> VaultError:
        return TokenInvalid(
            f"Vault at {self.addr} refused the scoped token of {self.user} when "
            f"trying to {doing}: it has expired, was revoked, or is not a token.",
            REMINT_ACTION + ".",
        )

    def _path_refused(self, doing: str) -> VaultError:
        return VaultDenied(
            f"Vault refused to let {self.user}'s token {doing} at {self._where()}: "
            "the user's policy does not grant it.",
            f"Apply the Vault stack so that policy {policy_name(self.user)} is "
            "current, then rerun: systemctl start "
            f"claude-auth-sync@{self.user}.service",
        )

    @contextmanager
    def _answer(
        self, doing: str, on_403: Callable[[str], VaultError]
    ) -> Iterator[None]:
        """Turn what hvac and requests raise into the agent's own errors."""
        try:
            yield
        except hvac.exceptions.Forbidden:
            raise on_403(doing) from None
        except hvac.exceptions.Unauthorized:
            raise self._token_refused(doing) from None
        except (
            hvac.exceptions.VaultDown,
            hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway,
            hvac.exceptions.RateLimitExceeded,
            hvac.exceptions.PreconditionFailed,
            hvac.exceptions.VaultNotInitialized,
        ) as err:
            raise self._outage(doing, _status_text(err)) from None
        except requests.exceptions.SSLError:
            raise VaultTLSError(
                f"The TLS connection to Vault at {self.addr} failed when trying to "
                f"{doing}: its certificate was not accepted.",
                "Set VAULT_CACERT to the CA that signed Vault's certificate in "
                "/etc/claude-auth-sync/agent.env.",
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            raise self._outage(doing, "no answer") from None
        except hvac.exceptions.VaultError as err:
            raise VaultError(
                f"Vault at {self.addr} answered {_status_text(err)} when trying "
                f"to {doing}.",
                "Check Vault's own log for the request; the next run retries.",
            ) from None

    def _outage(self, doing: str, what: str) -> VaultUnavailable:
        return VaultUnavailable(
            f"Vault at {self.addr} is unavailable ({what}) when trying to {doing}.",
            "Nothing to do on this host: the next run retries. If it persists, "
            "check that Vault is up and unsealed.",
        )


def _status_text(err: hvac.exceptions.VaultError) -> str:
    """Vault's own error words, which name no secret (never hvac's URL)."""
    errors = err.errors if isinstance(err.errors, list) else []
    words = "; ".join(str(e) for e in errors)[:200]
    return f"{type(err).__name__}: {words}" if words else type(err).__name__


def _stored_copy(answer: Mapping[str, Any]) -> StoredCopy | None:
    body = answer.get("data") or {}
    version = int((body.get("metadata") or {}).get("version") or 0)
    data = body.get("data")
    if not isinstance(data, dict):
        # The latest version was deleted or destroyed: nothing to restore,
        # but a new write must still name that version for check-and-set.
        return StoredCopy(version, {}, None, "the latest version was deleted")

    if OAUTH_KEY not in data:
        return StoredCopy(version, data, None, f"no {OAUTH_KEY} stored")
    problem = oauth_problem(data[OAUTH_KEY])
    oauth = None if problem else data[OAUTH_KEY]
    return StoredCopy(version, data, oauth, problem)
