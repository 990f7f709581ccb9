"""The Loki rule group rendered from the roster."""

from __future__ import annotations

import re
from typing import Any

import yaml

from agent.roster import parse_roster
from stacks.alerts import AlertSettings, render_rules_yaml, rule_group

ROSTER = parse_roster(
    "users:\n"
    "  alice:\n    email: alice@corp.example\n"
    "  bob:\n    email: bob@corp.example\n"
    "  erin:\n    email: erin@corp.example\n    claude_auth: false\n"
)
DURATION = re.compile(r"^\d+[smhdw]$")


def rules_of(text: str, settings: AlertSettings | None = None) -> list[dict[str, Any]]:
    group = rule_group(parse_roster(text), settings or AlertSettings())
    rules: list[dict[str, Any]] = group["groups"][0]["rules"]
    return rules


def by_user(rules: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        found.setdefault(rule["labels"]["user"], []).append(rule)
    return found


def test_rules_file_is_loki_ruler_yaml() -> None:
    """The file has one group; every rule has the fields a Loki ruler reads."""
    document = yaml.safe_load(render_rules_yaml(ROSTER, AlertSettings()))
    assert document == rule_group(ROSTER, AlertSettings())
    assert list(document) == ["groups"]
    (group,) = document["groups"]
    assert group["name"] == "claude-auth-sync"
    assert DURATION.match(group["interval"])
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert DURATION.match(rule["for"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert all(isinstance(v, str) for v in rule["labels"].values())


def test_each_enabled_user_gets_three_rules_and_disabled_none() -> None:
    """claude_auth false stops alerting for that user, who has no timer."""
    users = by_user(rule_group(ROSTER, AlertSettings())["groups"][0]["rules"])
    assert sorted(users) == ["alice", "bob"]
    assert [r["alert"] for r in users["alice"]] == [
        "WorkstationClaudeAuthInvalid",
        "WorkstationClaudeAuthStale",
        "WorkstationClaudeLoginExpiring",
    ]


def test_windows_span_the_timer_period() -> None:
    """A failure window shorter than the period would flap at every run."""
    settings = AlertSettings(timer_period_hours=6)
    alice = by_user(rules_of("users:\n  alice: {email: a@corp.example}\n", settings))
    invalid, stale, expiring = alice["alice"]
    assert "[7h]" in invalid["expr"] and "[7h]" in expiring["expr"]
    assert "[13h]" in stale["expr"]


def test_windows_follow_the_timer_setting() -> None:
    """A site that runs the timer every 12 h gets windows to match."""
    settings = AlertSettings(timer_period_hours=12)
    (invalid, stale, _) = rules_of("users:\n  a: {email: a@corp.example}\n", settings)
    assert "[13h]" in invalid["expr"]
    assert "[25h]" in stale["expr"]


def test_rules_select_the_identifier_and_the_user() -> None:
    """Each expression reads only claude-auth-sync lines of its own user."""
    for rule in rules_of("users:\n  alice: {email: a@corp.example}\n"):
        assert '{identifier="claude-auth-sync"} | logfmt' in rule["expr"]
        assert '| user="alice" |' in rule["expr"]


def test_invalid_fires_on_the_latest_verdict_being_fail() -> None:
    """The rule reads the last verdict, so a later OK resolves it at once."""
    (invalid, _, _) = rules_of("users:\n  alice: {email: a@corp.example}\n")
    assert 'status=~"OK|RECOVERED|FAIL"' in invalid["expr"]
    assert "last_over_time(" in invalid["expr"]
    assert 'eq .status "FAIL"' in invalid["expr"]


def test_descriptions_give_the_exact_commands() -> None:
    """The person's own login command, with their address, is in the alert."""
    invalid, stale, expiring = rules_of("users:\n  alice: {email: al@corp.example}\n")
    login = "claude auth login --claudeai --sso --email al@corp.example"
    assert login in invalid["annotations"]["description"]
    assert login in expiring["annotations"]["description"]
    assert (
        "systemctl start claude-auth-sync@alice.service"
        in (invalid["annotations"]["description"])
    )
    assert (
        "systemctl status claude-auth-sync@alice.service"
        in (stale["annotations"]["description"])
    )


def test_runbook_link_is_a_setting() -> None:
    """Operators point the links at their own copy of the runbook."""
    settings = AlertSettings.from_env(
        {"CLAUDE_AUTH_SYNC_RUNBOOK_URL": "https://wiki.corp.example/claude"}
    )
    (invalid, _, _) = rules_of("users:\n  a: {email: a@corp.example}\n", settings)
    assert invalid["annotations"]["runbook_url"] == (
        "https://wiki.corp.example/claude#workstationclaudeauthinvalid"
    )


BASE = "users:\n  alice: {email: a@corp.example}\n  bob: {email: b@corp.example}\n"


def test_adding_a_user_adds_exactly_their_rules() -> None:
    """A new roster entry leaves every other user's rules as they were."""
    before = by_user(rules_of(BASE))
    after = by_user(rules_of(BASE + "  carol: {email: c@corp.example}\n"))
    assert {k: v for k, v in after.items() if k != "carol"} == before
    assert len(after["carol"]) == 3


def test_disabling_a_user_removes_exactly_their_rules() -> None:
    """claude_auth false drops that user's rules and no one else's."""
    before = by_user(rules_of(BASE))
    after = by_user(rules_of(BASE.replace("b@corp.example}", "b@corp.example, "
                                          "claude_auth: false}")))  # fmt: skip
    assert after == {"alice": before["alice"]}


def test_removing_a_user_removes_exactly_their_rules() -> None:
    """A departed user's rules go; the others stay identical."""
    before = by_user(rules_of(BASE))
    after = by_user(rules_of("users:\n  alice: {email: a@corp.example}\n"))
    assert after == {"alice": before["alice"]}
