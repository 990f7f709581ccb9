"""The agent's log lines carry what the alert rules select on.

Each scenario runs the real agent (as its own OS user, against OpenBao, with
the fake ``claude`` for speed) and reads its stdout lines as Loki's ``| logfmt``
would; then the rules rendered for that user are applied to them, so each
test states which alert a line feeds.
"""

from __future__ import annotations

from typing import Any

from agent.report import Status
from agent.roster import User
from stacks.alerts import AlertSettings, user_rules
from tests.support.agent_host import MCP_OAUTH, Workstation, oauth
from tests.support.logfmt import label_filters, parse_logfmt, selects


def rules_for(station: Workstation) -> dict[str, str]:
    """The user's three rule expressions, by alert name."""
    user = User(station.user, f"{station.user}@corp.example")
    rules = {r["alert"]: r["expr"] for r in user_rules(user, AlertSettings())}
    # Without filters every line would be "selected": the check would be empty.
    assert all(len(label_filters(expr)) == 2 for expr in rules.values())
    return rules


def fields_of(stdout: str) -> list[dict[str, str]]:
    """Every stdout line, parsed strictly; a malformed line fails the test."""
    return [parse_logfmt(line) for line in stdout.splitlines() if line.strip()]


def check_common(station: Workstation, lines: list[dict[str, str]]) -> None:
    """What every line must carry: a known status, the user, the host."""
    assert lines
    for fields in lines:
        assert fields["status"] in {s.value for s in Status}
        assert fields["user"] == station.user
        assert fields["host"]
        if fields["status"] not in ("OK", "RECOVERED"):
            assert fields["reason"]


def run(station: Workstation, login: dict[str, Any], **plan: Any) -> list[Any]:
    station.write_credentials(login, mcpOAuth=MCP_OAUTH)
    station.fake_claude(plan.pop("modes", ["api"]), **plan)
    done = station.run()
    lines = fields_of(done.stdout)
    check_common(station, lines)
    return lines


def selected(expr: str, lines: list[dict[str, str]]) -> list[str]:
    return [f["status"] for f in lines if selects(expr, f)]


def test_ok_line_feeds_the_verdict_and_staleness_rules(station: Workstation) -> None:
    """OK counts as a success for Stale and as the latest verdict for Invalid."""
    login = oauth("ok")
    lines = run(station, login, accepted=[login["accessToken"]])
    rules = rules_for(station)
    assert [f["status"] for f in lines] == ["OK"]
    assert selected(rules["WorkstationClaudeAuthInvalid"], lines) == ["OK"]
    assert selected(rules["WorkstationClaudeAuthStale"], lines) == ["OK"]


def test_expiring_login_line_feeds_the_expiring_rule(station: Workstation) -> None:
    """The login_expiring WARN follows the OK and is the one Expiring keys on."""
    login = oauth("soon", login_days=1)
    lines = run(station, login, accepted=[login["accessToken"]])
    expiring = rules_for(station)["WorkstationClaudeLoginExpiring"]
    assert [(f["status"], f.get("reason")) for f in lines] == [
        ("OK", None),
        ("WARN", "login_expiring"),
    ]
    assert selected(expiring, lines) == ["OK", "WARN"]
    assert lines[-1]["days_left"] == "0"


def test_sso_required_fail_feeds_the_invalid_rule(station: Workstation) -> None:
    """A FAIL sso_required is the latest verdict the Invalid rule sees."""
    lines = run(station, oauth("rejected"), accepted=[])
    invalid = rules_for(station)["WorkstationClaudeAuthInvalid"]
    fail = [f for f in lines if f["status"] == "FAIL"]
    assert [f["reason"] for f in fail] == ["sso_required"]
    assert selected(invalid, lines)[-1] == "FAIL"
    assert "claude auth login --claudeai --sso --email" in fail[0]["action"]


def test_outage_warning_is_no_verdict(station: Workstation) -> None:
    """An unreachable API is a WARN that neither fires nor resolves Invalid."""
    station.env["CLAUDE_AUTH_SYNC_PROBE_TIMEOUT"] = "1"
    lines = run(station, oauth("hang"), modes=["hang"], accepted=[])
    rules = rules_for(station)
    assert [f["status"] for f in lines] == ["WARN"]
    assert selected(rules["WorkstationClaudeAuthInvalid"], lines) == []
    assert selected(rules["WorkstationClaudeAuthStale"], lines) == []
