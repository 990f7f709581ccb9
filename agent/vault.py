"""The agent's only conversation with Vault, over a transport passed in.

Each call turns Vault's HTTP answers into what the operator must do: a 403 on
``lookup-self`` means the token is dead or not a token at all; a sealed,
overloaded or unreachable server is an outage that the next run retries; a
403 elsewhere means the user's policy does not match this agent. The token is
checked to be this user's before anything else is asked with it, because a
foreign token (another user's, or an admin's) must read nothing.

The transport (``agent.vault_http``) is the standard library's HTTP client:
hvac and requests cost more to import than the rest of a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from agent.credentials import OAUTH_KEY, expires_at_ms, is_blanked, oauth_problem
from agent.errors import (
    REMINT_ACTION,
    BackupConflict,
    ConfigError,
    TokenDrift,
    TokenInvalid,
    TokenNotRenewed,
    VaultDenied,
    VaultError,
    VaultUnavailable,
)
from agent.layout import ENV_FILE
from agent.settings import (
    Settings,
    expected_display_name,
    policy_name,
    role_name,
    token_display_name,
)
from agent.vault_http import VaultHTTPError, VaultNoAnswer, VaultTransport

log = logging.getLogger(__name__)

#: How often a backup is tried when other writers keep winning the race.
MAX_STORE_ATTEMPTS = 3
#: Statuses of a Vault that cannot serve now but may on the next run: rate
#: limited, failing, behind a failing proxy, sealed or standby, or a standby
#: that has not yet seen a write the request depends on (412).
OUTAGE_STATUSES = frozenset({412, 429, 500, 502, 503, 504})
#: Asks a standby that serves reads to forward this one to the active node,
#: whose copy is never stale (OpenBao 2.7 and Vault Enterprise).
FROM_ACTIVE_NODE = {"X-Vault-Inconsistent": "forward-active-node"}


@dataclass(frozen=True)
class TokenInfo:
    """What ``lookup-self`` said about the scoped token (nothing secret)."""

    display_name: str
    policies: tuple[str, ...]
    ttl: int
    #: Names the token to revoke it without holding it; not a secret.
    accessor: str = ""


@dataclass(frozen=True)
class MintedToken:
    """A freshly minted scoped token and its accessor.

    ``token`` is secret and goes straight into the user's file; ``accessor``
    is kept by the provisioner so it can revoke the token after the user
    leaves, when nobody should read their token file any more.
    """

    token: str = field(repr=False)
    accessor: str


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

    @property
    def usable(self) -> dict[str, Any] | None:
        """The stored login if it is well formed and not blanked."""
        if self.oauth is None or is_blanked(self.oauth):
            return None
        return dict(self.oauth)


def make_transport(
    settings: Settings, token: str, environ: Mapping[str, str]
) -> VaultTransport:
    """A transport to ``VAULT_ADDR`` speaking with ``token``, and only it.

    The usual ``VAULT_CACERT``, ``VAULT_CAPATH``, ``VAULT_SKIP_VERIFY`` and
    ``VAULT_NAMESPACE`` are honoured; ``VAULT_TOKEN`` never is. Raises
    ``ConfigError`` for an address or setting that cannot be used.
    """
    return VaultTransport.from_env(settings.vault_addr or "", token, environ)


class UserVault:
    """One user's token and KV path, spoken to through ``transport``."""

    def __init__(
        self, transport: VaultTransport, settings: Settings, user: str
    ) -> None:
        self.transport = transport
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
        with _answer(self.addr, "look up the scoped token", self._token_refused):
            data = _field(self.transport.request("GET", "auth/token/lookup-self"))

        info = TokenInfo(
            display_name=str(data.get("display_name", "")),
            policies=tuple(sorted(data.get("policies") or ())),
            ttl=int(data.get("ttl") or 0),
            accessor=str(data.get("accessor", "")),
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
        self._check_namespace(data)
        return info

    def _check_namespace(self, data: Mapping[str, Any]) -> None:
        """Refuse a token of another namespace than ``VAULT_NAMESPACE`` names.

        Such a token is still valid, but its policy grants paths in its own
        namespace only, so every read would be denied for a reason that the
        denial would not tell. Vaults without namespaces report none.
        """
        if "namespace_path" not in data:
            return
        own = str(data.get("namespace_path") or "").strip("/")
        wanted = self.transport.namespace
        if own == wanted:
            return
        said = f"VAULT_NAMESPACE={wanted}" if wanted else "VAULT_NAMESPACE is unset"
        raise ConfigError(
            f"The scoped Vault token of {self.user} belongs to namespace "
            f"{own or '(root)'!r}, but {said}; it was not used further.",
            f"Set VAULT_NAMESPACE={own} in {ENV_FILE}"
            if own
            else f"Remove VAULT_NAMESPACE from {ENV_FILE}",
        )

    def renew(self) -> int:
        """Renew the token and return its new TTL in seconds.

        Raises ``TokenNotRenewed`` when the TTL is short of the full period:
        the token then has a hard limit and will expire however often it runs.
        """
        with _answer(self.addr, "renew the scoped token", self._token_refused):
            answer = self.transport.request("POST", "auth/token/renew-self", {})
        auth = (answer or {}).get("auth") or {}

        ttl = int(auth.get("lease_duration") or 0)
        if ttl < self.settings.token_period_seconds:
            raise TokenNotRenewed(
                f"Renewing the scoped Vault token gave it {ttl // 3600} h, not the "
                f"full period of {self.settings.token_period_hours} h: it will "
                f"expire in {ttl // 86400} days whatever the agent does.",
                REMINT_ACTION + " to mint a periodic token through the user's role.",
            )
        return ttl

    def read_latest(self, from_active: bool = False) -> StoredCopy | None:
        """The latest version at the user's path; None when there is none.

        Never an older version: a refresh token is single-use, and replaying
        a spent one can make the provider revoke the whole login.
        ``from_active`` asks a standby to pass the read to the active node.
        """
        headers = FROM_ACTIVE_NODE if from_active else None
        with _answer(self.addr, "read the stored login", self._path_refused):
            try:
                answer = self.transport.request("GET", self._data, headers=headers)
            except VaultHTTPError as err:
                if err.status != 404:
                    raise
                # A deleted latest version is a 404 that still names its
                # version, which the next write must name for check-and-set.
                answer = err.body if _field(err.body).get("metadata") else None
        return None if answer is None else _stored_copy(answer)

    def write_oauth(self, oauth: Mapping[str, Any], seen: StoredCopy | None) -> int:
        """Store ``oauth`` beside the keys in ``seen``, only if still latest.

        Check-and-set against ``seen.version`` (0: the path must be empty)
        means a write that another host made in between is never overwritten:
        ``BackupConflict`` is raised instead. Returns the new version.
        """
        data = dict(seen.data) if seen else {}
        data[OAUTH_KEY] = dict(oauth)
        body = {"options": {"cas": seen.version if seen else 0}, "data": data}
        with _answer(self.addr, "store the login", self._path_refused):
            try:
                answer = self.transport.request("POST", self._data, body)
            except VaultHTTPError as err:
                if not _lost_race(err):
                    raise
                raise BackupConflict(
                    f"Another writer changed {self._where()} between read and write.",
                    "Nothing to do: the next run stores the login again.",
                ) from None
        return int(_field(answer).get("version") or 0)

    def store(self, oauth: Mapping[str, Any]) -> str:
        """Back up ``oauth`` unless Vault holds it already, or a newer login.

        Returns ``written``, ``unchanged`` or ``newer_kept`` (another host
        stored a login that expires later; it is kept). A write that lost a
        race, to another host or to a standby's stale read, is tried again
        on a fresh read from the active node, merging into whatever keys are
        there then. Raises ``BackupConflict`` when other writers win every
        attempt.
        """
        from_active = False
        for _ in range(MAX_STORE_ATTEMPTS):
            stored = self.read_latest(from_active)
            newer = stored.usable if stored is not None else None
            if stored is not None and stored.oauth == dict(oauth):
                return "unchanged"
            if newer is not None and expires_at_ms(newer) > expires_at_ms(oauth):
                return "newer_kept"

            try:
                self.write_oauth(oauth, stored)
            except BackupConflict as err:
                log.info("%s Trying again.", err.message)
                from_active = True
                continue
            return "written"
        raise BackupConflict(
            f"Other writers changed {self._where()} at every attempt; the login "
            "was not stored this time.",
            "Nothing to do: the next run stores the login again.",
        )

    def update_facts(self, facts: Mapping[str, str]) -> None:
        """Merge non-secret facts into the path's ``custom_metadata``.

        Vault replaces ``custom_metadata`` as a whole, so the keys other tools
        keep there are read first and kept.
        """
        metadata = f"{self.settings.kv_mount}/metadata/{self.path}"
        with _answer(self.addr, "update the audit metadata", self._path_refused):
            try:
                current = _field(self.transport.request("GET", metadata))
            except VaultHTTPError as err:
                if err.status != 404:
                    raise
                current = {}
            merged = {**(current.get("custom_metadata") or {}), **facts}
            # Only custom_metadata is sent: the other metadata fields, such as
            # delete_version_after, belong to the operator.
            self.transport.request("POST", metadata, {"custom_metadata": merged})

    @property
    def _data(self) -> str:
        return f"{self.settings.kv_mount}/data/{self.path}"

    def _where(self) -> str:
        return f"{self.addr} {self._data}"

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


def mint_token(transport: VaultTransport, user: str, host: str) -> MintedToken:
    """Mint ``user``'s scoped token through their role, with ``transport``'s token.

    The token is returned to be written straight to the user's file, never
    logged. Raises ``VaultDenied`` when Vault refuses (no such role, or the
    admin token may not use it), ``VaultUnavailable`` during an outage, and
    another ``VaultError`` for anything else Vault answers.
    """
    role = role_name(user)
    body = {"display_name": token_display_name(user), "meta": {"host": host}}

    def refused(doing: str) -> VaultError:
        return VaultDenied(
            f"Vault at {transport.addr} refused to {doing} through role {role}.",
            f"Check that the role exists (vault read auth/token/roles/{role}; if "
            "not, add the user to roster.yaml and apply the Vault stack) and "
            "that VAULT_TOKEN may create tokens through it.",
        )

    with _answer(transport.addr, f"mint {user}'s token", refused, bad_request=True):
        answer = transport.request("POST", f"auth/token/create/{role}", body)
    auth = (answer or {}).get("auth") or {}
    token = str(auth.get("client_token") or "")
    if not token:
        raise VaultError(
            f"Vault at {transport.addr} minted no token for {user}.",
            "Check Vault's own log for the request, then rerun.",
        )
    return MintedToken(token, str(auth.get("accessor") or ""))


def revoke_accessor(transport: VaultTransport, user: str, accessor: str) -> bool:
    """Revoke a user's scoped token by its accessor; False if it was already gone.

    Raises ``VaultDenied`` when ``transport``'s token may not revoke it, and
    ``VaultUnavailable`` during an outage.
    """

    def refused(doing: str) -> VaultError:
        return VaultDenied(
            f"Vault at {transport.addr} refused to {doing}.",
            "Use an admin token, or one with the workstation-claude-provisioner "
            "policy, in VAULT_TOKEN.",
        )

    # An expired or already revoked token has no accessor any more: OpenBao
    # says so in a warning, Vault with a 400.
    try:
        with _answer(transport.addr, f"revoke {user}'s old token", refused):
            answer = transport.request(
                "POST", "auth/token/revoke-accessor", {"accessor": accessor}
            )
    except VaultError as err:
        if "invalid accessor" in err.message:
            return False
        raise
    warnings = (answer or {}).get("warnings") or []
    return not any("no token found" in str(w).lower() for w in warnings)


@contextmanager
def _answer(
    addr: str,
    doing: str,
    on_403: Callable[[str], VaultError],
    *,
    bad_request: bool = False,
) -> Iterator[None]:
    """Turn what the transport raised into what the operator must do.

    ``on_403`` says what a refusal means for this call; ``bad_request`` makes
    a 400 one too (Vault answers so for a token role that does not exist).
    """
    try:
        yield
    except VaultHTTPError as err:
        if err.status in (401, 403) or (bad_request and err.status == 400):
            raise on_403(doing) from None
        if err.status in OUTAGE_STATUSES:
            raise _outage(addr, doing, err.words) from None
        raise VaultError(
            f"Vault at {addr} answered {err.words} when trying to {doing}.",
            "Check Vault's own log for the request; the next run retries.",
        ) from None
    except VaultNoAnswer as err:
        raise _outage(addr, doing, err.why) from None


def _outage(addr: str, doing: str, what: str) -> VaultUnavailable:
    return VaultUnavailable(
        f"Vault at {addr} is unavailable ({what}) when trying to {doing}.",
        "Nothing to do on this host: the next run retries. If it persists, "
        "check that Vault is up and unsealed.",
    )


def _lost_race(err: VaultHTTPError) -> bool:
    """A check-and-set mismatch, or a standby behind the write it relies on."""
    return err.status == 412 or (
        err.status == 400 and any("check-and-set" in e for e in err.errors)
    )


def _field(answer: Mapping[str, Any] | None, name: str = "data") -> dict[str, Any]:
    """``answer[name]`` as a dict, empty when Vault left it out."""
    value = (answer or {}).get(name)
    return value if isinstance(value, dict) else {}


def _stored_copy(answer: Mapping[str, Any]) -> StoredCopy:
    body = _field(answer)
    version = int(_field(body, "metadata").get("version") or 0)
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
