"""The log line, sync.log and status.json: the contract with the alert rules."""

from __future__ import annotations

import io
import json
import logging
import stat
from pathlib import Path

from agent.errors import ExitCode
from agent.report import (
    Event,
    LogfmtFormatter,
    Report,
    Status,
    format_line,
    logfmt_value,
    read_status,
)
from tests.support.logfmt import parse_logfmt

NOW = 1_796_000_000.0  # 2026-11-30T00:53:20Z, passed in rather than patched


def report(tmp_path: Path, now: float = NOW) -> tuple[Report, io.StringIO]:
    out = io.StringIO()
    return Report("alice", "ws1", tmp_path, lambda: now, out), out


def test_line_starts_with_status_user_host_reason() -> None:
    """The fields the rules select on come first, in a fixed order."""
    event = Event(Status.FAIL, "sso_required", "msg", "run this", exit_code=ExitCode(3))
    line = format_line(event, "alice", "ws1")
    assert line.startswith("status=FAIL user=alice host=ws1 reason=sso_required ")
    assert line.endswith('action="run this"')


def test_values_with_spaces_and_quotes_survive_logfmt() -> None:
    """A message with quotes, backslashes and '=' reads back exactly."""
    text = 'say "hi" to C:\\dir a=b'
    line = format_line(Event(Status.WARN, "x", text, "do = this"), "alice", "ws1")
    assert parse_logfmt(line)["msg"] == text
    assert parse_logfmt(line)["action"] == "do = this"


def test_newlines_cannot_forge_a_second_line() -> None:
    """A value with a newline stays on one line."""
    line = format_line(Event(Status.WARN, "x", "a\nstatus=OK"), "alice", "ws1")
    assert "\n" not in line
    assert parse_logfmt(line)["status"] == "WARN"


def test_ok_line_has_no_reason() -> None:
    """An OK line is short: status, user, host and facts."""
    line = format_line(Event(Status.OK, facts=(("backup", "written"),)), "alice", "ws1")
    assert line == "status=OK user=alice host=ws1 backup=written"


def test_empty_value_is_quoted() -> None:
    """An empty value is written as "" so the pair still parses."""
    assert logfmt_value("") == '""'


def test_emit_prints_and_appends_a_timestamped_line(tmp_path: Path) -> None:
    """Each event goes to stdout and, with time=, to sync.log at mode 0600."""
    rep, out = report(tmp_path)
    line = rep.emit(Event(Status.OK))
    assert out.getvalue() == line + "\n"
    log = tmp_path / "sync.log"
    assert log.read_text() == f"time=2026-11-30T00:53:20Z {line}\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_forbidden_secrets_are_redacted(tmp_path: Path) -> None:
    """A token the run knows about never reaches any output, even by mistake."""
    rep, out = report(tmp_path)
    rep.forbid("sk-ant-oat01-secret-value")
    rep.emit(Event(Status.FAIL, "x", "leaked sk-ant-oat01-secret-value here"))
    rep.write_status({})
    for text in (out.getvalue(), (tmp_path / "sync.log").read_text(),
                 (tmp_path / "status.json").read_text()):  # fmt: skip
        assert "sk-ant-oat01-secret-value" not in text
        assert "[redacted]" in text


def test_outcome_is_the_most_severe_event(tmp_path: Path) -> None:
    """OK followed by a login warning sums up as the warning, with exit 0."""
    rep, _ = report(tmp_path)
    rep.emit(Event(Status.OK))
    rep.emit(Event(Status.WARN, "login_expiring"))
    assert rep.outcome().reason == "login_expiring"
    assert rep.exit_code() == ExitCode.OK


def test_exit_code_keeps_a_warning_that_needs_action(tmp_path: Path) -> None:
    """A token that did not renew keeps its exit code even though the run was OK."""
    rep, _ = report(tmp_path)
    rep.emit(Event(Status.WARN, "token_not_renewed", exit_code=ExitCode.VAULT_TOKEN))
    rep.emit(Event(Status.OK))
    assert rep.exit_code() == ExitCode.VAULT_TOKEN


def test_status_json_keeps_the_last_success(tmp_path: Path) -> None:
    """A failing run keeps the time of the last success from the run before."""
    first, _ = report(tmp_path, NOW)
    first.emit(Event(Status.OK))
    first.write_status({})
    later, _ = report(tmp_path, NOW + 3600)
    later.emit(Event(Status.FAIL, "sso_required", exit_code=ExitCode.SSO_REQUIRED))
    later.write_status({"needs_login": True})

    status = read_status(tmp_path)
    assert status is not None
    assert (status["status"], status["reason"], status["exit_code"]) == (
        "FAIL", "sso_required", 3,
    )  # fmt: skip
    assert status["last_success"] == "2026-11-30T00:53:20Z"
    assert status["needs_login"] is True
    assert stat.S_IMODE((tmp_path / "status.json").stat().st_mode) == 0o600


def test_status_json_is_plain_json(tmp_path: Path) -> None:
    """status.json parses with any JSON reader, for the login notice."""
    rep, _ = report(tmp_path)
    rep.emit(Event(Status.OK))
    rep.write_status({})
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "OK"


def test_diagnostics_are_logfmt_too() -> None:
    """A warning with newlines and quotes is one logfmt line for the journal."""
    record = logging.LogRecord(
        "agent.run",
        logging.WARNING,
        __file__,
        1,
        'Vault said "no":\n\t* %s',
        ("x",),
        None,
    )
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    assert parse_logfmt(line) == {
        "level": "warning",
        "logger": "agent.run",
        "msg": 'Vault said "no":  * x',
    }
