"""Reviewing roster changes: the stack's invariants and the plan of a change."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.roster import parse_roster
from agent.settings import Settings
from stacks.review import check_stack, plan_change, render_plan, synthesize
from tests.support.components import REPO

SETTINGS = Settings()
ROSTER = parse_roster(
    "users:\n"
    "  alice: {email: alice@corp.example}\n"
    "  bob: {email: bob@corp.example}\n"
    "  erin: {email: erin@corp.example, claude_auth: false}\n"
)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return synthesize(ROSTER, SETTINGS)


def tampered(document: dict[str, Any], user: str, **changes: Any) -> Any:
    """The document with one user's entry in the stack's local map changed."""
    changed = copy.deepcopy(document)
    changed["locals"]["users"][user].update(changes)
    return changed


def tampered_role(document: dict[str, Any], **changes: Any) -> Any:
    """The document with the per-user token role resource changed for everyone."""
    changed = copy.deepcopy(document)
    changed["resource"]["vault_token_auth_backend_role"]["user"].update(changes)
    return changed


def test_sound_stack_passes(document: dict[str, Any]) -> None:
    """The stack as synthesized keeps every user to their own path."""
    assert check_stack(ROSTER, SETTINGS, document) == []


def test_policy_reaching_another_users_path_is_caught(document: dict[str, Any]) -> None:
    """A grant on bob's data inside alice's policy is reported."""
    policy = document["locals"]["users"]["alice"]["policy"]
    bad = policy + '\npath "secret/data/workstation/claude-users/bob" {}\n'
    problems = check_stack(ROSTER, SETTINGS, tampered(document, "alice", policy=bad))
    assert problems == [
        "user 'alice': policy grants 'secret/data/workstation/claude-users/bob', "
        "outside their own path."
    ]


def test_glob_in_a_user_policy_is_caught(document: dict[str, Any]) -> None:
    """A wildcard path would reach every user's data."""
    bad = 'path "secret/data/workstation/claude-users/*" {}\n'
    problems = check_stack(ROSTER, SETTINGS, tampered(document, "bob", policy=bad))
    assert problems == [
        "user 'bob': policy path 'secret/data/workstation/claude-users/*' is a glob."
    ]


def test_role_granting_the_default_policy_is_caught(document: dict[str, Any]) -> None:
    """A role whose tokens also get `default` breaks the token's isolation."""
    changed = tampered_role(document, token_no_default_policy=False)
    assert (
        "must grant exactly 'workstation-claude-alice'"
        in (check_stack(ROSTER, SETTINGS, changed)[0])
    )


def test_missing_role_and_stray_policy_are_caught(document: dict[str, Any]) -> None:
    """Each user has exactly one role; nothing is declared for non-users."""
    changed = tampered(document, "bob", role_name="workstation-claude-ghost")
    assert check_stack(ROSTER, SETTINGS, changed) == [
        "user 'bob': expected one policy and one token role named "
        "'workstation-claude-bob', found 1 and 0.",
        "'workstation-claude-ghost' is declared but belongs to no roster user.",
    ]


def test_user_without_alert_rules_is_caught(document: dict[str, Any]) -> None:
    """A rules file that lost a user's rules fails the check."""
    changed = copy.deepcopy(document)
    rules_file = changed["resource"]["local_file"]["alert_rules"]
    content = rules_file["content"]
    rules_file["content"] = content.replace('user: "alice"', 'user: "x"')
    assert check_stack(ROSTER, SETTINGS, changed) == [
        "user 'alice' has claude_auth on but no alert rules."
    ]


CHANGED = parse_roster(
    "users:\n"
    "  alice: {email: alice@corp.example, claude_auth: false}\n"
    "  erin: {email: erin@corp.example}\n"
    "  frank: {email: frank@corp.example}\n"
)


@pytest.fixture(scope="module")
def plan(document: dict[str, Any]) -> Any:
    return plan_change(
        ROSTER, CHANGED, SETTINGS, "main", (document, synthesize(CHANGED, SETTINGS))
    )


def test_plan_lists_user_changes(plan: Any) -> None:
    """Added, removed, enabled and disabled users are each named."""
    assert plan.users == {
        "added": ["frank"],
        "removed": ["bob"],
        "enabled": ["erin"],
        "disabled": ["alice"],
        "email_changed": [],
    }


