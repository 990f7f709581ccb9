"""What the agent refuses, and how it acts when Vault or another run is in the way."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable

import pytest

from tests.support.agent_host import (
    LEAKS,
    MCP_OAUTH,
    LeakWatch,
    Workstation,
    lines,
    oauth,
)
from tests.support.openbao import free_port
from tests.support.vault_recorder import vault_recorder
from tests.support.vault_stack import mint_user_token


@pytest.fixture
def station(workstation_for: Callable[[str], Workstation]) -> Workstation:
    """Alice with her own token, a valid login, and a fake claude accepting it."""
    alice = workstation_for("agent-alice")
    alice.mint_token()
    login = oauth("alice")
    alice.write_credentials(login, mcpOAuth=MCP_OAUTH)
    alice.fake_claude(["api"], accepted=[login["accessToken"]])
    return alice


@pytest.mark.parametrize("owner", ["agent-bob", "root"])
def test_foreign_token_is_drift_and_reads_nothing(
    station: Workstation, owner: str
) -> None:
    """Another user's token, or the root token, fails for drift and reads no secret."""
    token = (
        station.vault.root_token
        if owner == "root"
        else mint_user_token(station.vault.client(), owner)
    )
    if owner != "root":  # the dev server's root token is the plain word "root"
        LEAKS.secret(token)
    station.write(station.token_path, token + "\n")

    with vault_recorder(station.vault.addr) as (addr, seen):
        done = station.run(VAULT_ADDR=addr)

    assert done.returncode == 5
    assert "reason=token_drift" in lines(done, "FAIL")[0]
    assert seen == [("GET", "/v1/auth/token/lookup-self")]


def test_revoked_token_asks_for_a_new_one(station: Workstation) -> None:
    """A revoked token fails with the provisioner command, not an SSO request."""
    station.vault.client().auth.token.revoke(station.token_path.read_text().strip())

    done = station.run()

    assert done.returncode == 5
    [fail] = lines(done, "FAIL")
    assert "reason=token_invalid" in fail
    assert "claude-auth-provision" in fail


def test_readable_token_file_is_refused(station: Workstation) -> None:
    """A token file others can read is refused with the chmod that fixes it."""
    station.token_path.chmod(0o644)

    done = station.run()

    assert done.returncode == 5
    assert f"chmod 600 {station.token_path}" in lines(done, "FAIL")[0]


def test_symlinked_credentials_are_refused(station: Workstation) -> None:
    """A credentials file that is a symlink is refused and left alone."""
    real = station.credentials_path.with_name("real.json")
    station.credentials_path.rename(real)
    station.credentials_path.symlink_to(real)

    done = station.run()

    assert done.returncode == 7
    assert "reason=credentials_file" in lines(done, "FAIL")[0]
    assert station.credentials_path.is_symlink()


def test_second_run_while_one_holds_the_lock_skips(station: Workstation) -> None:
    """A run that finds the lock held by another process logs SKIP and exits 0."""
    station.run()
    with open(station.state_dir / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = station.run()

    assert done.returncode == 0
    assert lines(done, "SKIP") and len(done.stdout.splitlines()) == 1


def test_vault_outage_warns_probes_and_claims_no_sso(station: Workstation) -> None:
    """With Vault down the login is still probed; the run warns and restores nothing."""
    calls = station.home / "fake-claude" / "calls.jsonl"
    before = station.credentials()
    station.fake_claude(["api"], accepted=[])

    done = station.run(VAULT_ADDR=f"http://127.0.0.1:{free_port()}")

    assert done.returncode == 4
    [warn] = lines(done, "WARN")
    assert "reason=vault_unavailable login=rejected" in warn
    assert "sso_required" not in done.stdout
    assert any('"-p"' in call for call in calls.read_text().splitlines())
    assert station.credentials() == before


def test_missing_vault_addr_is_a_config_error(station: Workstation) -> None:
    """Without VAULT_ADDR the run fails at once with the setting to add."""
    env = {k: v for k, v in station.env.items() if k != "VAULT_ADDR"}
    station.env = env

    done = station.run()

    assert done.returncode == 2
    assert "VAULT_ADDR" in lines(done, "FAIL")[0]


def test_status_tells_the_person_what_to_do(station: Workstation) -> None:
    """After an SSO failure, status shows the login command; --json has it too."""
    station.fake_claude(["api"], accepted=[])
    station.run()

    shown = station.run("status")
    as_json = json.loads(station.run("status", "--json").stdout)

    assert (
        "claude auth login --claudeai --sso --email alice@corp.example" in shown.stdout
    )
    assert as_json["reason"] == "sso_required"
    assert as_json["needs_login"] is True


def test_doctor_finds_a_credential_in_a_start_up_file(station: Workstation) -> None:
    """doctor names the file and line that sets ANTHROPIC_API_KEY, not its value."""
    station.write(
        station.home / ".bashrc", "alias ll='ls -l'\nexport ANTHROPIC_API_KEY=sk-x\n"
    )

    done = station.run("doctor")

    assert done.returncode == 1
    assert f"{station.home}/.bashrc:2 sets ANTHROPIC_API_KEY" in done.stdout
    assert "sk-x" not in done.stdout


def test_doctor_passes_a_healthy_setup(station: Workstation) -> None:
    """doctor has nothing to say about a working setup."""
    done = station.run("doctor")
    assert done.returncode == 0, done.stdout
    assert done.stdout.rstrip().endswith("Nothing to fix.")


def test_leak_watch_finds_a_planted_token() -> None:
    """The suite's leak check would notice a token in any output."""
    watch = LeakWatch()
    watch.secret("hvs.planted-secret-token")
    watch.seen("stdout", "status=FAIL token=hvs.planted-secret-token")
    assert watch.leaks() == ["stdout: hvs.planted-secr..."]
