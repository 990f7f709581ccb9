"""The agent against OpenBao with a fake ``claude`` for what the real one can't do.

The real CLI's OAuth refresh endpoint is fixed, so token rotation, a failed
refresh that blanks the file, and Claude rewriting the file during a restore
are imitated by ``tests/support/fake_claude.py``, in the real CLI's JSON.
"""

from __future__ import annotations

import json
from typing import Any

from agent.probe import FORBIDDEN_ENV, PROMPT
from tests.support.agent_host import (
    DAY_MS,
    MCP_OAUTH,
    Workstation,
    lines,
    now_ms,
    oauth,
)


def rotated(login: dict[str, Any], tag: str) -> dict[str, Any]:
    """The fields a refresh changes: both tokens and the access deadline."""
    fresh = oauth(tag, expires_in_days=0.4)
    return {key: fresh[key] for key in ("accessToken", "refreshToken", "expiresAt")}


def test_rotation_during_probe_backs_up_rotated_tokens(station: Workstation) -> None:
    """When Claude rotates both tokens while probing, Vault gets the rotated ones."""
    login = oauth("before")
    new = rotated(login, "after")
    station.write_credentials(login, mcpOAuth=MCP_OAUTH)
    station.fake_claude(["rotate"], accepted=[new["accessToken"]], rotate_to=new)

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "OK")
    assert station.stored() == {"claudeAiOauth": {**login, **new}}
    assert station.credentials()["mcpOAuth"] == MCP_OAUTH


def test_failed_refresh_that_blanks_the_file_is_restored(station: Workstation) -> None:
    """A refresh that blanks the file is repaired from the Vault copy."""
    good = oauth("good", expires_in_days=0.05)
    station.store({"claudeAiOauth": good})
    station.write_credentials(oauth("spent", expires_in_days=0.2), mcpOAuth=MCP_OAUTH)
    station.fake_claude(["fail_refresh", "api"], accepted=[good["accessToken"]])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "RECOVERED")
    assert station.credentials() == {"claudeAiOauth": good, "mcpOAuth": MCP_OAUTH}


def test_rejected_login_newer_than_vault_is_not_replaced(station: Workstation) -> None:
    """An older Vault copy is never replayed over a newer local login."""
    older = oauth("older", expires_in_days=0.1)
    station.store({"claudeAiOauth": older})
    local = oauth("newer", expires_in_days=0.3)
    station.write_credentials(local, mcpOAuth=MCP_OAUTH)
    station.fake_claude(["api"], accepted=[older["accessToken"]])

    done = station.run()

    assert done.returncode == 3
    assert "reason=sso_required" in lines(done, "FAIL")[0]
    assert station.credentials() == {"claudeAiOauth": local, "mcpOAuth": MCP_OAUTH}


def test_rate_limited_answer_is_valid(station: Workstation) -> None:
    """A rate-limited answer (exit 0, is_error true) still counts as a valid login."""
    login = oauth("limited")
    station.write_credentials(login)
    station.fake_claude(["rate_limited"])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert "probe=rate_limited" in lines(done, "OK")[0]
    assert station.stored() == {"claudeAiOauth": login}


def test_claude_rewriting_the_file_during_a_restore_wins(station: Workstation) -> None:
    """A refresh by Claude during the merge is kept and backed up, not overwritten."""
    vault_copy = oauth("vault", expires_in_days=0.3)
    station.store({"claudeAiOauth": vault_copy})
    local = oauth("local", expires_in_days=0.1)
    claude_wrote = rotated(local, "claude")
    station.write_credentials(local, mcpOAuth=MCP_OAUTH)
    station.fake_claude(
        ["refresh_during_merge", "api"],
        accepted=[claude_wrote["accessToken"]],
        refresh_to=claude_wrote,
    )

    done = station.run(CLAUDE_AUTH_SYNC_TEST_MERGE_DELAY="1")

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "OK") and not lines(done, "RECOVERED")
    expected = {**local, **claude_wrote}
    assert station.credentials() == {"claudeAiOauth": expected, "mcpOAuth": MCP_OAUTH}
    assert station.stored() == {"claudeAiOauth": expected}


def test_backup_keeps_other_keys_stored_at_the_path(station: Workstation) -> None:
    """Keys that other tools keep at the user's path survive a backup."""
    station.store({"claudeAiOauth": oauth("old"), "otherTool": {"note": "kept"}})
    login = oauth("current", expires_in_days=0.4)
    station.write_credentials(login)
    station.fake_claude(["api"], accepted=[login["accessToken"]])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert station.stored() == {"claudeAiOauth": login, "otherTool": {"note": "kept"}}


def test_unchanged_login_writes_no_new_version(station: Workstation) -> None:
    """A second run with the same login adds no version to the KV history."""
    login = oauth("steady")
    station.write_credentials(login)
    station.fake_claude(["api"], accepted=[login["accessToken"]])
    station.run()

    done = station.run()

    assert "backup=unchanged" in lines(done, "OK")[0]
    metadata = station.vault.client().secrets.kv.v2.read_secret_metadata(
        path=f"workstation/claude-users/{station.user}"
    )["data"]
    assert metadata["current_version"] == 1
    assert metadata["custom_metadata"]["host"]
    assert login["refreshToken"] not in json.dumps(metadata)


def test_login_near_its_deadline_warns_with_the_login_command(
    station: Workstation,
) -> None:
    """A login within days of its hard deadline gives a login_expiring warning."""
    login = {**oauth("ending"), "refreshTokenExpiresAt": now_ms() + int(1.5 * DAY_MS)}
    station.write_credentials(login)
    station.fake_claude(["api"], accepted=[login["accessToken"]])

    done = station.run()

    assert done.returncode == 0
    [warn] = lines(done, "WARN")
    assert "reason=login_expiring days_left=1 " in warn
    assert "--email alice@corp.example" in warn


def test_probe_gets_the_exact_flags_and_no_credentials(station: Workstation) -> None:
    """The probe runs with the minimal flags and none of the forbidden variables."""
    login = oauth("env")
    station.write_credentials(login)
    calls = station.fake_claude(["api"], accepted=[login["accessToken"]])
    poison = {name: f"poison-{name.lower()}-0123456789" for name in FORBIDDEN_ENV}

    station.run(ANTHROPIC_BASE_URL="http://127.0.0.1:9", **poison)

    probes = [json.loads(line) for line in calls.read_text().splitlines()]
    probe = next(call for call in probes if call["argv"][:1] == ["-p"])
    assert probe["argv"] == [
        "-p", PROMPT, "--model", "haiku", "--max-turns", "1",
        "--no-session-persistence", "--tools", "", "--disable-slash-commands",
        "--setting-sources", "", "--output-format", "json",
    ]  # fmt: skip
    assert "ANTHROPIC_BASE_URL" in probe["env"]
    assert not set(FORBIDDEN_ENV) & {name for call in probes for name in call["env"]}


def test_login_without_a_deadline_still_records_the_audit_facts(
    station: Workstation,
) -> None:
    """A login with no refreshTokenExpiresAt backs up and records what it has."""
    login = oauth("no-deadline")
    del login["refreshTokenExpiresAt"]
    station.write_credentials(login)
    station.fake_claude(["api"], accepted=[login["accessToken"]])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    facts = station.vault.client().secrets.kv.v2.read_secret_metadata(
        path=f"workstation/claude-users/{station.user}"
    )["data"]["custom_metadata"]
    assert "refresh_token_expires_at" not in facts
    assert facts["expires_at"] and facts["last_verified"]
