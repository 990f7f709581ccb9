"""The root provisioner's steps that need neither Vault nor a booted systemd.

Users are accounts of this test's own uid with homes under tmp_path, and
systemd is "not running" (as on these machines): the home preparation, the
drop-ins, the plan and the summary are real; minting and token checks run
against OpenBao in tests/integration, timers in tests/systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.provision import (
    Account,
    Provisioner,
    home_dropin,
    main,
    this_host_names,
)
from agent.roster import parse_roster
from agent.settings import Settings
from agent.systemd import Systemctl

ROSTER = """\
users:
  alice:
    email: alice@corp.example
  bob:
    email: bob@corp.example
  erin:
    email: erin@corp.example
    claude_auth: false
"""
BOB_DROPIN = "units/claude-auth-sync@bob.service.d/10-home-paths.conf"


@pytest.fixture
def homes(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    for name in ("alice", "bob", "erin"):
        (root / name).mkdir(parents=True)
    return root


@pytest.fixture
def provisioner(tmp_path: Path, homes: Path) -> Callable[..., Provisioner]:
    """A provisioner over the sample roster, whose users all live under tmp_path."""

    def account(name: str) -> Account | None:
        home = homes / name
        if not home.is_dir():
            return None
        return Account(name, os.getuid(), os.getgid(), home)

    def make(
        roster: str = ROSTER,
        dry_run: bool = False,
        host_names: tuple[str, ...] = ("ws1", "ws1.corp.example"),
    ) -> Provisioner:
        return Provisioner(
            Settings(vault_addr="http://127.0.0.1:9"),
            parse_roster(roster),
            {},
            systemctl=Systemctl(run_dir=tmp_path / "no-systemd"),
            unit_dir=tmp_path / "units",
            accounts=account,
            dry_run=dry_run,
            host_names=host_names,
        )

    return make


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_prepares_private_directories(provisioner, homes: Path) -> None:
    """The token, state and Claude directories exist with mode 700."""
    provisioner().run()

    alice = homes / "alice"
    made = [".config/claude-auth-sync", ".local/state/claude-auth-sync", ".claude"]
    assert [mode(alice / d) for d in made] == [0o700, 0o700, 0o700]


def test_creates_claude_json_as_an_empty_object(provisioner, homes: Path) -> None:
    """~/.claude.json is created as {} with mode 600, since the sandbox binds it."""
    provisioner().run()

    claude_json = homes / "alice" / ".claude.json"
    assert (claude_json.read_text().strip(), mode(claude_json)) == ("{}", 0o600)


def test_keeps_an_existing_claude_json(provisioner, homes: Path) -> None:
    """A ~/.claude.json the user already has is left exactly as it was."""
    claude_json = homes / "alice" / ".claude.json"
    claude_json.write_text('{"userID": "x"}')
    provisioner().run()

    assert claude_json.read_text() == '{"userID": "x"}'


def test_never_touches_claude_credentials(provisioner, homes: Path) -> None:
    """The user's Claude credentials file is neither rewritten nor re-moded."""
    credentials = homes / "alice" / ".claude" / ".credentials.json"
    credentials.parent.mkdir()
    credentials.write_text('{"claudeAiOauth": {}}')
    credentials.chmod(0o640)
    before = credentials.stat()
    provisioner().run()

    after = credentials.stat()
    assert (after.st_mtime_ns, after.st_mode) == (before.st_mtime_ns, before.st_mode)


def test_writes_the_home_drop_in(provisioner, tmp_path: Path, homes: Path) -> None:
    """Each enabled user gets the drop-in naming their own home's paths."""
    provisioner().run()

    dropin = tmp_path / "units/claude-auth-sync@alice.service.d/10-home-paths.conf"
    assert f"BindPaths={homes}/alice/.claude {homes}/alice/.claude.json" in (
        dropin.read_text()
    )


