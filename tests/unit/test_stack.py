"""The synthesized Vault stack: what each user's policy and role say, read from JSON.

Each class synthesizes its roster once (Node starts in seconds) and asserts on
the resulting ``cdk.tf.json``, instance by instance, as Terraform would see it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from agent.settings import PROVISIONER_POLICY, Settings
from stacks.policies import user_policy
from tests.support.components import REPO
from tests.support.vault_stack import declared, grants, synthesize

FIVE_USERS = """\
users:
  alice: {email: alice@corp.example}
  bob: {email: bob@corp.example}
  carol: {email: carol@corp.example}
  dave: {email: dave@corp.example}
  erin: {email: erin@corp.example, claude_auth: false}
"""

Stack = dict[str, dict[str, dict[str, Any]]]


def policy_of(stack: Stack, user: str) -> dict[str, Any]:
    return stack["vault_policy"][f'user["{user}"]']


def role_of(stack: Stack, user: str) -> dict[str, Any]:
    return stack["vault_token_auth_backend_role"][f'user["{user}"]']


def users_in(stack: Stack) -> dict[str, set[str]]:
    """The user keys of the policy and role instances, by resource type."""
    return {
        kind: {a for a in named if a.startswith("user[")}
        for kind, named in stack.items()
        if kind.startswith("vault_")
    }


@pytest.fixture(scope="class")
def five(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(FIVE_USERS, tmp_path_factory.mktemp("five"))


class TestDefaultStack:
    """Five users with the runbook's default settings."""

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, five: Path) -> Stack:
        return declared(five)

    def test_declares_only_policies_roles_and_the_rules_file(
        self, stack: Stack
    ) -> None:
        """No KV secret or mount: the stack never writes user data."""
        assert set(stack) == {
            "vault_policy",
            "vault_token_auth_backend_role",
            "local_file",
        }
        assert list(stack["local_file"]) == ["alert_rules"]

    def test_one_policy_and_one_role_per_user(self, stack: Stack) -> None:
        """Each user's instances are keyed by their name, one of each kind."""
        expected = {f'user["{u}"]' for u in ("alice", "bob", "carol", "dave", "erin")}
        assert users_in(stack) == {
            "vault_policy": expected,
            "vault_token_auth_backend_role": expected,
        }

    def test_policy_is_named_after_the_user(self, stack: Stack) -> None:
        """The policy that alice's role grants is workstation-claude-alice."""
        assert policy_of(stack, "alice")["name"] == "workstation-claude-alice"

    def test_user_policy_grants_only_the_users_own_paths(self, stack: Stack) -> None:
        """Alice's policy names her own data, metadata and token, nothing else."""
        assert grants(policy_of(stack, "alice")["policy"]) == {
            "secret/data/workstation/claude-users/alice": {
                "create",
                "read",
                "update",
                "patch",
            },
            "secret/metadata/workstation/claude-users/alice": {"read", "update"},
            "auth/token/lookup-self": {"read"},
            "auth/token/renew-self": {"update"},
        }

    def test_policy_text_is_the_shared_document(self, stack: Stack) -> None:
        """The JSON carries exactly the text stacks.policies writes for the user."""
        assert policy_of(stack, "bob")["policy"] == user_policy(Settings(), "bob")

    def test_policy_text_holds_no_terraform_template(self, five: Path) -> None:
        """Terraform reads ${ and %{ in JSON strings as templates; none may appear."""
        text = five.read_text(encoding="utf-8")
        locals_ = json.loads(text)["locals"]
        assert "${" not in json.dumps(locals_)
        assert "%{" not in json.dumps(locals_)

    def test_role_mints_tokens_with_only_the_users_policy(self, stack: Stack) -> None:
        """Alice's role allows exactly her policy and withholds the default one."""
        role = role_of(stack, "alice")
        assert role["role_name"] == "workstation-claude-alice"
        assert role["allowed_policies"] == ["workstation-claude-alice"]
        assert role["token_no_default_policy"] is True

    def test_role_tokens_are_periodic_orphan_service_tokens(self, stack: Stack) -> None:
        """768 h period, orphan, renewable, service type, no explicit max TTL."""
        role = role_of(stack, "carol")
        assert role["token_period"] == 768 * 3600
        assert (role["orphan"], role["renewable"]) == (True, True)
        assert role["token_type"] == "service"
        assert "token_explicit_max_ttl" not in role
        assert "token_max_ttl" not in role

    def test_roles_are_unbound_without_cidrs(self, stack: Stack) -> None:
        """Nobody configured networks, so no token is bound to any."""
        assert role_of(stack, "dave")["token_bound_cidrs"] == []

    def test_user_without_claude_keeps_policy_and_role(self, stack: Stack) -> None:
        """claude_auth false stops the timer, not the user's Vault access."""
        assert policy_of(stack, "erin")["name"] == "workstation-claude-erin"
        assert role_of(stack, "erin")["allowed_policies"] == ["workstation-claude-erin"]

    def test_provisioner_policy_only_mints_through_roles(self, stack: Stack) -> None:
        """The provisioner creates through the product's roles and reads no secret."""
        provisioner = stack["vault_policy"]["provisioner"]
        assert provisioner["name"] == PROVISIONER_POLICY
        assert grants(provisioner["policy"]) == {
            "auth/token/create/workstation-claude-*": {"create", "update"},
            "auth/token/roles/workstation-claude-*": {"read"},
            "auth/token/lookup-accessor": {"update"},
            "auth/token/revoke-accessor": {"update"},
        }

    def test_provider_has_no_address_or_token(self, five: Path) -> None:
        """Without VAULT_ADDR the provider block is empty, and never holds a token."""
        document = json.loads(five.read_text(encoding="utf-8"))
        assert document["provider"]["vault"] == [{}]


