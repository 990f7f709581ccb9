"""The agent end to end with the real Claude Code CLI, a local API and OpenBao.

The real CLI is pointed by ``ANTHROPIC_BASE_URL`` at a local Messages API
stub that accepts or rejects bearer tokens as each test says; OpenBao holds
the stack's policies and roles, and the agent's token is minted through the
user's role. The agent runs as a real OS user, as its unit would run it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.agent_host import MCP_OAUTH, Workstation, lines, oauth
from tests.support.api_stub import ApiStub, api_stub
from tests.support.components import claude_binary, require

pytestmark = pytest.mark.slow

OTHER_KEYS: dict[str, Any] = {
    "mcpOAuth": MCP_OAUTH,
    "organizationUuid": "0d9f3c2e-0000-4000-8000-5a1e5a1e5a1e",
    "someFutureKey": [1, 2.5, None, True, {"nested": "kept"}],
}


@pytest.fixture
def api() -> Iterator[ApiStub]:
    with api_stub() as stub:
        yield stub


@pytest.fixture
def station(workstation_for: Callable[[str], Workstation], api: ApiStub) -> Workstation:
    """Alice with her scoped token, probing with the real CLI against the stub."""
    claude = require(
        "the Claude Code CLI", claude_binary(), "make node (npm ci in tests/node)"
    )
    alice = workstation_for("agent-alice")
    alice.mint_token()
    alice.env.update(CLAUDE_BIN=str(claude), ANTHROPIC_BASE_URL=api.base_url)
    return alice


def test_valid_login_is_ok_and_backed_up(station: Workstation, api: ApiStub) -> None:
    """A login the API accepts gives OK, and Vault then holds exactly that login."""
    login = oauth("valid")
    station.write_credentials(login, **OTHER_KEYS)
    api.accept(login["accessToken"])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "OK")
    assert station.stored() == {"claudeAiOauth": login}
    assert station.credentials() == {"claudeAiOauth": login, **OTHER_KEYS}


def test_blanked_login_is_recovered_from_vault(
    station: Workstation, api: ApiStub
) -> None:
    """A blanked local login is restored from Vault; every other key is kept."""
    good = oauth("good")
    station.store({"claudeAiOauth": good})
    blank = {**oauth("spent"), "accessToken": "", "refreshToken": "", "expiresAt": 0}
    station.write_credentials(blank, **OTHER_KEYS)
    api.accept(good["accessToken"])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "RECOVERED")
    assert station.credentials() == {"claudeAiOauth": good, **OTHER_KEYS}


def test_rejected_older_login_is_recovered_from_newer_copy(
    station: Workstation, api: ApiStub
) -> None:
    """A rejected login older than the Vault copy is replaced by that copy."""
    good = oauth("newer", expires_in_days=0.3)
    station.store({"claudeAiOauth": good})
    station.write_credentials(oauth("older", expires_in_days=0.1), **OTHER_KEYS)
    api.accept(good["accessToken"])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "RECOVERED")
    assert station.credentials() == {"claudeAiOauth": good, **OTHER_KEYS}
    assert api.inference_bearers()[-1] == good["accessToken"]


def test_both_rejected_is_sso_required(station: Workstation, api: ApiStub) -> None:
    """Local login and Vault copy both refused: a person must log in again."""
    station.store({"claudeAiOauth": oauth("revoked", expires_in_days=0.3)})
    station.write_credentials(oauth("older", expires_in_days=0.1), **OTHER_KEYS)

    done = station.run()

    assert done.returncode == 3
    [fail] = lines(done, "FAIL")
    assert "reason=sso_required" in fail
    assert "claude auth login --claudeai --sso --email alice@corp.example" in fail
    assert "systemctl start claude-auth-sync@agent-alice.service" in fail


def test_api_down_is_a_warning_without_restore(
    station: Workstation, api: ApiStub
) -> None:
    """With the API down the run warns, restores nothing and claims no SSO."""
    newer = oauth("newer", expires_in_days=0.3)
    station.store({"claudeAiOauth": newer})
    local = oauth("local", expires_in_days=0.1)
    station.write_credentials(local, **OTHER_KEYS)
    api.down()

    done = station.run(CLAUDE_AUTH_SYNC_PROBE_TIMEOUT="4")

    assert done.returncode == 6
    [warn] = lines(done, "WARN")
    assert "reason=claude_unreachable" in warn
    assert "sso_required" not in done.stdout
    assert station.credentials() == {"claudeAiOauth": local, **OTHER_KEYS}
    assert station.stored() == {"claudeAiOauth": newer}


def test_rate_limited_answer_counts_as_valid(
    station: Workstation, api: ApiStub
) -> None:
    """A 429 from the API proves the login was accepted: OK, backed up."""
    login = oauth("limited")
    station.write_credentials(login)
    api.rate_limit(login["accessToken"])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert "probe=rate_limited" in lines(done, "OK")[0]
    assert station.stored() == {"claudeAiOauth": login}
