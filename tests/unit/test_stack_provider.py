"""The Vault provider block: how Terraform reaches a site's Vault, from the env.

A site behind a private CA, or in a namespace, synthesizes with the same
``VAULT_CACERT`` and ``VAULT_NAMESPACE`` that its agents use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.vault_stack import synthesize

ONE_USER = "users:\n  alice: {email: alice@corp.example}\n"


def provider(tf_json: Path) -> dict[str, Any]:
    document = json.loads(tf_json.read_text(encoding="utf-8"))
    block: dict[str, Any] = document["provider"]["vault"][0]
    return block


class TestPrivateCAAndNamespace:
    """A site with its own CA and a namespace for the workstations."""

    ENV: ClassVar[dict[str, str]] = {
        "VAULT_ADDR": "https://vault.example.com",
        "VAULT_CACERT": "/etc/ssl/private-ca/vault-ca.pem",
        "VAULT_NAMESPACE": "workstations/",
        "VAULT_TOKEN": "hvs.never-in-the-json",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def tf_json(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return synthesize(ONE_USER, tmp_path_factory.mktemp("ca"), cls.ENV)

    def test_provider_trusts_the_private_ca(self, tf_json: Path) -> None:
        """VAULT_CACERT becomes the provider's ca_cert_file."""
        assert provider(tf_json)["ca_cert_file"] == "/etc/ssl/private-ca/vault-ca.pem"

    def test_provider_works_in_the_namespace(self, tf_json: Path) -> None:
        """VAULT_NAMESPACE becomes the provider's namespace, without slashes."""
        assert provider(tf_json)["namespace"] == "workstations"

    def test_provider_never_holds_the_token(self, tf_json: Path) -> None:
        """The token the synthesis ran with appears nowhere in the JSON."""
        assert "hvs.never-in-the-json" not in tf_json.read_text(encoding="utf-8")