def test_drop_in_binds_the_token_read_only() -> None:
    """The token directory is bound read-only: the unit only reads the token."""
    text = home_dropin(Account("alice", 1000, 1000, Path("/home/alice")))

    assert "BindReadOnlyPaths=/home/alice/.config/claude-auth-sync\n" in text
    assert "BindPaths=/home/alice/.config" not in text


def test_refuses_a_home_a_drop_in_cannot_name(provisioner, homes: Path) -> None:
    """A home path with a space fails that user with the reason."""
    outcomes = Provisioner(
        Settings(vault_addr="http://127.0.0.1:9"),
        parse_roster(ROSTER),
        {},
        systemctl=Systemctl(run_dir=homes / "none"),
        unit_dir=homes / "units",
        accounts=lambda n: Account(n, os.getuid(), os.getgid(), homes / f"{n} x"),
    ).run()

    assert outcomes[0].error is not None
    assert "cannot name safely" in outcomes[0].error.message


def test_warns_once_per_user_without_a_token(provisioner, caplog) -> None:
    """Without VAULT_TOKEN, each user lacking a token gets exactly one warning."""
    caplog.set_level(logging.WARNING, logger="agent.provision")
    provisioner().run()

    messages = [r.getMessage() for r in caplog.records]
    warned = [m.split()[0] for m in messages if "no scoped Vault token" in m]
    assert sorted(warned) == ["alice", "bob"]


def test_missing_token_is_not_a_failure(provisioner) -> None:
    """The hourly run without an admin token succeeds for users still lacking one."""
    outcomes = provisioner().run()

    assert [o.error for o in outcomes] == [None, None, None]


def test_skips_users_without_an_account(provisioner, homes: Path) -> None:
    """A roster user with no account on this host is noted and left alone."""
    (homes / "bob").rmdir()
    outcomes = provisioner().run()

    bob = next(o for o in outcomes if o.user == "bob")
    assert (bob.changes, bob.notes, bob.error) == (
        [],
        ["no account on this host"],
        None,
    )


def test_prepares_nothing_for_claude_auth_false(provisioner, homes: Path) -> None:
    """A user with claude_auth: false gets no directories and no drop-in."""
    provisioner().run()

    assert list((homes / "erin").iterdir()) == []


def test_removes_the_drop_in_of_a_user_who_left(provisioner, tmp_path: Path) -> None:
    """A drop-in for someone no longer in the roster is removed."""
    provisioner().run()
    provisioner(ROSTER.replace("  bob:\n    email: bob@corp.example\n", "")).run()

    assert not (tmp_path / BOB_DROPIN).exists()


def test_removes_the_drop_in_when_claude_auth_turns_off(
    provisioner, tmp_path: Path
) -> None:
    """Turning claude_auth off for a user removes their drop-in."""
    provisioner().run()
    bob_off = "bob@corp.example\n    claude_auth: false"
    provisioner(ROSTER.replace("bob@corp.example", bob_off)).run()

    assert not (tmp_path / BOB_DROPIN).exists()


BOB_ON = "bob@corp.example\n    hosts: "


def test_prepares_a_user_listed_for_this_host(provisioner, tmp_path: Path) -> None:
    """A user whose hosts name this host by its FQDN is provisioned here."""
    provisioner(ROSTER.replace("bob@corp.example", BOB_ON + "[ws1.corp.example]")).run()

    assert (tmp_path / BOB_DROPIN).is_file()


def test_leaves_alone_a_user_listed_for_other_hosts(provisioner, homes: Path) -> None:
    """A user listed only for other hosts gets nothing here, and says why."""
    outcomes = provisioner(ROSTER.replace("bob@corp.example", BOB_ON + "[ws2]")).run()

    bob = next(o for o in outcomes if o.user == "bob")
    assert (bob.changes, bob.notes) == ([], ["listed for other hosts (ws2)"])
    assert list((homes / "bob").iterdir()) == []