class TestRemovingAUser:
    """The same roster before and after bob leaves."""

    @pytest.fixture(scope="class")
    @classmethod
    def after(cls, tmp_path_factory: pytest.TempPathFactory) -> Stack:
        without_bob = FIVE_USERS.replace("  bob: {email: bob@corp.example}\n", "")
        return declared(synthesize(without_bob, tmp_path_factory.mktemp("after")))

    def test_removes_exactly_the_users_instances(
        self, five: Path, after: Stack
    ) -> None:
        """Only bob's policy and role disappear; every other address stays."""
        before = users_in(declared(five))
        gone = {kind: before[kind] - users_in(after)[kind] for kind in before}
        assert gone == {
            "vault_policy": {'user["bob"]'},
            "vault_token_auth_backend_role": {'user["bob"]'},
        }

    def test_leaves_other_users_unchanged(self, five: Path, after: Stack) -> None:
        """Alice's instances are identical, so a plan shows no change for her."""
        before = declared(five)
        assert policy_of(after, "alice") == policy_of(before, "alice")
        assert role_of(after, "alice") == role_of(before, "alice")


class TestBoundCidrs:
    """Networks from a user's entry, the roster, and the settings."""

    ROSTER = """\
token_bound_cidrs: ['10.20.0.0/16']
users:
  alice: {email: alice@corp.example, token_bound_cidrs: ['192.0.2.7/32']}
  bob: {email: bob@corp.example}
"""

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, tmp_path_factory: pytest.TempPathFactory) -> Stack:
        return declared(synthesize(cls.ROSTER, tmp_path_factory.mktemp("cidrs")))

    @pytest.fixture(scope="class")
    @classmethod
    def from_settings(cls, tmp_path_factory: pytest.TempPathFactory) -> Stack:
        env = {"CLAUDE_AUTH_SYNC_TOKEN_BOUND_CIDRS": "198.51.100.0/24"}
        outdir = tmp_path_factory.mktemp("cidr-settings")
        return declared(synthesize(FIVE_USERS, outdir, env))

    def test_users_own_cidrs_win(self, stack: Stack) -> None:
        """A user's own networks replace the roster's for their role."""
        assert role_of(stack, "alice")["token_bound_cidrs"] == ["192.0.2.7/32"]

    def test_roster_cidrs_apply_to_the_rest(self, stack: Stack) -> None:
        """A user without their own networks gets the roster's."""
        assert role_of(stack, "bob")["token_bound_cidrs"] == ["10.20.0.0/16"]

    def test_settings_cidrs_apply_when_roster_has_none(
        self, from_settings: Stack
    ) -> None:
        """The CIDR setting binds every role that the roster leaves open."""
        assert role_of(from_settings, "dave")["token_bound_cidrs"] == [
            "198.51.100.0/24"
        ]


