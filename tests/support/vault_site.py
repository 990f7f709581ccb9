"""alice's workstation and provisioner pointed at a Vault set up as a site has it.

For the tests of a Vault other than the session's plain server, or of a part
of it (a TLS listener, a namespace): they bring their own server or client,
and these build the same workstation and provisioner around it.
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping
from pathlib import Path

from agent.provision import Account, Provisioner
from agent.roster import parse_roster
from agent.settings import Settings
from agent.systemd import Systemctl
from tests.support.agent_host import LEAKS, ROSTER, USERS, Workstation, oauth
from tests.support.openbao import OpenBao

ALICE = "agent-alice"


def alice_station(
    entry: pwd.struct_passwd, homes: Path, tmp_path: Path, vault: OpenBao, token: str
) -> Workstation:
    """alice's home with ``token`` and a login the fake claude accepts."""
    roster = homes / f"roster-{tmp_path.name}.yaml"
    roster.write_text(ROSTER)
    roster.chmod(0o644)
    station = Workstation.create(entry, homes / f"{tmp_path.name}-alice", vault, roster)

    LEAKS.secret(token)
    station.write(station.token_path, token + "\n")
    login = oauth("site")
    station.write_credentials(login)
    station.fake_claude(["api"], accepted=[login["accessToken"]])
    return station


def alice_provisioner(
    entry: pwd.struct_passwd,
    homes: Path,
    tmp_path: Path,
    vault: OpenBao,
    environ: Mapping[str, str],
) -> Provisioner:
    """A provisioner for alice alone, in a fresh home, minting with root."""
    home = homes / f"{tmp_path.name}-provision"
    home.mkdir()
    Workstation(ALICE, entry.pw_uid, entry.pw_gid, home, {}, vault).own(home, 0o700)
    account = Account(ALICE, entry.pw_uid, entry.pw_gid, home)

    return Provisioner(
        Settings(vault_addr=vault.addr),
        parse_roster(f"users:\n  {ALICE}: {{email: {USERS[ALICE]}}}\n"),
        {"VAULT_ADDR": vault.addr, **environ},
        admin_token=vault.root_token,
        systemctl=Systemctl(run_dir=tmp_path / "no-systemd"),
        unit_dir=tmp_path / "units",
        accounts={ALICE: account}.get,
    )
