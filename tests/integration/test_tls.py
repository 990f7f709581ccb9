"""The agent, the provisioner and the stack against a Vault behind a private CA.

OpenBao's own TLS dev listener makes a CA and a server certificate, as a site
with a private CA does. This machine sets SSL_CERT_FILE and friends for its
own tools; they are removed here (and are absent from the agent's
environment), so a test can pass only through VAULT_CACERT.
"""

from __future__ import annotations

import json
import pwd
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.errors import VaultTLSError
from agent.provision import Provisioner
from agent.settings import Settings, policy_name
from tests.support.agent_host import (
    ROSTER,
    Workstation,
    lines,
    only_line,
)
from tests.support.logfmt import parse_logfmt
from tests.support.openbao import OpenBao
from tests.support.vault_site import ALICE, alice_provisioner, alice_station
from tests.support.vault_stack import apply_stack, mint_user_token, synthesize

#: Variables that make OpenSSL, requests or curl trust more than they are told.
AMBIENT_TRUST = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NIX_SSL_CERT_FILE",
)
#: A real CA bundle that did not sign the dev server's certificate.
OTHER_CAS = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(autouse=True)
def no_ambient_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing but VAULT_CACERT may make the private CA trusted."""
    for name in AMBIENT_TRUST:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tls_stack(openbao_tls: OpenBao, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack synthesized for the TLS server, applied to it over TLS."""
    env = {"VAULT_ADDR": openbao_tls.addr, "VAULT_CACERT": str(openbao_tls.ca_cert)}
    tf_json = synthesize(ROSTER, tmp_path_factory.mktemp("tls-stack"), env)
    apply_stack(openbao_tls.client(), tf_json)
    return tf_json


@pytest.fixture
def station(
    agent_users: dict[str, pwd.struct_passwd],
    homes: Path,
    openbao_tls: OpenBao,
    tls_stack: Path,
    tmp_path: Path,
) -> Iterator[Workstation]:
    """alice with her token minted on the TLS server, and its CA configured."""
    token = mint_user_token(openbao_tls.client(), ALICE)
    station = alice_station(agent_users[ALICE], homes, tmp_path, openbao_tls, token)
    station.env["VAULT_CACERT"] = str(openbao_tls.ca_cert)
    assert not set(AMBIENT_TRUST) & set(station.env)
    yield station
    openbao_tls.client().secrets.kv.v2.delete_metadata_and_all_versions(
        path=Settings().secret_path(ALICE)
    )


def test_agent_backs_up_over_tls_with_the_private_ca(station: Workstation) -> None:
    """With VAULT_CACERT naming the private CA, a run backs the login up."""
    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "OK")
    assert station.stored() == {"claudeAiOauth": station.credentials()["claudeAiOauth"]}


def test_agent_without_the_ca_fails_in_one_line(station: Workstation) -> None:
    """Without VAULT_CACERT the system's CAs refuse the certificate: one clear line."""
    del station.env["VAULT_CACERT"]
    done = station.run()

    line = only_line(done, "FAIL", "vault_tls", 4)
    assert station.vault.addr in line and "VAULT_CACERT" in line
    assert station.stored() is None


def test_agent_with_a_wrong_ca_fails_in_one_line(station: Workstation) -> None:
    """A VAULT_CACERT that did not sign the certificate is named in the line."""
    station.env["VAULT_CACERT"] = OTHER_CAS
    done = station.run()

    line = only_line(done, "FAIL", "vault_tls", 4)
    assert f"VAULT_CACERT={OTHER_CAS}" in line


def test_skip_verify_connects_and_warns(station: Workstation) -> None:
    """VAULT_SKIP_VERIFY=true works without the CA, with a warning every run."""
    del station.env["VAULT_CACERT"]
    done = station.run(VAULT_SKIP_VERIFY="true")

    assert done.returncode == 0, done.stdout + done.stderr
    warning = parse_logfmt(done.stderr.strip())
    assert warning["level"] == "warning"
    assert warning["msg"].startswith("VAULT_SKIP_VERIFY is set")


def test_skip_verify_must_say_true_or_false(station: Workstation) -> None:
    """An unclear VAULT_SKIP_VERIFY is refused as configuration; nothing is sent."""
    done = station.run(VAULT_SKIP_VERIFY="sometimes")

    assert "VAULT_SKIP_VERIFY" in only_line(done, "FAIL", "config", 2)
    assert station.stored() is None


def test_doctor_names_the_tls_failure(station: Workstation) -> None:
    """doctor reports a refused certificate as a Vault finding, with the fix."""
    station.env["VAULT_CACERT"] = OTHER_CAS
    done = station.run("doctor")

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "TLS connection to Vault" in done.stdout
    assert "Set VAULT_CACERT" in done.stdout


def test_stack_for_the_tls_server_names_its_ca(
    tls_stack: Path, openbao_tls: OpenBao
) -> None:
    """The provider gets the CA file; the policies reached the TLS server."""
    document = json.loads(tls_stack.read_text(encoding="utf-8"))
    assert document["provider"]["vault"][0]["ca_cert_file"] == str(openbao_tls.ca_cert)
    assert openbao_tls.client().sys.read_acl_policy(policy_name(ALICE))


@pytest.fixture
def provision(
    agent_users: dict[str, pwd.struct_passwd],
    homes: Path,
    openbao_tls: OpenBao,
    tls_stack: Path,
    tmp_path: Path,
) -> Callable[[dict[str, str]], Provisioner]:
    """A provisioner for alice alone, over TLS, with the admin token."""

    def make(environ: dict[str, str]) -> Provisioner:
        entry = agent_users[ALICE]
        return alice_provisioner(entry, homes, tmp_path, openbao_tls, environ)

    return make


def test_provisioner_mints_over_tls(
    provision: Callable[[dict[str, str]], Provisioner], openbao_tls: OpenBao
) -> None:
    """With VAULT_CACERT the provisioner mints alice's token through her role."""
    outcome = provision({"VAULT_CACERT": str(openbao_tls.ca_cert)}).run()[0]

    assert outcome.error is None, outcome.line()
    assert "mint the scoped token" in outcome.changes


def test_provisioner_without_the_ca_says_so(
    provision: Callable[[dict[str, str]], Provisioner], openbao_tls: OpenBao
) -> None:
    """Without the CA the user's outcome names the TLS failure and the fix."""
    outcome = provision({}).run()[0]

    assert isinstance(outcome.error, VaultTLSError)
    assert openbao_tls.addr in outcome.error.message
    assert "VAULT_CACERT" in outcome.error.action


def test_unreadable_ca_file_is_a_configuration_line(
    station: Workstation, tmp_path: Path
) -> None:
    """A CA file the user cannot read is a configuration error, not a crash."""
    hidden = tmp_path / "root-only" / "ca.pem"
    hidden.parent.mkdir(mode=0o700)
    hidden.write_bytes(Path(station.env["VAULT_CACERT"]).read_bytes())
    station.env["VAULT_CACERT"] = str(hidden)
    done = station.run()

    assert f"VAULT_CACERT={hidden}" in only_line(done, "FAIL", "config", 2)