def test_plan_lists_vault_resources(plan: Any) -> None:
    """The new user's policy and role are created, the removed user's destroyed."""
    assert plan.resources == {
        "create": [
            'vault_policy.user["frank"]',
            'vault_token_auth_backend_role.user["frank"]',
        ],
        "change": [],
        "destroy": [
            'vault_policy.user["bob"]',
            'vault_token_auth_backend_role.user["bob"]',
        ],
    }


def test_plan_lists_alert_rules(plan: Any) -> None:
    """Disabling drops a user's rules; enabling and adding create them."""
    created = plan.alert_rules["create"]
    destroyed = plan.alert_rules["destroy"]
    assert {r.split()[1] for r in created} == {"erin", "frank"}
    assert {r.split()[1] for r in destroyed} == {"alice", "bob"}
    assert len(created) == len(destroyed) == 6


def test_plan_says_what_happens_to_a_removed_user(plan: Any) -> None:
    """Token stops, timer is disabled, data is kept: all three are stated."""
    text = render_plan(plan, "roster.yaml")
    assert "What happens to bob:" in text
    assert "token: stops working once the stack is deployed" in text
    assert "timer: disabled at the next provisioner run" in text
    assert "data:  kept for audit at secret/data/workstation/claude-users/bob" in text
    assert text.endswith(
        "Summary: 1 added, 1 removed, 1 enabled, 1 disabled; Vault: 2 to create, "
        "0 to change, 2 to destroy; alert rules: 6 to create, 0 to change, "
        "6 to destroy."
    )


MOVED = parse_roster(
    "users:\n"
    "  alice: {email: alice@corp.example, hosts: [ws1, ws2]}\n"
    "  bob: {email: bob@corp.example}\n"
    "  erin: {email: erin@corp.example, claude_auth: false, hosts: [ws9]}\n"
    "  frank: {email: frank@corp.example, hosts: [ws3]}\n"
)
ON_WS2 = parse_roster(
    "users:\n"
    "  alice: {email: alice@corp.example, hosts: [ws2, ws4]}\n"
    "  bob: {email: bob@corp.example}\n"
)


def test_plan_lists_host_changes_per_user(document: dict[str, Any]) -> None:
    """A user given hosts, and an added user's hosts, are shown with their effect."""
    plan = plan_change(
        ROSTER, MOVED, SETTINGS, "main", (document, synthesize(MOVED, SETTINGS))
    )
    text = render_plan(plan, "roster.yaml")

    assert plan.hosts == {
        "alice": {"before": [], "after": ["ws1", "ws2"]},
        "erin": {"before": [], "after": ["ws9"]},
    }
    assert "  ~ alice: every host -> ws1, ws2 (timer disabled on every other " in text
    assert "  + frank: added (on ws3)" in text


def test_plan_names_the_hosts_a_user_moves_between() -> None:
    """Moving between listed hosts names where the timer starts and stops."""
    document = synthesize(ON_WS2, SETTINGS)
    before = parse_roster(
        "users:\n"
        "  alice: {email: alice@corp.example, hosts: [ws1, ws2]}\n"
        "  bob: {email: bob@corp.example}\n"
    )
    plan = plan_change(before, ON_WS2, SETTINGS, "main", (document, document))

    assert (
        "  ~ alice: ws1, ws2 -> ws2, ws4 (timer enabled on ws4; timer disabled on "
        "ws1, at the next provisioner run)"
    ) in render_plan(plan, "roster.yaml").splitlines()


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e.x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e.x"}  # fmt: skip
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def review(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "stacks.review", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_plan_on_a_shallow_clone_after_fetching_the_base(tmp_path: Path) -> None:
    """A shallow clone says how to fetch BASE, and plans once it is fetched."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    (origin / "roster.yaml").write_text("users:\n  alice: {email: a@corp.example}\n")
    git(origin, "add", "roster.yaml")
    git(origin, "commit", "-qm", "first")
    base = git(origin, "rev-parse", "HEAD")
    with (origin / "roster.yaml").open("a") as roster:
        roster.write("  bob: {email: b@corp.example}\n")
    git(origin, "commit", "-qam", "add bob")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{origin}", str(clone))

    missing = review(clone, "plan", "--base", base)
    assert missing.returncode == 2
    assert f"git fetch --depth=1 origin {base}" in missing.stderr

    git(clone, "fetch", "-q", "--depth=1", "origin", base)
    done = review(clone, "plan", "--base", base, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["users"]["added"] == ["bob"]
