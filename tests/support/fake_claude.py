#!/usr/bin/python3
"""A stand-in ``claude`` for what the real CLI cannot do on these machines.

The real CLI's OAuth refresh endpoint is fixed, so rotation, a failed
refresh, and Claude rewriting its file mid-restore cannot be provoked with it.
This script imitates those behaviours and answers in the real CLI's JSON
shapes (``--output-format json``): ``is_error``, ``api_error_status``,
``result``. It writes the credentials file the way Claude does (temporary
file, rename, mode 0600, other keys kept).

It reads its plan from the JSON file named by ``FAKE_CLAUDE_PLAN``:

- ``modes``: one mode per invocation, the last repeating; see ``MODES``;
- ``accepted``: access tokens the "API" accepts;
- ``rotate_to`` / ``refresh_to``: the ``claudeAiOauth`` fields a refresh writes;
- ``calls``: a file where each invocation appends its arguments and the
  names (never the values) of its environment variables;
- ``delay``: seconds each probe takes before it answers (a slow API).

Standard library only, and run by the system Python, so any OS user can run it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

VERSION = "2.1.332 (Claude Code)"
MODES = (
    "api", "rotate", "fail_refresh", "rate_limited", "refresh_during_merge", "hang",
)  # fmt: skip


def _credentials_path() -> Path:
    base = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(
        os.environ["HOME"], ".claude"
    )
    return Path(base) / ".credentials.json"


def _answer(result: str, is_error: bool, status: int | None, code: int) -> int:
    """Print the result object the real CLI prints, and exit as it does."""
    payload = {
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "api_error_status": status,
        "duration_ms": 5,
        "num_turns": 1,
        "result": result,
        "session_id": "00000000-0000-4000-8000-000000000000",
        "total_cost_usd": 0,
        "terminal_reason": "api_error" if is_error else "completed",
    }
    print(json.dumps(payload))
    return code


def _read() -> dict[str, Any] | None:
    try:
        data = json.loads(_credentials_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(data: dict[str, Any]) -> None:
    """Claude's own way: a temporary file beside the target, then rename."""
    path = _credentials_path()
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _refreshed(data: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    merged = dict(data)
    merged["claudeAiOauth"] = {**data.get("claudeAiOauth", {}), **fields}
    return merged


def _login(data: dict[str, Any] | None) -> dict[str, Any] | None:
    oauth = (data or {}).get("claudeAiOauth")
    if not isinstance(oauth, dict):
        return None
    if not oauth.get("accessToken") or not oauth.get("refreshToken"):
        return None
    return oauth


def _api(plan: dict[str, Any]) -> int:
    """The inference against the plan's idea of the API, as the real CLI does it."""
    oauth = _login(_read())
    if oauth is None:
        return _answer("Not logged in · Please run /login", True, None, 1)
    if oauth["accessToken"] in plan.get("accepted", []):
        return _answer("AUTH_OK", False, None, 0)
    return _answer(
        "Failed to authenticate. API Error: 401 Invalid bearer token", True, 401, 1
    )


def _rewrite_when_merging(fields: dict[str, Any]) -> None:
    """In a child: wait until a restore has its temporary file, then refresh.

    The agent under test is slowed between writing its temporary file and
    renaming it, so this rewrite lands inside that window, as a real refresh
    by a concurrent Claude session could.
    """
    if os.fork() != 0:
        return
    os.setsid()
    # Let go of the agent's pipes, or it would wait for this child's output.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    folder = _credentials_path().parent
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(p.name.endswith(".tmp") for p in folder.glob(".credentials.json.*")):
            _write(_refreshed(_read() or {}, fields))
            break
        time.sleep(0.01)
    os._exit(0)


def _next_mode(plan: dict[str, Any], plan_path: Path) -> str:
    counter = plan_path.with_suffix(".count")
    try:
        calls = int(counter.read_text())
    except (OSError, ValueError):
        calls = 0
    counter.write_text(str(calls + 1))
    modes = plan.get("modes") or ["api"]
    return str(modes[min(calls, len(modes) - 1)])


def main(argv: list[str]) -> int:
    plan_path = Path(os.environ["FAKE_CLAUDE_PLAN"])
    plan = json.loads(plan_path.read_text())
    if plan.get("calls"):
        with open(plan["calls"], "a") as log:
            log.write(json.dumps({"argv": argv, "env": sorted(os.environ)}) + "\n")
    if argv[:1] == ["--version"]:
        print(VERSION)
        return 0

    mode = _next_mode(plan, plan_path)
    time.sleep(float(plan.get("delay", 0)))
    if mode == "rotate":
        data = _read() or {}
        _write(_refreshed(data, plan["rotate_to"]))
        return _api(plan)
    if mode == "fail_refresh":
        blank = {"accessToken": "", "refreshToken": "", "expiresAt": 0}
        _write(_refreshed(_read() or {}, blank))
        return _answer(
            "Failed to authenticate: OAuth session expired and could not be refreshed",
            True, None, 1,
        )  # fmt: skip
    if mode == "rate_limited":
        return _answer(
            "API Error: Request rejected (429) · usage limit reached", True, 429, 0
        )
    if mode == "refresh_during_merge":
        _rewrite_when_merging(plan["refresh_to"])
        return _answer(
            "Failed to authenticate. API Error: 401 Invalid bearer token", True, 401, 1
        )
    if mode == "hang":
        time.sleep(600)
    return _api(plan)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
