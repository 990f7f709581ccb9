"""What the agent sends to Vault, and what it makes of Vault's answers.

A local stub records each request and answers as Vault does, including the
answers of a Vault in trouble; the same calls run against a real OpenBao in
test_vault.py and the integration tests.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.errors import (
    BackupConflict,
    ConfigError,
    TokenInvalid,
    VaultError,
    VaultUnavailable,
)
from agent.settings import Settings
from agent.vault import UserVault, make_transport
from agent.vault_http import VaultHTTPError, VaultNoAnswer, VaultTransport
from tests.support.components import REPO
from tests.support.vault_stub import VaultStub, vault_stub

TOKEN = "hvs.scoped-token-for-tests"
LOGIN = {"accessToken": "a", "refreshToken": "r", "expiresAt": 1_900_000_000_000}
DATA_PATH = "/v1/secret/data/workstation/claude-users/alice"


@pytest.fixture
def stub() -> Iterator[VaultStub]:
    with vault_stub() as server:
        yield server


def transport(stub: VaultStub, **environ: str) -> VaultTransport:
    return make_transport(Settings(vault_addr=stub.addr), TOKEN, environ)


def user_vault(stub: VaultStub) -> UserVault:
    return UserVault(transport(stub), Settings(vault_addr=stub.addr), "alice")


def stored(version: int, oauth: dict[str, object]) -> dict[str, object]:
    """A KV v2 read answer holding ``oauth`` at ``version``."""
    return {
        "data": {"data": {"claudeAiOauth": oauth}, "metadata": {"version": version}}
    }


# -- the outgoing request ------------------------------------------------------


def test_token_is_the_one_passed_in(
    stub: VaultStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VAULT_TOKEN in the environment is never sent; the scoped token is."""
    monkeypatch.setenv("VAULT_TOKEN", "admin-token")
    transport(stub, VAULT_TOKEN="admin-token").request("GET", "sys/health")
    assert stub.seen[0].headers["x-vault-token"] == TOKEN


def test_every_request_is_marked_as_a_vault_request(stub: VaultStub) -> None:
    """X-Vault-Request lets a Vault that demands it accept the call."""
    transport(stub).request("GET", "sys/health")
    assert stub.seen[0].headers["x-vault-request"] == "true"


def test_namespace_is_sent_from_vault_namespace(stub: VaultStub) -> None:
    """VAULT_NAMESPACE becomes the X-Vault-Namespace header of every call."""
    transport(stub, VAULT_NAMESPACE="team-a/").request("GET", "sys/health")
    assert stub.seen[0].headers["x-vault-namespace"] == "team-a"


def test_no_namespace_header_without_vault_namespace(stub: VaultStub) -> None:
    """Without VAULT_NAMESPACE the root namespace is used, by saying nothing."""
    transport(stub).request("GET", "sys/health")
    assert "x-vault-namespace" not in stub.seen[0].headers


def test_body_is_sent_as_json(stub: VaultStub) -> None:
    """A write sends its body as JSON under /v1/."""
    transport(stub).request("POST", "secret/data/x", {"data": {"k": "v"}})
    seen = stub.seen[0]
    assert (seen.method, seen.path, seen.body) == (
        "POST",
        "/v1/secret/data/x",
        {"data": {"k": "v"}},
    )
    assert seen.headers["content-type"] == "application/json"


def test_one_connection_serves_a_whole_run(stub: VaultStub) -> None:
    """Calls reuse the kept-alive connection instead of a new handshake each."""
    vault = transport(stub)
    for _ in range(3):
        vault.request("GET", "sys/health")
    assert len({seen.client for seen in stub.seen}) == 1


def test_backup_sends_check_and_set(stub: VaultStub) -> None:
    """A backup names the version it read, so a newer write is never overwritten."""
    stub.answer(200, stored(4, {**LOGIN, "accessToken": "old"}))
    stub.answer(200, {"data": {"version": 5}})
    user_vault(stub).store(LOGIN)
    assert stub.seen[1].body["options"] == {"cas": 4}


# -- the answers ---------------------------------------------------------------