class TestSettings:
    """A site's own Vault address, mount, prefix and period."""

    ENV: ClassVar[dict[str, str]] = {
        "VAULT_ADDR": "https://vault.example.com",
        "CLAUDE_AUTH_SYNC_KV_MOUNT": "kv",
        "CLAUDE_AUTH_SYNC_KV_PREFIX": "ws/claude",
        "CLAUDE_AUTH_SYNC_TOKEN_PERIOD_HOURS": "48",
        "CLAUDE_AUTH_SYNC_MANAGE_MOUNT": "true",
        "CLAUDE_AUTH_SYNC_KV_MAX_VERSIONS": "20",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def tf_json(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return synthesize(FIVE_USERS, tmp_path_factory.mktemp("site"), cls.ENV)

    def test_provider_uses_the_configured_address(self, tf_json: Path) -> None:
        """VAULT_ADDR becomes the provider's address, and nothing else is set."""
        document = json.loads(tf_json.read_text(encoding="utf-8"))
        assert document["provider"]["vault"] == [
            {"address": "https://vault.example.com"}
        ]

    def test_policy_follows_mount_and_prefix(self, tf_json: Path) -> None:
        """The user's paths are built from the configured mount and prefix."""
        assert set(grants(policy_of(declared(tf_json), "alice")["policy"])) == {
            "kv/data/ws/claude/alice",
            "kv/metadata/ws/claude/alice",
            "auth/token/lookup-self",
            "auth/token/renew-self",
        }

    def test_role_period_follows_the_setting(self, tf_json: Path) -> None:
        """CLAUDE_AUTH_SYNC_TOKEN_PERIOD_HOURS=48 gives a 48 h period in seconds."""
        assert role_of(declared(tf_json), "alice")["token_period"] == 48 * 3600

    def test_managed_mount_sets_only_max_versions(self, tf_json: Path) -> None:
        """With the mount managed, only its version history setting is declared."""
        mounts = declared(tf_json)["vault_kv_secret_backend_v2"]
        assert list(mounts.values()) == [{"mount": "kv", "max_versions": 20}]


def run_main(
    roster_text: str, tmp_path: Path, settings: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python main.py`` on a roster text, as ``make synth`` would."""
    roster = tmp_path / "roster.yaml"
    roster.write_text(roster_text, encoding="utf-8")
    env = {"ROSTER": str(roster), "CDKTF_OUTDIR": str(tmp_path / "out")}
    return subprocess.run(
        [sys.executable, str(REPO / "main.py")],
        cwd=REPO,
        env={**env, **(settings or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def test_bad_roster_is_refused_without_traceback(tmp_path: Path) -> None:
    """A roster error exits 2 with the loader's message and writes no JSON."""
    done = run_main("users:\n  Root: {email: nope}\n", tmp_path)
    assert done.returncode == 2
    assert "is not a valid roster" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_bad_setting_is_refused_without_traceback(tmp_path: Path) -> None:
    """An unusable setting is named, with exit 2 and no traceback."""
    done = run_main(FIVE_USERS, tmp_path, {"CLAUDE_AUTH_SYNC_KV_MOUNT": "secret/*"})
    assert done.returncode == 2
    assert "CLAUDE_AUTH_SYNC_KV_MOUNT" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_alert_delivery_is_refused_without_traceback(tmp_path: Path) -> None:
    """An unknown delivery mode names the setting and the values it takes."""
    done = run_main(FIVE_USERS, tmp_path, {"CLAUDE_AUTH_SYNC_ALERTS": "email"})
    assert done.returncode == 2
    assert "CLAUDE_AUTH_SYNC_ALERTS='email' is not one of file, configmap, none" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


class TestAlertDelivery:
    """The Loki rule group, delivered as a file, a ConfigMap, or not at all."""

    def test_file_carries_the_rules_for_enabled_users(self, five: Path) -> None:
        """The rules file holds three rules per user with a timer, none for erin."""
        rules_file = declared(five)["local_file"]["alert_rules"]
        assert rules_file["filename"] == "loki-rules/fake/claude-auth-sync.yaml"
        group = yaml.safe_load(rules_file["content"])["groups"][0]
        users = [rule["labels"]["user"] for rule in group["rules"]]
        assert sorted(set(users)) == ["alice", "bob", "carol", "dave"]
        assert len(users) == 12

    def test_file_path_is_a_setting(self, tmp_path: Path) -> None:
        """A file-based ruler's own rules directory can be named."""
        target = "/etc/loki/rules/fake/claude-auth-sync.yaml"
        stack = declared(
            synthesize(FIVE_USERS, tmp_path, {"CLAUDE_AUTH_SYNC_RULES_FILE": target})
        )
        assert stack["local_file"]["alert_rules"]["filename"] == target

    def test_configmap_has_the_sidecar_label(self, tmp_path: Path) -> None:
        """The ConfigMap sits in the ruler's namespace with the watched label."""
        settings = {
            "CLAUDE_AUTH_SYNC_ALERTS": "configmap",
            "CLAUDE_AUTH_SYNC_RULES_NAMESPACE": "monitoring",
        }
        stack = declared(synthesize(FIVE_USERS, tmp_path, settings))
        configmap = stack["kubernetes_config_map_v1"]["alert_rules"]
        assert configmap["metadata"] == {
            "name": "claude-auth-sync-rules",
            "namespace": "monitoring",
            "labels": {"loki_rule": "true"},
        }
        rules = yaml.safe_load(configmap["data"]["claude-auth-sync.yaml"])
        assert len(rules["groups"][0]["rules"]) == 12
        assert "local_file" not in stack

    def test_none_declares_no_rules(self, tmp_path: Path) -> None:
        """A site that manages Loki elsewhere gets only the Vault resources."""
        stack = declared(
            synthesize(FIVE_USERS, tmp_path, {"CLAUDE_AUTH_SYNC_ALERTS": "none"})
        )
        assert set(stack) == {"vault_policy", "vault_token_auth_backend_role"}
