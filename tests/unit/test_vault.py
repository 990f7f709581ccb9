"""The thin Vault layer against a real OpenBao holding the stack's policies.

Outages that a dev server cannot stage on demand (sealed, overloaded) come
from a local stub answering as Vault does in those states.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import (
    BackupConflict,
    TokenDrift,
    TokenInvalid,
    VaultDenied,
    VaultUnavailable,
)
from agent.settings import Settings
from agent.vault import StoredCopy, UserVault, make_transport
from tests.support.openbao import OpenBao, free_port
from tests.support.vault_stack import mint_user_token
from tests.support.vault_stub import vault_stub

SETTINGS = Settings(vault_addr="set per test")
ROSTER = "users:\n  alice: {email: a@corp.example}\n  bob: {email: b@corp.example}\n"
LOGIN = {"accessToken": "a", "refreshToken": "r", "expiresAt": 1_900_000_000_000}


@pytest.fixture
def tokens(apply_roster: Callable[..., Path], openbao: OpenBao) -> dict[str, str]:
    """alice's and bob's tokens, minted through their roles from the stack."""
    apply_roster(ROSTER)
    admin = openbao.client()
    return {user: mint_user_token(admin, user) for user in ("alice", "bob")}


def vault_for(openbao: OpenBao, token: str, user: str = "alice") -> UserVault:
    settings = Settings(vault_addr=openbao.addr)
    return UserVault(make_transport(settings, token, {}), settings, user)


def test_own_token_passes_the_drift_check(
    openbao: OpenBao, tokens: dict[str, str]
) -> None:
    """A token minted through the user's role is recognised as theirs."""
    info = vault_for(openbao, tokens["alice"]).check_token()
    assert info.policies == ("workstation-claude-alice",)


def test_another_users_token_is_drift(openbao: OpenBao, tokens: dict[str, str]) -> None:
    """bob's token in alice's file is refused as drift, naming what it is."""
    with pytest.raises(TokenDrift, match="token-claude-auth-sync-bob"):
        vault_for(openbao, tokens["bob"]).check_token()


def test_root_token_is_drift(openbao: OpenBao) -> None:
    """An admin token is never used as a user's token."""
    with pytest.raises(TokenDrift, match="root"):
        vault_for(openbao, openbao.root_token).check_token()


def test_unknown_token_is_invalid(openbao: OpenBao) -> None:
    """A token Vault does not know (expired, revoked) needs a new one minted."""
    with pytest.raises(TokenInvalid, match="expired, was revoked") as caught:
        vault_for(openbao, "hvs.not-a-real-token").check_token()
    assert "claude-auth-provision" in caught.value.action


def test_renewal_gives_the_full_period(
    openbao: OpenBao, tokens: dict[str, str]
) -> None:
    """Renewing a role token restores its whole 32-day period."""
    assert (
        vault_for(openbao, tokens["alice"]).renew() == Settings().token_period_seconds
    )


def test_empty_path_reads_as_none(openbao: OpenBao, tokens: dict[str, str]) -> None:
    """Before the first backup there is no copy to restore."""
    assert vault_for(openbao, tokens["alice"]).read_latest() is None


def test_write_merges_into_other_keys(openbao: OpenBao, tokens: dict[str, str]) -> None:
    """A backup keeps the keys other tools store at the path."""
    vault = vault_for(openbao, tokens["alice"])
    vault.write_oauth({**LOGIN, "accessToken": "old"}, None)
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="workstation/claude-users/alice",
        secret={"claudeAiOauth": {**LOGIN, "accessToken": "old"}, "otherTool": "kept"},
    )

    vault.write_oauth(LOGIN, vault.read_latest())

    stored = vault.read_latest()
    assert stored is not None
    assert (stored.version, stored.data) == (
        3,
        {"claudeAiOauth": LOGIN, "otherTool": "kept"},
    )


def test_stale_write_is_a_conflict(openbao: OpenBao, tokens: dict[str, str]) -> None:
    """Check-and-set refuses a write based on a version that is no longer latest."""
    vault = vault_for(openbao, tokens["alice"])
    vault.write_oauth(LOGIN, None)
    seen = vault.read_latest()
    vault.write_oauth({**LOGIN, "accessToken": "other host"}, seen)

    with pytest.raises(BackupConflict):
        vault.write_oauth({**LOGIN, "accessToken": "stale"}, seen)


