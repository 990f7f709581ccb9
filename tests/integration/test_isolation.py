"""Per-user isolation of the Vault stack, proven on a real OpenBao server.

The stack is synthesized for six users and applied to a dev server; each
user's token is minted through their role, exactly as the provisioner does,
and then tried against its own path, everybody else's, and the rest of Vault.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import permutations
from pathlib import Path

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidRequest

from agent.settings import (
    DEFAULT_KV_MOUNT,
    PROVISIONER_POLICY,
    Settings,
    expected_display_name,
    policy_name,
    role_name,
)
from tests.support.openbao import OpenBao
from tests.support.vault_stack import mint_user_token

USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
ROSTER = "users:\n" + "".join(
    f"  {user}: {{email: {user}@corp.example}}\n" for user in USERS[:-1]
)
ROSTER += "  frank: {email: frank@corp.example, claude_auth: false}\n"
PERIOD = Settings().token_period_seconds
MOUNT = DEFAULT_KV_MOUNT
PATH = Settings().secret_path


@pytest.fixture
def tokens(
    apply_roster: Callable[..., Path], openbao: OpenBao
) -> dict[str, hvac.Client]:
    """One client per user, holding a token minted through that user's role."""
    apply_roster(ROSTER)
    admin = openbao.client()
    return {user: openbao.client(mint_user_token(admin, user)) for user in USERS}


@pytest.fixture
def provisioner(apply_roster: Callable[..., Path], openbao: OpenBao) -> hvac.Client:
    """A client with the provisioner policy alone, as on a workstation."""
    apply_roster(ROSTER)
    created = openbao.client().auth.token.create(
        policies=[PROVISIONER_POLICY], no_default_policy=True, ttl="1h"
    )
    return openbao.client(created["auth"]["client_token"])


def write(client: hvac.Client, user: str, data: dict[str, str]) -> None:
    client.secrets.kv.v2.create_or_update_secret(
        path=PATH(user), secret=data, mount_point=MOUNT
    )


def read(client: hvac.Client, user: str) -> dict[str, str]:
    response = client.secrets.kv.v2.read_secret_version(
        path=PATH(user), mount_point=MOUNT, raise_on_deleted_version=True
    )
    data: dict[str, str] = response["data"]["data"]
    return data


def test_each_token_creates_reads_and_updates_its_own_data(
    tokens: dict[str, hvac.Client],
) -> None:
    """Every user writes a first backup, reads it back, and replaces it."""
    for user, client in tokens.items():
        write(client, user, {"claudeAiOauth": f"{user}-1"})
        write(client, user, {"claudeAiOauth": f"{user}-2"})
        assert read(client, user) == {"claudeAiOauth": f"{user}-2"}