def test_answer_is_decoded(stub: VaultStub) -> None:
    """Vault's JSON answer comes back as a dict."""
    stub.answer(200, {"data": {"ttl": 5}})
    assert transport(stub).request("GET", "x") == {"data": {"ttl": 5}}


def test_no_content_is_none(stub: VaultStub) -> None:
    """A 204 (a metadata write) has no answer to decode."""
    stub.answer(204)
    assert transport(stub).request("POST", "x", {}) is None


def test_error_status_carries_vaults_words(stub: VaultStub) -> None:
    """An error status keeps the status and Vault's own reasons."""
    stub.answer(400, {"errors": ["missing data"]})
    with pytest.raises(VaultHTTPError) as caught:
        transport(stub).request("POST", "x", {})
    assert (caught.value.status, caught.value.errors) == (400, ["missing data"])


def test_plain_text_error_keeps_its_first_line(stub: VaultStub) -> None:
    """A plain-text refusal (http:// to an https:// listener) keeps its reason."""
    stub.answer(400, b"Client sent an HTTP request to an HTTPS server.\n")
    with pytest.raises(VaultHTTPError, match="400 \\(Client sent an HTTP request"):
        transport(stub).request("GET", "x")


def test_error_text_never_holds_the_token(stub: VaultStub) -> None:
    """An error names the address and path; never the token it was sent with."""
    stub.answer(400, {"errors": ["bad request"]})
    with pytest.raises(VaultHTTPError) as caught:
        transport(stub).request("POST", "auth/token/renew-self", {})
    assert TOKEN not in f"{caught.value.message} {caught.value.action}"
    assert "auth/token/renew-self" in caught.value.message


def test_answer_that_is_not_json_is_no_answer(stub: VaultStub) -> None:
    """A proxy's HTML page instead of Vault's JSON is not taken for an answer."""
    stub.answer(200, b"<html>captive portal</html>")
    with pytest.raises(VaultNoAnswer, match="not Vault's JSON"):
        transport(stub).request("GET", "x")


def test_slow_vault_times_out(stub: VaultStub) -> None:
    """A Vault that does not answer in time is an outage, not a hang."""
    stub.delay = 1.0
    slow = VaultTransport(stub.addr, TOKEN, timeout=0.2)
    with pytest.raises(VaultNoAnswer, match="timed out"):
        slow.request("GET", "x")


def test_standby_redirect_is_followed_with_the_token(stub: VaultStub) -> None:
    """A standby's 307 to the active node is followed, as the Vault CLI does."""
    with vault_stub() as active:
        stub.answer(307, None, Location=f"{active.addr}/v1/x")
        active.answer(200, {"data": {"active": True}})
        assert transport(stub).request("GET", "x") == {"data": {"active": True}}
    assert active.seen[0].headers["x-vault-token"] == TOKEN


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_vault_in_trouble_is_an_outage(stub: VaultStub, status: int) -> None:
    """Sealed, standby, failing or overloaded: the next run retries."""
    stub.answer(status, {"errors": ["trouble"]})
    with pytest.raises(VaultUnavailable, match=f"{status} \\(trouble\\)"):
        user_vault(stub).check_token()


def test_refused_lookup_is_a_dead_token(stub: VaultStub) -> None:
    """403 on lookup-self means the token itself is expired, revoked or unknown."""
    stub.answer(403, {"errors": ["permission denied"]})
    with pytest.raises(TokenInvalid, match="expired, was revoked"):
        user_vault(stub).check_token()


def test_unknown_status_is_a_vault_error(stub: VaultStub) -> None:
    """Any other status is reported with Vault's words, never a traceback."""
    stub.answer(418, {"errors": ["teapot"]})
    with pytest.raises(VaultError, match="418 \\(teapot\\)"):
        user_vault(stub).renew()


@pytest.mark.parametrize(
    "answer",
    [
        (412, {"errors": ["required index state not present"]}),
        (400, {"errors": ["check-and-set parameter did not match the version"]}),
    ],
)
def test_lost_race_is_a_conflict(stub: VaultStub, answer: tuple[int, object]) -> None:
    """A check-and-set mismatch, or a standby behind the write, is a conflict."""
    stub.answer(*answer)
    with pytest.raises(BackupConflict):
        user_vault(stub).write_oauth(LOGIN, None)


