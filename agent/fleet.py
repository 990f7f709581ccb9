"""``claude-auth-sync doctor --all``: one line per roster user of this host.

A quick health look for root across a workstation: whether each user's timer
runs, what their last run found and when, and how long their Claude login
and their scoped Vault token have left. It reads only systemd's state and
each user's own ``status.json``; it sends nothing to Vault or to Claude, so
it answers at once, needs no token and cannot disturb a run.

Each status file is read under that user's identity, without following a
symlink and only up to a size limit, so that no user can make root read, or
choke on, anything the user could not read themselves.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from agent import layout
from agent.errors import AgentError
from agent.files import read_private
from agent.provision import Account, acting_as, lookup_account, this_host_names
from agent.report import STATUS_JSON
from agent.roster import RosterError, User, load_roster
from agent.settings import Settings, SettingsError, state_dir
from agent.systemd import Systemctl

log = logging.getLogger(__name__)

#: A scoped token with less than this left is renewed by the next run; if it
#: is this low, runs have been failing for most of its 32-day period.
TOKEN_WARN_DAYS = 7
HEADER = ("USER", "TIMER", "LAST RUN", "LOGIN LEFT", "TOKEN LEFT")


@dataclass(frozen=True)
class Health:
    """One user's line: each column as shown, and whether it needs a look."""

    user: str
    timer: str
    last_run: str
    login_left: str
    token_left: str
    attention: bool

    def columns(self) -> tuple[str, ...]:
        return (self.user, self.timer, self.last_run, self.login_left, self.token_left)


def show_all(
    out: TextIO,
    environ: Mapping[str, str],
    clock: Callable[[], float],
    *,
    euid: int | None = None,
    systemctl: Systemctl | None = None,
    accounts: Callable[[str], Account | None] = lookup_account,
    host_names: Collection[str] | None = None,
) -> int:
    """Print the table; 0 when nobody needs a look, 1 when someone does.

    Returns 2, with the command to use, when not run as root or when the
    roster or a setting cannot be used.
    """
    if (os.geteuid() if euid is None else euid) != 0:
        print(
            "doctor --all reads every user's status on this host, which only root "
            f"may do. Run: sudo {_program()} doctor --all (or, for your own setup "
            f"only: {_program()} doctor)",
            file=out,
        )
        return 2
    path = environ.get("CLAUDE_AUTH_SYNC_ROSTER", "") or str(layout.ROSTER_FILE)
    try:
        settings = Settings.from_env(environ)
        roster = load_roster(path)
    except (SettingsError, RosterError) as err:
        print(str(err), file=out)
        return 2

    names = host_names
    if names is None and any(u.hosts for u in roster):
        names = this_host_names()
    here = [
        (user, account)
        for user in roster
        if user.claude_auth
        and user.works_on(names or ())
        and (account := accounts(user.name)) is not None
    ]
    rows = _health(here, systemctl or Systemctl(), settings, clock())
    _print_table(rows, out)

    needing = [row.user for row in rows if row.attention]
    print(
        f"{len(rows)} user(s) here; "
        + (f"needing a look: {', '.join(needing)}." if needing else "all well."),
        file=out,
    )
    return 1 if needing else 0


def _program() -> str:
    """How this command was called, for the refusal to show a working command."""
    called = Path(sys.argv[0])
    return str(called.resolve()) if called.name == "claude-auth-sync" else called.name


def _health(
    users: list[tuple[User, Account]],
    systemctl: Systemctl,
    settings: Settings,
    now: float,
) -> list[Health]:
    timers = _timer_states(systemctl, [user.name for user, _ in users])
    login_warn = settings.login_warn_days * 86400
    period = settings.timer_period_hours * 3600
    return [
        _one(user.name, timers.get(user.name, "?"), _status(account), now,
             login_warn=login_warn, period=period)
        for user, account in users
    ]  # fmt: skip


def _one(
    user: str,
    timer: str,
    status: dict[str, Any] | None,
    now: float,
    *,
    login_warn: float,
    period: float,
) -> Health:
    """One user's line; anything that needs a person or an operator is flagged."""
    if status is None:
        return Health(user, timer, "never run", "-", "-", True)
    when = _epoch(status.get("time"))
    reason = f" {status['reason']}" if status.get("reason") else ""
    last = f"{status.get('status', '?')}{reason} {_ago(now - when) if when else ''}"

    login = _epoch(status.get("login_expires_at"))
    token = _epoch(status.get("vault_token_expires_at"))
    success = _epoch(status.get("last_success"))
    attention = (
        timer != "active"
        or status.get("status") == "FAIL"
        or (login is not None and login - now < login_warn)
        or (token is not None and token - now < TOKEN_WARN_DAYS * 86400)
        or success is None
        or now - success > 2 * period
    )
    return Health(
        user, timer, last.strip(), _left(login, now), _left(token, now), attention
    )


def _status(account: Account) -> dict[str, Any] | None:
    """The user's ``status.json``, read as the user; None if absent or unusable."""
    path = Path(state_dir(account.home)) / STATUS_JSON
    try:
        with acting_as(account):
            found = read_private(path, account.uid, "status file", AgentError)
    except (AgentError, OSError) as err:
        log.warning("%s: %s", account.name, getattr(err, "message", err))
        return None
    if found is None:
        return None
    try:
        value = json.loads(found.content)
    except ValueError:
        log.warning("%s: %s is not JSON", account.name, path)
        return None
    return value if isinstance(value, dict) else None


def _timer_states(systemctl: Systemctl, users: list[str]) -> dict[str, str]:
    """Every user's timer state from one ``systemctl show`` call.

    ``active`` is the healthy state; otherwise what systemd says, such as
    ``enabled, inactive`` or ``disabled``.
    """
    if not users:
        return {}
    if not systemctl.running:
        return dict.fromkeys(users, "no systemd")
    done = systemctl.run(
        "show", "--property=Id,UnitFileState,ActiveState",
        *(layout.sync_timer(user) for user in users), check=False,
    )  # fmt: skip
    states: dict[str, str] = {}
    for block in done.stdout.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        user = fields.get("Id", "").removeprefix(layout.SYNC_UNIT)
        user = user.removesuffix(".timer")
        enabled, active = fields.get("UnitFileState"), fields.get("ActiveState")
        if enabled == "enabled" and active == "active":
            states[user] = "active"
        else:
            states[user] = f"{enabled or '?'}, {active or '?'}"
    return states


def _print_table(rows: list[Health], out: TextIO) -> None:
    lines = [HEADER, *(row.columns() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    marks = [" ", *("!" if row.attention else " " for row in rows)]
    for mark, line in zip(marks, lines, strict=True):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print(f"{mark} {'  '.join(cells)}".rstrip(), file=out)


def _epoch(stamp: object) -> float | None:
    """Seconds since the epoch of a time as ``status.json`` writes it."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC).timestamp()


def _span(seconds: float) -> str:
    """A duration as a person reads it at a glance: 12d, 5h or 40m."""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400:.0f}d"
    if seconds >= 3600:
        return f"{seconds // 3600:.0f}h"
    return f"{seconds // 60:.0f}m"


def _ago(seconds: float) -> str:
    return f"{_span(seconds)} ago"


def _left(deadline: float | None, now: float) -> str:
    if deadline is None:
        return "-"
    left = deadline - now
    return _span(left) if left >= 0 else f"ended {_ago(left)}"