def test_each_token_merges_into_its_own_data(tokens: dict[str, hvac.Client]) -> None:
    """A JSON merge PATCH keeps the keys other tools store at the same path."""
    client = tokens["alice"]
    write(client, "alice", {"other-tool": "kept"})
    client.adapter.request(
        "PATCH",
        f"/v1/{MOUNT}/data/{PATH('alice')}",
        json={"data": {"claudeAiOauth": "new"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert read(client, "alice") == {"other-tool": "kept", "claudeAiOauth": "new"}


def test_each_token_reads_and_annotates_its_own_metadata(
    tokens: dict[str, hvac.Client],
) -> None:
    """Every user reads their version history and sets custom_metadata on it."""
    for user, client in tokens.items():
        write(client, user, {"claudeAiOauth": "x"})
        client.secrets.kv.v2.update_metadata(
            path=PATH(user),
            custom_metadata={"last_ok": "2026-12-03"},
            mount_point=MOUNT,
        )
        metadata = client.secrets.kv.v2.read_secret_metadata(
            path=PATH(user), mount_point=MOUNT
        )["data"]
        assert metadata["custom_metadata"] == {"last_ok": "2026-12-03"}
        assert metadata["current_version"] == 1


def test_no_token_touches_another_users_data(tokens: dict[str, hvac.Client]) -> None:
    """For every pair of users, reading or writing the other's data is denied."""
    for user in USERS:
        write(tokens[user], user, {"claudeAiOauth": user})
    for me, other in permutations(USERS, 2):
        with pytest.raises(Forbidden):
            read(tokens[me], other)
        with pytest.raises(Forbidden):
            write(tokens[me], other, {"claudeAiOauth": me})


def test_no_token_touches_another_users_metadata(
    tokens: dict[str, hvac.Client],
) -> None:
    """For every pair of users, reading or annotating the other's metadata fails."""
    for me, other in permutations(USERS, 2):
        with pytest.raises(Forbidden):
            tokens[me].secrets.kv.v2.read_secret_metadata(
                path=PATH(other), mount_point=MOUNT
            )
        with pytest.raises(Forbidden):
            tokens[me].secrets.kv.v2.update_metadata(
                path=PATH(other), custom_metadata={"x": "y"}, mount_point=MOUNT
            )


def test_no_token_deletes_its_own_history(tokens: dict[str, hvac.Client]) -> None:
    """A user cannot delete their latest version nor their metadata and versions."""
    client = tokens["bob"]
    write(client, "bob", {"claudeAiOauth": "x"})
    with pytest.raises(Forbidden):
        client.secrets.kv.v2.delete_latest_version_of_secret(
            path=PATH("bob"), mount_point=MOUNT
        )
    with pytest.raises(Forbidden):
        client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=PATH("bob"), mount_point=MOUNT
        )


def test_no_token_lists_the_prefix(tokens: dict[str, hvac.Client]) -> None:
    """Listing who else has a path is denied to every user."""
    write(tokens["carol"], "carol", {"claudeAiOauth": "x"})
    for client in tokens.values():
        with pytest.raises(Forbidden):
            client.secrets.kv.v2.list_secrets(
                path=Settings().kv_prefix, mount_point=MOUNT
            )


def test_no_token_reaches_sys(tokens: dict[str, hvac.Client]) -> None:
    """Policies, mounts and the audit configuration are out of every token's reach."""
    for client in tokens.values():
        with pytest.raises(Forbidden):
            client.sys.list_acl_policies()
        with pytest.raises(Forbidden):
            client.sys.list_mounted_secrets_engines()


def test_no_token_creates_tokens(tokens: dict[str, hvac.Client]) -> None:
    """A user token mints neither a child, an orphan, nor a token through a role."""
    client = tokens["dave"]
    with pytest.raises(Forbidden):
        client.auth.token.create(policies=[policy_name("dave")])
    with pytest.raises(Forbidden):
        client.auth.token.create_orphan(policies=[policy_name("dave")])
    with pytest.raises(Forbidden):
        mint_user_token(client, "dave")


def test_each_token_has_exactly_its_policy(tokens: dict[str, hvac.Client]) -> None:
    """lookup-self shows the user's one policy and not the default policy."""
    for user, client in tokens.items():
        info = client.auth.token.lookup_self()["data"]
        assert info["policies"] == [policy_name(user)]


def test_each_token_is_a_periodic_orphan_service_token(
    tokens: dict[str, hvac.Client],
) -> None:
    """Created for the 768 h period, orphan, renewable, no explicit max TTL."""
    for client in tokens.values():
        info = client.auth.token.lookup_self()["data"]
        assert info["creation_ttl"] == PERIOD
        assert (info["orphan"], info["renewable"], info["type"]) == (
            True,
            True,
            "service",
        )
        assert info["explicit_max_ttl"] == 0


def test_each_token_carries_its_display_name(tokens: dict[str, hvac.Client]) -> None:
    """The display name says whose token it is, as the agent checks."""
    for user, client in tokens.items():
        info = client.auth.token.lookup_self()["data"]
        assert info["display_name"] == expected_display_name(user)


def test_each_token_renews_for_a_full_period(tokens: dict[str, hvac.Client]) -> None:
    """renew-self succeeds and grants the whole 768 h again."""
    for client in tokens.values():
        renewed = client.auth.token.renew_self()["auth"]
        assert renewed["lease_duration"] == PERIOD


def test_provisioner_mints_through_a_users_role(
    provisioner: hvac.Client, openbao: OpenBao
) -> None:
    """The provisioner's token mints alice's token, carrying only alice's policy."""
    token = mint_user_token(provisioner, "alice")
    info = openbao.client(token).auth.token.lookup_self()["data"]
    assert info["policies"] == [policy_name("alice")]


def test_provisioner_cannot_mint_other_policies_through_a_role(
    provisioner: hvac.Client,
) -> None:
    """Asking alice's role for bob's, the default or the root policy is refused."""
    for policies in (["workstation-claude-bob"], ["default"], ["root"]):
        with pytest.raises(InvalidRequest):
            provisioner.write_data(
                f"auth/token/create/{role_name('alice')}",
                data={"policies": policies},
            )


def test_provisioner_cannot_mint_without_a_role(provisioner: hvac.Client) -> None:
    """Plain and orphan token creation with chosen policies are denied."""
    with pytest.raises(Forbidden):
        provisioner.auth.token.create(policies=[policy_name("alice")])
    with pytest.raises(Forbidden):
        provisioner.auth.token.create_orphan(policies=["root"])


def test_provisioner_reads_no_secret(
    provisioner: hvac.Client, tokens: dict[str, hvac.Client]
) -> None:
    """Neither a user's data, their metadata, nor the list of users is readable."""
    write(tokens["alice"], "alice", {"claudeAiOauth": "secret"})
    with pytest.raises(Forbidden):
        read(provisioner, "alice")
    with pytest.raises(Forbidden):
        provisioner.secrets.kv.v2.read_secret_metadata(
            path=PATH("alice"), mount_point=MOUNT
        )
    with pytest.raises(Forbidden):
        provisioner.secrets.kv.v2.list_secrets(
            path=Settings().kv_prefix, mount_point=MOUNT
        )


def test_provisioner_manages_tokens_by_accessor(
    provisioner: hvac.Client, openbao: OpenBao
) -> None:
    """It looks a minted token up by accessor and revokes it, never holding it."""
    minted = provisioner.write_data(
        f"auth/token/create/{role_name('bob')}", data={"display_name": "x"}
    )["auth"]
    info = provisioner.auth.token.lookup_accessor(minted["accessor"])["data"]
    assert info["policies"] == [policy_name("bob")]

    provisioner.auth.token.revoke_accessor(minted["accessor"])
    with pytest.raises(Forbidden):
        openbao.client(minted["client_token"]).auth.token.lookup_self()


def test_provisioner_confirms_a_role_exists(provisioner: hvac.Client) -> None:
    """Reading a user's role works; reading another role or policy does not."""
    role = provisioner.read(f"auth/token/roles/{role_name('carol')}")["data"]
    assert role["allowed_policies"] == [policy_name("carol")]
    with pytest.raises(Forbidden):
        provisioner.sys.read_acl_policy(policy_name("carol"))


def test_removed_user_loses_access_and_keeps_data(
    tokens: dict[str, hvac.Client],
    apply_roster: Callable[..., Path],
    openbao: OpenBao,
) -> None:
    """Re-applying without bob makes his token fail; his data stays for root."""
    write(tokens["bob"], "bob", {"claudeAiOauth": "bob"})
    apply_roster(ROSTER.replace("  bob: {email: bob@corp.example}\n", ""))

    with pytest.raises(Forbidden):
        read(tokens["bob"], "bob")
    with pytest.raises(Forbidden):
        tokens["bob"].auth.token.renew_self()
    assert read(openbao.client(), "bob") == {"claudeAiOauth": "bob"}


def test_bound_token_is_refused_from_another_network(
    apply_roster: Callable[..., Path], openbao: OpenBao
) -> None:
    """A role bound to a network the client is not in mints unusable tokens."""
    apply_roster(
        "users:\n"
        "  alice: {email: alice@corp.example, token_bound_cidrs: ['192.0.2.0/24']}\n"
        "  bob: {email: bob@corp.example, token_bound_cidrs: ['127.0.0.0/8']}\n"
    )
    admin = openbao.client()
    with pytest.raises(Forbidden):
        openbao.client(mint_user_token(admin, "alice")).auth.token.lookup_self()
    bob = openbao.client(mint_user_token(admin, "bob"))
    assert bob.auth.token.lookup_self()["data"]["policies"] == [policy_name("bob")]
