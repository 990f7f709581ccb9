"""The provisioner's token steps against a real OpenBao holding the stack.

The users are real OS accounts (from the agent's test host), so the
provisioner really takes each user's identity to write in their home; only
where their home is differs from the user database. Timers are proven in the
booted container of tests/systemd.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path

import hvac
import pytest

from agent.provision import Account, Outcome, Provisioner, summary
from agent.roster import parse_roster
from agent.settings import (
    PROVISIONER_POLICY,
    Settings,
    expected_display_name,
    policy_name,
    token_file,
)
from agent.systemd import Systemctl
from tests.support.agent_host import ROSTER
from tests.support.openbao import OpenBao, free_port

ALICE, BOB = "agent-alice", "agent-bob"
RunProvisioner = Callable[..., list[Outcome]]


@pytest.fixture
def user_homes(
    agent_users: dict[str, pwd.struct_passwd], homes: Path, tmp_path: Path
) -> dict[str, Account]:
    """A fresh, empty home for each test user, owned by that user."""
    accounts = {}
    for name, entry in agent_users.items():
        home = homes / f"provision-{tmp_path.name}-{name}"
        home.mkdir()
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o700)
        accounts[name] = Account(name, entry.pw_uid, entry.pw_gid, home)
    return accounts


@pytest.fixture
def provision(
    openbao: OpenBao,
    apply_roster: Callable[..., Path],
    user_homes: dict[str, Account],
    tmp_path: Path,
) -> RunProvisioner:
    """Run the provisioner over the test roster, with the stack applied."""
    apply_roster(ROSTER)

    def run(
        admin_token: str = "", addr: str = openbao.addr, dry_run: bool = False
    ) -> list[Outcome]:
        return Provisioner(
            Settings(vault_addr=addr),
            parse_roster(ROSTER),
            {"VAULT_ADDR": addr},
            admin_token=admin_token,
            systemctl=Systemctl(run_dir=tmp_path / "no-systemd"),
            unit_dir=tmp_path / "units",
            accounts=user_homes.get,
            dry_run=dry_run,
        ).run()

    return run


def token_path(account: Account) -> Path:
    return Path(token_file(account.home))


def read_token(account: Account) -> str:
    return token_path(account).read_text().strip()


def test_mints_a_token_only_the_user_can_read(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """With an admin token, each user gets a token file of mode 600 they own."""
    provision(admin_token=openbao.root_token)
    info = token_path(user_homes[ALICE]).stat()

    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user_homes[ALICE].uid, 0o600)


def test_minted_token_is_the_users_own(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """The minted token carries the user's display name and only their policy."""
    provision(admin_token=openbao.root_token)
    data = openbao.client(read_token(user_homes[ALICE])).auth.token.lookup_self()

    assert data["data"]["display_name"] == expected_display_name(ALICE)
    assert data["data"]["policies"] == [policy_name(ALICE)]