def test_moving_a_user_to_other_hosts_removes_the_drop_in(
    provisioner, tmp_path: Path
) -> None:
    """Listing a provisioned user for other hosts only is treated as leaving."""
    provisioner().run()
    provisioner(ROSTER.replace("bob@corp.example", BOB_ON + "[ws2, ws3]")).run()

    assert not (tmp_path / BOB_DROPIN).exists()


def test_this_host_is_known_by_its_short_name() -> None:
    """The names matched against the roster include the short host name."""
    name = socket.gethostname().lower()
    assert {name, name.split(".")[0]} <= this_host_names()


def test_dry_run_changes_nothing(provisioner, tmp_path: Path, homes: Path) -> None:
    """--dry-run creates no directory, file or drop-in."""
    provisioner(dry_run=True).run()

    assert list((homes / "alice").iterdir()) == []
    assert not (tmp_path / "units").exists()


def test_dry_run_lists_the_plan(provisioner) -> None:
    """--dry-run says what it would do for each user."""
    outcomes = provisioner(dry_run=True).run()

    alice = next(o for o in outcomes if o.user == "alice")
    assert "would create ~/.claude.json" in alice.changes
    assert "would write the sandbox drop-in" in alice.changes


def test_second_run_changes_nothing(provisioner) -> None:
    """A second run finds everything in place."""
    provisioner().run()
    outcomes = provisioner().run()

    assert [o.changes for o in outcomes] == [[], [], []]


def test_one_bad_user_does_not_stop_the_others(provisioner, homes: Path) -> None:
    """A symlinked ~/.claude.json fails alice only; bob is still provisioned."""
    (homes / "alice" / ".claude.json").symlink_to("/etc/hostname")
    outcomes = provisioner().run()

    alice, bob = outcomes[0], outcomes[1]
    assert alice.error is not None and "symlink" in alice.error.message
    assert bob.error is None and (homes / "bob" / ".claude").is_dir()


def test_refuses_a_token_readable_by_others(provisioner, homes: Path) -> None:
    """A group-readable token file fails that user with the fix."""
    token_dir = homes / "alice" / ".config" / "claude-auth-sync"
    token_dir.mkdir(parents=True)
    (token_dir / "vault-token").write_text("hvs.x")
    (token_dir / "vault-token").chmod(0o640)
    alice = provisioner().run()[0]

    assert alice.error is not None
    assert "can be read by others" in alice.error.message
    assert "rm " in alice.error.action


def test_says_once_that_systemd_is_not_running(provisioner, caplog) -> None:
    """Outside a running systemd the timer steps are skipped, said once."""
    caplog.set_level(logging.WARNING, logger="agent.provision")
    provisioner().run()

    said = [r for r in caplog.records if "systemd is not running" in r.getMessage()]
    assert len(said) == 1


NOBODY_HERE = "users:\n  nosuchuser9:\n    email: n@corp.example\n"


def write_roster(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(text)
    return path


def test_main_takes_vault_token_out_of_the_environment(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The admin token is removed from the environment that children inherit."""
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "hvs.admin-token-of-the-test")
    roster = write_roster(tmp_path, NOBODY_HERE)
    code = main(["--roster", str(roster)])

    assert code == 0
    assert "VAULT_TOKEN" not in os.environ
    assert "hvs.admin-token-of-the-test" not in capsys.readouterr().out


def test_main_reports_a_bad_roster_without_traceback(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """An invalid roster exits 2 with the roster's own message."""
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")
    roster = write_roster(tmp_path, "users:\n  Alice:\n    email: a@corp.example\n")
    code = main(["--roster", str(roster)])

    assert code == 2
    assert "is not a safe POSIX login name" in caplog.text
    assert "Traceback" not in caplog.text


def test_main_needs_vault_addr(tmp_path: Path, monkeypatch, caplog) -> None:
    """Without VAULT_ADDR (and no installed agent.env) it exits 2 saying where."""
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    roster = write_roster(tmp_path, NOBODY_HERE)
    code = main(["--roster", str(roster)])

    assert code == 2
    assert "VAULT_ADDR is not set" in caplog.text
