"""Per-user isolation of the Vault stack, proven on a real OpenBao server."""

from __future__ import annotations

from pathlib import Path

from tests.support.openbao import OpenBao
from tests.support.vault_stack import mint_user_token


def test_user_token_carries_only_its_policy(
    openbao: OpenBao, stack_applied: Path
) -> None:
    """A token minted through alice's role has exactly alice's policy."""
    token = mint_user_token(openbao.client(), "alice")
    info = openbao.client(token).auth.token.lookup_self()["data"]
    assert info["policies"] == ["workstation-claude-alice"]
