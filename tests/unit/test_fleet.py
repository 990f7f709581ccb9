"""``claude-auth-sync doctor --all``: one line per roster user of this host.

Users are accounts of this test's own uid with homes under tmp_path, and their
status files are written by the agent's own report code, as a run would. The
timer column needs a booted systemd, so it is checked in tests/systemd; here
systemd is "not running", which the table says.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from agent.fleet import show_all
from agent.provision import Account
from agent.report import Event, Report, Status, iso
from agent.systemd import Systemctl

NOW = 1_800_000_000.0
DAY = 86400
ROSTER = """\
users:
  alice: {email: alice@corp.example}
  bob: {email: bob@corp.example}
  carol: {email: carol@corp.example, hosts: [ws2]}
  erin: {email: erin@corp.example, claude_auth: false}
"""


@pytest.fixture
def homes(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    for name in ("alice", "bob", "carol", "erin"):
        (root / name).mkdir(parents=True)
    return root


def record(home: Path, event: Event, **facts: str) -> None:
    """Leave the status file that a run ending in ``event`` writes."""
    state = home / ".local/state/claude-auth-sync"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    report = Report(home.name, "ws1", state, lambda: NOW - 3600, io.StringIO())
    report.emit(event)
    report.write_status(dict(facts))


def doctor_all(tmp_path: Path, homes: Path, euid: int = 0) -> tuple[int, list[str]]:
    """Run doctor --all on host ws1 and return its exit code and lines."""
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    out = io.StringIO()

    def account(name: str) -> Account | None:
        home = homes / name
        return Account(name, os.getuid(), os.getgid(), home) if home.is_dir() else None

    code = show_all(
        out,
        {"CLAUDE_AUTH_SYNC_ROSTER": str(roster)},
        lambda: NOW,
        euid=euid,
        systemctl=Systemctl(run_dir=tmp_path / "no-systemd"),
        accounts=account,
        host_names={"ws1", "ws1.corp.example"},
    )
    return code, out.getvalue().splitlines()


def line_of(lines: list[str], user: str) -> list[str]:
    """The cells of a user's line (the attention mark first, when there is one)."""
    return next(line.split() for line in lines if line[2:].startswith(user + " "))


def test_one_line_per_user_of_this_host(tmp_path: Path, homes: Path) -> None:
    """Users of this host with a timer are listed; others and turned-off ones not."""
    _, lines = doctor_all(tmp_path, homes)

    listed = [line[2:].split()[0] for line in lines[1:-1]]
    assert listed == ["alice", "bob"]


def test_line_shows_last_run_and_time_left(tmp_path: Path, homes: Path) -> None:
    """The last result, its age, and the days left on login and token are shown."""
    record(
        homes / "alice",
        Event(Status.OK),
        login_expires_at=iso(NOW + 20 * DAY),
        vault_token_expires_at=iso(NOW + 31 * DAY + 60),
    )
    _, lines = doctor_all(tmp_path, homes)

    assert line_of(lines, "alice")[1:] == [
        "alice", "no", "systemd", "OK", "1h", "ago", "20d", "31d"
    ]  # fmt: skip


def test_failed_user_is_flagged_with_the_reason(tmp_path: Path, homes: Path) -> None:
    """A FAIL line carries its reason and the attention mark."""
    record(homes / "bob", Event(Status.FAIL, "sso_required", "log in"))
    _, lines = doctor_all(tmp_path, homes)

    assert line_of(lines, "bob")[:6] == ["!", "bob", "no", "systemd", "FAIL",
                                         "sso_required"]  # fmt: skip


def test_user_who_never_ran_needs_a_look(tmp_path: Path, homes: Path) -> None:
    """No status file is shown as never run, flagged, and the exit code is 1."""
    code, lines = doctor_all(tmp_path, homes)

    assert line_of(lines, "bob")[:5] == ["!", "bob", "no", "systemd", "never"]
    assert code == 1
    assert lines[-1] == "2 user(s) here; needing a look: alice, bob."


def test_an_ended_login_says_so(tmp_path: Path, homes: Path) -> None:
    """A login past its hard deadline reads as ended, not as time left."""
    record(homes / "alice", Event(Status.OK), login_expires_at=iso(NOW - 2 * DAY))
    _, lines = doctor_all(tmp_path, homes)

    assert "ended 2d ago" in " ".join(line_of(lines, "alice"))


def test_a_symlinked_status_file_is_not_followed(tmp_path: Path, homes: Path) -> None:
    """A status.json that points elsewhere reads as no run, never as its target."""
    record(homes / "bob", Event(Status.OK))
    state = homes / "alice/.local/state/claude-auth-sync"
    state.mkdir(parents=True)
    (state / "status.json").symlink_to(homes / "bob/.local/state/claude-auth-sync"
                                       / "status.json")  # fmt: skip
    _, lines = doctor_all(tmp_path, homes)

    assert line_of(lines, "alice")[4] == "never"


def test_refuses_anyone_but_root(tmp_path: Path, homes: Path) -> None:
    """A non-root caller gets exit 2 and the command that works."""
    code, lines = doctor_all(tmp_path, homes, euid=1000)

    assert code == 2
    assert "only root may do. Run: sudo " in lines[0]
    assert "doctor --all" in lines[0]


def test_a_bad_roster_is_one_clear_message(tmp_path: Path, homes: Path) -> None:
    """An unreadable roster exits 2 with the loader's message, not a traceback."""
    out = io.StringIO()
    code = show_all(
        out, {"CLAUDE_AUTH_SYNC_ROSTER": str(tmp_path / "absent.yaml")}, lambda: NOW,
        euid=0,
    )  # fmt: skip

    assert code == 2
    assert "absent.yaml: cannot be read" in out.getvalue()