def test_malformed_copy_is_read_but_not_usable(
    openbao: OpenBao, tokens: dict[str, str]
) -> None:
    """A stored login of the wrong shape is reported, never offered for restore."""
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="workstation/claude-users/alice",
        secret={"claudeAiOauth": {**LOGIN, "expiresAt": "soon"}},
    )
    stored = vault_for(openbao, tokens["alice"]).read_latest()
    assert stored is not None
    assert stored.oauth is None
    assert "expiresAt" in stored.problem


def test_facts_are_merged_into_custom_metadata(
    openbao: OpenBao, tokens: dict[str, str]
) -> None:
    """Audit facts join the path's custom_metadata and keep other tools' keys."""
    vault = vault_for(openbao, tokens["alice"])
    vault.write_oauth(LOGIN, None)
    openbao.client().secrets.kv.v2.update_metadata(
        path="workstation/claude-users/alice", custom_metadata={"owner": "it"}
    )

    vault.update_facts({"host": "ws1"})

    metadata = openbao.client().secrets.kv.v2.read_secret_metadata(
        path="workstation/claude-users/alice"
    )["data"]["custom_metadata"]
    assert metadata == {"owner": "it", "host": "ws1"}


def test_other_users_path_is_denied(openbao: OpenBao, tokens: dict[str, str]) -> None:
    """Pointed at bob's path, alice's token is refused with the policy named."""
    vault = vault_for(openbao, tokens["alice"])
    vault.path = Settings().secret_path("bob")
    with pytest.raises(VaultDenied, match="claude-users/bob") as caught:
        vault.read_latest()
    assert "workstation-claude-alice" in caught.value.action


def test_unreachable_vault_is_an_outage() -> None:
    """Nothing listening at VAULT_ADDR is an outage, not a token problem."""
    settings = Settings(vault_addr=f"http://127.0.0.1:{free_port()}")
    vault = UserVault(make_transport(settings, "t", {}), settings, "alice")
    with pytest.raises(VaultUnavailable, match="connection refused"):
        vault.check_token()


def test_sealed_vault_is_an_outage() -> None:
    """A sealed Vault (503) is an outage that the next run retries."""
    with vault_stub() as sealed:
        sealed.answer(503, {"errors": ["Vault is sealed"]})
        settings = Settings(vault_addr=sealed.addr)
        vault = UserVault(make_transport(settings, "t", {}), settings, "alice")
        with pytest.raises(VaultUnavailable, match="Vault is sealed"):
            vault.check_token()


def seed(openbao: OpenBao, login: dict[str, object]) -> None:
    """A stored login beside another tool's key, as an earlier run left them."""
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="workstation/claude-users/alice",
        secret={"claudeAiOauth": login, "otherTool": "kept"},
    )


class RacedVault(UserVault):
    """alice on one host; right after its first read, another host stores ``login``."""

    def __init__(self, other: UserVault, login: dict[str, object]) -> None:
        own = other.transport.with_token(other.transport.token)
        super().__init__(own, other.settings, other.user)
        self.races = [lambda: other.store(login)]

    def read_latest(self, from_active: bool = False) -> StoredCopy | None:
        seen = super().read_latest(from_active)
        while self.races:
            self.races.pop()()
        return seen


def test_lost_race_with_an_older_login_is_retried(
    openbao: OpenBao, tokens: dict[str, str]
) -> None:
    """A write that lost to another host's older login is retried, and wins."""
    vault = vault_for(openbao, tokens["alice"])
    seed(openbao, {**LOGIN, "expiresAt": 1})
    raced = RacedVault(vault, {**LOGIN, "expiresAt": 2, "accessToken": "other"})

    assert raced.store(LOGIN) == "written"
    stored = vault.read_latest()
    assert stored is not None
    # Version 1 seeded, 2 by the other host, 3 by the retry.
    assert (stored.version, stored.data) == (
        3,
        {"claudeAiOauth": LOGIN, "otherTool": "kept"},
    )


def test_lost_race_with_a_newer_login_keeps_it(
    openbao: OpenBao, tokens: dict[str, str]
) -> None:
    """Another host's login that expires later is never overwritten by an older one."""
    vault = vault_for(openbao, tokens["alice"])
    seed(openbao, {**LOGIN, "expiresAt": 1})
    newer = {**LOGIN, "expiresAt": LOGIN["expiresAt"] + 1, "accessToken": "newer"}
    raced = RacedVault(vault, newer)

    assert raced.store(LOGIN) == "newer_kept"
    stored = vault.read_latest()
    assert stored is not None
    assert stored.data == {"claudeAiOauth": newer, "otherTool": "kept"}