def test_retry_after_a_lost_race_reads_from_the_active_node(stub: VaultStub) -> None:
    """After a lost race the next read asks a standby to forward it."""
    stub.answer(200, stored(1, {**LOGIN, "accessToken": "old"}))
    stub.answer(412, {"errors": ["required index state not present"]})
    stub.answer(200, stored(2, {**LOGIN, "accessToken": "old"}))
    stub.answer(200, {"data": {"version": 3}})

    assert user_vault(stub).store(LOGIN) == "written"
    reads = [s for s in stub.seen if s.method == "GET"]
    assert "x-vault-inconsistent" not in reads[0].headers
    assert reads[1].headers["x-vault-inconsistent"] == "forward-active-node"
    assert stub.seen[-1].body["options"] == {"cas": 2}


def test_conflict_at_every_attempt_gives_up(stub: VaultStub) -> None:
    """Writers that win every race end the backup with a conflict, not a loop."""
    for version in range(3):
        stub.answer(200, stored(version + 1, {**LOGIN, "accessToken": "old"}))
        stub.answer(400, {"errors": ["check-and-set parameter did not match"]})
    with pytest.raises(BackupConflict, match="every attempt"):
        user_vault(stub).store(LOGIN)


# -- settings ------------------------------------------------------------------


def test_skip_verify_must_be_a_yes_or_a_no() -> None:
    """A VAULT_SKIP_VERIFY that is neither true nor false is refused."""
    with pytest.raises(ConfigError, match="VAULT_SKIP_VERIFY='maybe'"):
        VaultTransport.from_env(
            "https://vault.example", TOKEN, {"VAULT_SKIP_VERIFY": "maybe"}
        )


def test_skip_verify_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """Turning certificate checks off is said at WARNING on every run."""
    vault = VaultTransport.from_env(
        "https://127.0.0.1:1", TOKEN, {"VAULT_SKIP_VERIFY": "true"}
    )
    with caplog.at_level(logging.WARNING), pytest.raises(VaultNoAnswer):
        vault.request("GET", "sys/health")
    assert "VAULT_SKIP_VERIFY is set" in caplog.text


@pytest.mark.parametrize(
    ("addr", "warned"),
    [
        ("http://vault.corp.example:8200", True),
        ("http://10.1.2.3:8200", True),
        ("http://127.0.0.1:8200", False),
        ("http://localhost:8200", False),
        ("https://vault.corp.example", False),
    ],
)
def test_plain_http_to_another_host_is_warned_about(
    caplog: pytest.LogCaptureFixture, addr: str, warned: bool
) -> None:
    """Tokens over unencrypted http off this machine are said at WARNING."""
    with caplog.at_level(logging.WARNING):
        VaultTransport.from_env(addr, TOKEN, {})
    assert ("is plain http to another host" in caplog.text) is warned


def test_unreadable_ca_file_is_a_config_error() -> None:
    """A VAULT_CACERT that is not there is named, with the fix."""
    vault = VaultTransport.from_env(
        "https://127.0.0.1:1", TOKEN, {"VAULT_CACERT": "/nonexistent/ca.pem"}
    )
    with pytest.raises(ConfigError, match=r"VAULT_CACERT=/nonexistent/ca\.pem"):
        vault.request("GET", "sys/health")


def test_address_must_be_http_or_https() -> None:
    """A VAULT_ADDR without a scheme is a configuration error, said as such."""
    with pytest.raises(ConfigError, match="not an http:// or https:// address"):
        VaultTransport("vault.example:8200", TOKEN)


def test_a_run_loads_neither_hvac_nor_requests() -> None:
    """The run's modules import no HTTP library beyond the standard one."""
    code = (
        "import sys, agent.cli, agent.run, agent.vault, agent.doctor, "
        "agent.provision\n"
        "print(sorted(m for m in ('hvac', 'requests', 'urllib3') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
