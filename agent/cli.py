"""The command line: ``claude-auth-sync run | status [--json] | doctor [--all]``.

``run`` is what ``claude-auth-sync@<user>.service`` calls every six hours, as
the user. It prints one logfmt line per event and exits with:

    0  OK, RECOVERED, or SKIP (another run held the lock); also OK with a
       login_expiring warning beside it
    1  an unexpected internal error (a bug; ``--debug`` shows the traceback)
    2  a configuration or usage error, such as VAULT_ADDR unset
    3  sso_required: the person must log in again (the line gives the command)
    4  Vault unavailable or failing: down, sealed, timing out, a TLS failure,
       or a backup that lost every check-and-set race; the next run retries
    5  scoped Vault token trouble: the token file is missing or unsafe, the
       token expired, was revoked, is not this user's (drift), did not renew
       to its full period, or its policy refuses the user's own path
    6  the Claude API was unreachable or timed out: the login was not judged
    7  Claude's credentials file was refused (a symlink, someone else's) or
       could not be written
    8  the probe could not run, or Claude answered in a way not understood

``status`` shows what the last runs found (exit 0, or 1 when no run has
recorded anything yet); ``--json`` prints ``status.json`` for scripts.
``doctor`` checks this user's setup read-only and exits 0 when there is
nothing to fix, 1 otherwise. ``doctor --all``, for root, prints one line per
roster user of this host from systemd and their status files, without asking
Vault anything; it exits 0 when all are well, 1 when someone needs a look, and
2 when not run as root. Both read ``/etc/claude-auth-sync/agent.env`` as the
unit does, so that they see the settings a run sees from a person's shell.

Inputs come from the environment that the unit's ``EnvironmentFile`` sets:
``VAULT_ADDR`` (required), ``VAULT_CACERT``, ``VAULT_SKIP_VERIFY``,
``VAULT_NAMESPACE``, ``CLAUDE_AUTH_SYNC_KV_MOUNT``, ``CLAUDE_AUTH_SYNC_KV_PREFIX``,
``CLAUDE_AUTH_SYNC_PROBE_TIMEOUT``, ``CLAUDE_AUTH_SYNC_LOGIN_WARN_DAYS``,
``CLAUDE_AUTH_SYNC_ROSTER``, ``CLAUDE_CONFIG_DIR``, ``CLAUDE_BIN`` and
``ANTHROPIC_BASE_URL``. The user is the effective OS user; the home directory
is ``$HOME``, else the user's entry in the password database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from agent.report import read_status, tail_log
from agent.run import Context, run

log = logging.getLogger(__name__)


def build_context(environ: Mapping[str, str], out: TextIO) -> Context:
    """The effective user, their home, and this host, from the OS."""
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        user, passwd_home = entry.pw_name, entry.pw_dir
    except KeyError:
        user, passwd_home = str(uid), ""
    home = Path(environ.get("HOME") or passwd_home or "/")
    return Context(user, uid, home, os.uname().nodename, environ, time.time, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("CLAUDE_AUTH_SYNC_DEBUG", "") == "1"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "run":  # what the unit runs: its stderr is the journal
        from agent.report import LogfmtFormatter  # noqa: PLC0415

        for handler in logging.getLogger().handlers:
            handler.setFormatter(LogfmtFormatter())
    environ = dict(os.environ)
    if args.command == "doctor":
        from agent.provision import installed_settings  # noqa: PLC0415  # doctor only

        environ = {**installed_settings(), **environ}
    ctx = build_context(environ, sys.stdout)

    if args.command == "run":
        return run(ctx)
    if args.command == "status":
        return show_status(ctx, as_json=args.json)
    if args.all:
        from agent.fleet import show_all  # noqa: PLC0415  # only this command needs it

        return show_all(ctx.out, ctx.environ, ctx.clock)
    return show_doctor(ctx)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-auth-sync",
        description="Keep this user's Claude Code login valid, backed up to "
        "their own Vault path.",
    )
    parser.add_argument("--debug", action="store_true", help="log every step")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="one sync pass (what the timer runs)")
    status = commands.add_parser("status", help="what the last runs found")
    status.add_argument("--json", action="store_true", help="print status.json")
    doctor = commands.add_parser("doctor", help="check this user's setup")
    doctor.add_argument(
        "--all", action="store_true", help="one line per user of this host (root)"
    )
    return parser


def show_status(ctx: Context, as_json: bool) -> int:
    """Print the last outcome for a person, or as JSON for a script."""
    status = read_status(ctx.state_dir)
    if status is None:
        print(
            f"No run has been recorded for {ctx.user} yet "
            f"({ctx.state_dir}/status.json is missing). Start one: "
            f"systemctl start claude-auth-sync@{ctx.user}.service",
            file=ctx.out,
        )
        return 1
    if as_json:
        print(json.dumps(status, indent=2), file=ctx.out)
        return 0

    for line in _status_lines(ctx, status):
        print(line, file=ctx.out)
    return 0


def _status_lines(ctx: Context, status: dict[str, Any]) -> list[str]:
    now = ctx.clock()
    reason = f" ({status['reason']})" if status.get("reason") else ""
    lines = [f"Last run: {status.get('time')} on {status.get('host')}: "
             f"{status.get('status')}{reason}"]  # fmt: skip
    if status.get("message"):
        lines.append(f"  {status['message']}")
    if status.get("action"):
        lines.append(f"  What to do: {status['action']}")

    for label, key in (
        ("Claude login (SSO) ends", "login_expires_at"),
        ("Vault token expires", "vault_token_expires_at"),
        ("Last success", "last_success"),
    ):
        if status.get(key):
            lines.append(f"{label}: {status[key]}{_days_from(now, status[key])}")
    next_run = _next_timer_run(ctx.user)
    if next_run:
        lines.append(f"Next run: {next_run}")

    lines.append("Recent log:")
    lines.extend(f"  {line}" for line in tail_log(ctx.state_dir, 5))
    return lines


def _days_from(now: float, stamp: str) -> str:
    try:
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return ""
    days = (moment.timestamp() - now) / 86400
    return f" (in {days:.0f} days)" if days >= 0 else f" ({-days:.0f} days ago)"


def _next_timer_run(user: str) -> str:
    """When systemd runs the user's timer next; empty where there is no systemd."""
    try:
        done = subprocess.run(
            ["systemctl", "show", "--value", "--property=NextElapseUSecRealtime",
             f"claude-auth-sync@{user}.timer"],
            capture_output=True, text=True, timeout=3, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def show_doctor(ctx: Context) -> int:
    from agent.doctor import diagnose  # noqa: PLC0415  # only this command needs it

    findings = diagnose(ctx)
    for finding in findings:
        mark = "ok  " if finding.ok else "FIX "
        print(f"{mark} {finding.check}: {finding.detail}", file=ctx.out)
        if finding.fix:
            print(f"     -> {finding.fix}", file=ctx.out)
    problems = sum(not f.ok for f in findings)
    print(
        f"{problems} problem(s) found." if problems else "Nothing to fix.", file=ctx.out
    )
    return 1 if problems else 0
