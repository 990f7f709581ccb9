"""The probe's verdict from Claude's JSON answers, its environment, and its bounds.

The answers below are the shapes the real CLI (2.1.332) printed with
``--output-format json`` against a local Messages API stub.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ProbeError
from agent.probe import (
    FORBIDDEN_ENV,
    Verdict,
    classify,
    find_claude,
    parse_version,
    probe_env,
    run_probe,
)


def answer(is_error: bool, status: int | None, result: str) -> str:
    payload: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "api_error_status": status,
        "result": result,
        "terminal_reason": "api_error" if is_error else "completed",
    }
    return json.dumps(payload) + "\n"


@pytest.mark.parametrize(
    ("code", "stdout", "verdict"),
    [
        (0, answer(False, None, "AUTH_OK"), Verdict.VALID),
        (1, answer(True, 401, "Failed to authenticate. API Error: 401 Invalid bearer"),
         Verdict.REJECTED),
        (1, answer(True, 403, "API Error: 403 OAuth token revoked"), Verdict.REJECTED),
        (1, answer(True, None, "Not logged in · Please run /login"), Verdict.REJECTED),
        (1, answer(True, None, "Failed to authenticate: OAuth session expired and "
                               "could not be refreshed"), Verdict.REJECTED),
        (1, answer(True, 429, "API Error: Server is temporarily limiting requests"),
         Verdict.VALID),
        (0, answer(True, 429, "API Error: usage limit reached"), Verdict.VALID),
        (1, answer(True, 529, "API Error: 529 Overloaded"), Verdict.UNREACHABLE),
        (1, answer(True, 500, "API Error: 500 Internal server error"),
         Verdict.UNREACHABLE),
        (1, answer(True, None, "API Error: Connection error."), Verdict.UNREACHABLE),
        (1, answer(True, 400, "API Error: 400 invalid model"), Verdict.OTHER),
        (1, "Error: something crashed\n", Verdict.OTHER),
        (0, "", Verdict.OTHER),
    ],
)  # fmt: skip
def test_verdict_comes_from_the_json(code: int, stdout: str, verdict: Verdict) -> None:
    """Each answer the CLI gives maps to the verdict a person would expect."""
    assert classify(code, stdout).verdict is verdict


def test_exit_code_zero_with_an_auth_error_is_rejected() -> None:
    """The JSON decides, not the exit code."""
    assert classify(0, answer(True, 401, "API Error: 401")).verdict is Verdict.REJECTED


def test_rate_limit_is_marked() -> None:
    """A rate-limited answer is valid and says so."""
    assert classify(0, answer(True, 429, "limit")).rate_limited


def test_probe_env_drops_credentials_and_keeps_the_rest() -> None:
    """Credentials and provider switches never reach Claude; the rest passes."""
    environ = {name: "x" for name in FORBIDDEN_ENV}
    environ |= {
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "ANTHROPIC_BASE_URL": "http://gw",
        "HOME": "/h",
    }
    assert probe_env(environ) == {"ANTHROPIC_BASE_URL": "http://gw", "HOME": "/h"}


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_claude_bin_wins(tmp_path: Path) -> None:
    """CLAUDE_BIN is used when set, even with claude on PATH."""
    chosen = executable(tmp_path / "chosen", "")
    executable(tmp_path / "bin" / "claude", "")
    environ = {"CLAUDE_BIN": str(chosen), "PATH": str(tmp_path / "bin")}
    assert find_claude(environ, tmp_path) == chosen


def test_claude_on_path_comes_before_local_bin(tmp_path: Path) -> None:
    """Without CLAUDE_BIN, claude on PATH is used before ~/.local/bin."""
    on_path = executable(tmp_path / "bin" / "claude", "")
    executable(tmp_path / ".local" / "bin" / "claude", "")
    assert find_claude({"PATH": str(tmp_path / "bin")}, tmp_path) == on_path


def test_local_bin_is_the_last_resort(tmp_path: Path) -> None:
    """~/.local/bin/claude is found when nothing else is."""
    local = executable(tmp_path / ".local" / "bin" / "claude", "")
    assert find_claude({"PATH": str(tmp_path / "empty")}, tmp_path) == local


def test_missing_claude_says_where_it_looked(tmp_path: Path) -> None:
    """No CLI anywhere is a clear error naming the places tried."""
    with pytest.raises(ProbeError, match=r"\.local/bin/claude does not exist"):
        find_claude({"PATH": str(tmp_path)}, tmp_path)


def test_bad_claude_bin_is_refused(tmp_path: Path) -> None:
    """A CLAUDE_BIN that is not executable is reported, not silently replaced."""
    with pytest.raises(ProbeError, match="CLAUDE_BIN="):
        find_claude({"CLAUDE_BIN": str(tmp_path / "nope")}, tmp_path)


def test_a_hanging_probe_is_stopped_as_unreachable(tmp_path: Path) -> None:
    """A CLI that never answers is stopped at the timeout and counts as an outage."""
    claude = executable(tmp_path / "claude", "sleep 30 & sleep 30\n")
    started = time.monotonic()
    result = run_probe(claude, dict(os.environ), tmp_path, timeout=1)
    assert result.verdict is Verdict.UNREACHABLE
    assert time.monotonic() - started < 10


def test_probe_reads_the_answer_of_a_real_process(tmp_path: Path) -> None:
    """A CLI that prints a success answer gives a valid verdict."""
    claude = executable(
        tmp_path / "claude", f"echo '{answer(False, None, 'AUTH_OK')}'\n"
    )
    assert run_probe(claude, {}, tmp_path, timeout=10).verdict is Verdict.VALID


def test_version_is_parsed_from_the_cli_text() -> None:
    """``claude --version`` text gives a comparable version."""
    assert parse_version("2.1.332 (Claude Code)") == (2, 1, 332)
    assert parse_version("unknown") is None
