"""The agent and the provisioner inside a Vault namespace (VAULT_NAMESPACE).

OpenBao 2.x has namespaces, as Vault Enterprise does: each has its own
policies, token roles, mounts and tokens. The stack is applied inside one,
and everything the product does must happen there, never in the root.
"""

from __future__ import annotations

import pwd
import secrets
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from agent.settings import (
    DEFAULT_KV_MOUNT,
    Settings,
    expected_display_name,
    token_file,
)
from tests.support.agent_host import (
    LEAKS,
    ROSTER,
    Workstation,
    lines,
    only_line,
)
from tests.support.openbao import OpenBao
from tests.support.vault_site import ALICE, alice_provisioner, alice_station
from tests.support.vault_stack import apply_stack, mint_user_token, synthesize

# Unique per session: a deleted namespace keeps its name taken ("tainted")
# while OpenBao removes it in the background.
NAMESPACE = f"workstations-{secrets.token_hex(3)}"
PATH = Settings().secret_path(ALICE)


@pytest.fixture(scope="module")
def namespace(
    openbao: OpenBao, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[hvac.Client]:
    """A namespace with a KV mount and the stack applied, for this module.

    Once: OpenBao deletes a namespace in the background, and its name stays
    taken until that ends.
    """
    root = openbao.client()
    root.sys.create_namespace(NAMESPACE)
    client = openbao.client(namespace=NAMESPACE)
    client.sys.enable_secrets_engine(
        "kv", path=DEFAULT_KV_MOUNT, options={"version": 2}
    )
    apply_stack(client, synthesize(ROSTER, tmp_path_factory.mktemp("ns-stack")))
    yield client
    root.sys.delete_namespace(NAMESPACE)


@pytest.fixture
def in_namespace(namespace: hvac.Client) -> Iterator[hvac.Client]:
    """The namespace, with alice's path emptied after the test."""
    yield namespace
    namespace.secrets.kv.v2.delete_metadata_and_all_versions(
        path=PATH, mount_point=DEFAULT_KV_MOUNT
    )


def read(client: hvac.Client) -> dict[str, object] | None:
    """The latest data at alice's path, as ``client``'s namespace holds it."""
    try:
        answer = client.secrets.kv.v2.read_secret_version(
            path=PATH, mount_point=DEFAULT_KV_MOUNT, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        return None
    data: dict[str, object] = answer["data"]["data"]
    return data


@pytest.fixture
def station(
    agent_users: dict[str, pwd.struct_passwd],
    homes: Path,
    openbao: OpenBao,
    in_namespace: hvac.Client,
    tmp_path: Path,
) -> Workstation:
    """alice, with a token minted through her role inside the namespace."""
    token = mint_user_token(in_namespace, ALICE)
    return alice_station(agent_users[ALICE], homes, tmp_path, openbao, token)


def test_agent_backs_up_inside_the_namespace(
    station: Workstation, in_namespace: hvac.Client, openbao: OpenBao
) -> None:
    """With VAULT_NAMESPACE the login lands in the namespace, not the root."""
    done = station.run(VAULT_NAMESPACE=NAMESPACE)

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "OK")
    assert read(in_namespace) == {
        "claudeAiOauth": station.credentials()["claudeAiOauth"]
    }
    assert read(openbao.client()) is None


def test_agent_without_the_namespace_names_it(station: Workstation) -> None:
    """Without VAULT_NAMESPACE, the line says which namespace the token is from."""
    done = station.run()

    line = only_line(done, "FAIL", "config", 2)
    assert f"Set VAULT_NAMESPACE={NAMESPACE}" in line


def test_provisioner_mints_inside_the_namespace(
    agent_users: dict[str, pwd.struct_passwd],
    homes: Path,
    openbao: OpenBao,
    in_namespace: hvac.Client,
    tmp_path: Path,
) -> None:
    """With VAULT_NAMESPACE the provisioner mints through the namespace's role."""
    environ = {"VAULT_NAMESPACE": NAMESPACE}
    provisioner = alice_provisioner(
        agent_users[ALICE], homes, tmp_path, openbao, environ
    )

    outcome = provisioner.run()[0]

    assert outcome.error is None, outcome.line()
    account = provisioner.accounts(ALICE)
    assert account is not None
    token = Path(token_file(account.home)).read_text().strip()
    LEAKS.secret(token)
    looked_up = openbao.client(token, NAMESPACE).auth.token.lookup_self()["data"]
    assert looked_up["display_name"] == expected_display_name(ALICE)