def test_mints_with_the_provisioner_policy(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """A token holding only the provisioner policy is enough to mint."""
    minter = openbao.client().auth.token.create(
        policies=[PROVISIONER_POLICY], no_default_policy=True, ttl="10m"
    )["auth"]["client_token"]
    outcomes = provision(admin_token=minter)

    assert [o.error for o in outcomes] == [None, None]
    assert read_token(user_homes[BOB])


def test_keeps_a_valid_token(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """A second run, even with an admin token, keeps the user's valid token."""
    provision(admin_token=openbao.root_token)
    first = read_token(user_homes[ALICE])
    outcomes = provision(admin_token=openbao.root_token)

    assert read_token(user_homes[ALICE]) == first
    assert outcomes[0].changes == []


def test_revoked_token_without_admin_says_how_to_fix(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """The hourly run fails a revoked token and names the admin rerun."""
    provision(admin_token=openbao.root_token)
    openbao.client().auth.token.revoke(read_token(user_homes[ALICE]))
    alice = provision()[0]

    assert alice.error is not None
    assert "expired, was revoked" in alice.error.message
    assert "sudo --preserve-env=VAULT_ADDR,VAULT_TOKEN" in alice.error.action


def test_revoked_token_is_replaced_with_admin(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """With an admin token, a revoked token is replaced by a working one."""
    provision(admin_token=openbao.root_token)
    old = read_token(user_homes[ALICE])
    openbao.client().auth.token.revoke(old)
    provision(admin_token=openbao.root_token)
    new = read_token(user_homes[ALICE])

    assert new != old
    assert openbao.client(new).auth.token.lookup_self()["data"]["policies"] == [
        policy_name(ALICE)
    ]


def test_foreign_token_is_refused(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """Bob's token in alice's token file fails alice as not her own."""
    provision(admin_token=openbao.root_token)
    token_path(user_homes[ALICE]).write_text(read_token(user_homes[BOB]))
    alice = provision()[0]

    assert alice.error is not None
    assert f"is not {ALICE}'s" in alice.error.message


def test_minting_without_a_role_says_to_apply_the_stack(
    provision: RunProvisioner, openbao: OpenBao, apply_roster: Callable[..., Path]
) -> None:
    """A user whose role is not in Vault fails minting with the fix."""
    apply_roster(ROSTER.split(f"  {BOB}:")[0])
    bob = provision(admin_token=openbao.root_token)[1]

    assert bob.error is not None
    assert "refused to mint" in bob.error.message
    assert "apply the Vault stack" in bob.error.action


def test_vault_outage_is_not_a_failure(
    provision: RunProvisioner, openbao: OpenBao
) -> None:
    """When Vault cannot be reached, an existing token is noted as unchecked."""
    provision(admin_token=openbao.root_token)
    outcomes = provision(addr=f"http://127.0.0.1:{free_port()}")

    assert [o.error for o in outcomes] == [None, None]
    assert "token not checked (Vault unavailable)" in outcomes[0].notes


def test_dry_run_mints_nothing(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """--dry-run with an admin token only says it would mint."""
    outcomes = provision(admin_token=openbao.root_token, dry_run=True)

    assert not token_path(user_homes[ALICE]).exists()
    assert "would mint the scoped token" in outcomes[0].changes


def test_no_token_in_logs_or_summary(
    provision: RunProvisioner,
    openbao: OpenBao,
    user_homes: dict[str, Account],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the log lines nor the summary name a minted or admin token."""
    caplog.set_level(logging.DEBUG)
    provision(admin_token=openbao.root_token)
    openbao.client().auth.token.revoke(read_token(user_homes[ALICE]))
    outcomes = provision(admin_token=openbao.root_token)
    text = caplog.text + summary(outcomes, dry_run=False)
    tokens = [read_token(a) for a in user_homes.values()]

    assert [t for t in tokens if t in text] == []


def test_root_token_is_not_a_users_token(
    provision: RunProvisioner, openbao: OpenBao, user_homes: dict[str, Account]
) -> None:
    """An admin token pasted into a user's token file is refused as foreign."""
    account = user_homes[ALICE]
    provision()
    token_path(account).write_text(openbao.root_token)
    os.chown(token_path(account), account.uid, account.gid)
    token_path(account).chmod(0o600)
    alice = provision()[0]

    assert alice.error is not None
    assert "is not" in alice.error.message


def test_vault_token_in_the_environment_is_never_used(
    provision: RunProvisioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VAULT_TOKEN left in the process environment is not used to mint."""
    monkeypatch.setenv("VAULT_TOKEN", "root")
    outcomes = provision()

    assert all("needs a token" in " ".join(o.notes) for o in outcomes)


# -- offboarding: a user leaves the roster, and comes back -----------------------

WITHOUT_BOB = "\n".join(
    line for line in ROSTER.splitlines() if not line.strip().startswith(BOB)
)


@pytest.fixture
def offboarding(
    openbao: OpenBao,
    apply_roster: Callable[..., Path],
    user_homes: dict[str, Account],
    tmp_path: Path,
) -> Callable[..., list[Outcome]]:
    """Apply a roster and run the provisioner over it, as an operator would.

    The accessor registry lives in tmp_path and persists across calls, as
    ``/var/lib/claude-auth-sync/accessors.json`` does across runs.
    """

    def run(roster: str, admin_token: str = "") -> list[Outcome]:
        apply_roster(roster)
        return Provisioner(
            Settings(vault_addr=openbao.addr),
            parse_roster(roster),
            {"VAULT_ADDR": openbao.addr},
            admin_token=admin_token,
            systemctl=Systemctl(run_dir=tmp_path / "no-systemd"),
            unit_dir=tmp_path / "units",
            accounts=user_homes.get,
            accessors_file=tmp_path / "accessors.json",
        ).run()

    return run


def bobs_backup(openbao: OpenBao, token: str | None = None) -> dict[str, object]:
    """Bob's stored data as ``token`` (root by default) reads it."""
    answer = openbao.client(token).secrets.kv.v2.read_secret_version(
        path=f"workstation/claude-users/{BOB}",
        mount_point="secret",
        raise_on_deleted_version=True,
    )
    data: dict[str, object] = answer["data"]["data"]
    return data


def backup_as(openbao: OpenBao, token: str, user: str) -> None:
    openbao.client(token).secrets.kv.v2.create_or_update_secret(
        path=f"workstation/claude-users/{user}",
        secret={"claudeAiOauth": {"accessToken": "kept-for-audit"}},
        mount_point="secret",
    )


def test_removing_a_user_makes_their_token_useless_and_keeps_data(
    offboarding: Callable[..., list[Outcome]],
    openbao: OpenBao,
    user_homes: dict[str, Account],
) -> None:
    """Once the stack drops bob, his token reads nothing; his backup stays."""
    offboarding(ROSTER, admin_token=openbao.root_token)
    bob_token = read_token(user_homes[BOB])
    backup_as(openbao, bob_token, BOB)

    offboarding(WITHOUT_BOB)

    with pytest.raises(hvac.exceptions.Forbidden):
        bobs_backup(openbao, bob_token)
    assert bobs_backup(openbao) == {"claudeAiOauth": {"accessToken": "kept-for-audit"}}


def test_admin_run_revokes_a_departed_users_token_by_accessor(
    offboarding: Callable[..., list[Outcome]],
    openbao: OpenBao,
    user_homes: dict[str, Account],
    tmp_path: Path,
) -> None:
    """With an admin token the provisioner ends bob's token and removes its file."""
    offboarding(ROSTER, admin_token=openbao.root_token)
    bob_token = read_token(user_homes[BOB])
    alice_token = read_token(user_homes[ALICE])
    accessor = openbao.client(bob_token).auth.token.lookup_self()["data"]["accessor"]

    outcomes = offboarding(WITHOUT_BOB, admin_token=openbao.root_token)

    bob = next(o for o in outcomes if o.user == BOB)
    assert "revoke the old token and remove its file" in bob.changes
    with pytest.raises(hvac.exceptions.InvalidRequest):
        openbao.client().auth.token.lookup_accessor(accessor)
    assert not token_path(user_homes[BOB]).exists()
    assert BOB not in json.loads((tmp_path / "accessors.json").read_text())
    assert read_token(user_homes[ALICE]) == alice_token


def test_hourly_run_keeps_the_accessor_until_an_admin_run(
    offboarding: Callable[..., list[Outcome]],
    openbao: OpenBao,
    user_homes: dict[str, Account],
    tmp_path: Path,
) -> None:
    """Without an admin token nothing is revoked, and a later admin run does it."""
    offboarding(ROSTER, admin_token=openbao.root_token)
    accessors = tmp_path / "accessors.json"
    assert stat.S_IMODE(accessors.stat().st_mode) == 0o600

    hourly = offboarding(WITHOUT_BOB)
    bob = next(o for o in hourly if o.user == BOB)
    assert "old token not revoked (needs an admin token)" in bob.notes
    assert BOB in json.loads(accessors.read_text())

    later = offboarding(WITHOUT_BOB, admin_token=openbao.root_token)
    assert [o.changes for o in later if o.user == BOB] == [
        ["revoke the old token and remove its file"]
    ]


def test_provisioner_policy_token_can_offboard(
    offboarding: Callable[..., list[Outcome]],
    openbao: OpenBao,
    user_homes: dict[str, Account],
) -> None:
    """Revoking needs no admin token: the provisioner policy is enough."""
    offboarding(ROSTER, admin_token=openbao.root_token)
    narrow = openbao.client().auth.token.create(
        policies=[PROVISIONER_POLICY], no_default_policy=True
    )["auth"]["client_token"]

    outcomes = offboarding(WITHOUT_BOB, admin_token=narrow)

    assert [o.error for o in outcomes] == [None] * len(outcomes)
    assert not token_path(user_homes[BOB]).exists()


def test_a_returning_user_works_after_one_admin_run(
    offboarding: Callable[..., list[Outcome]],
    openbao: OpenBao,
    user_homes: dict[str, Account],
) -> None:
    """Re-added to the roster, bob gets a new token that reads his kept data."""
    offboarding(ROSTER, admin_token=openbao.root_token)
    backup_as(openbao, read_token(user_homes[BOB]), BOB)
    offboarding(WITHOUT_BOB, admin_token=openbao.root_token)

    offboarding(ROSTER, admin_token=openbao.root_token)

    kept = bobs_backup(openbao, read_token(user_homes[BOB]))
    assert kept == {"claudeAiOauth": {"accessToken": "kept-for-audit"}}
