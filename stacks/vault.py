"""The Vault stack: one policy and one token role per roster user, declared.

The stack is a thin layer over the validated roster: everything it says is
decided by ``agent.roster`` (who), ``agent.settings`` (where, how long) and
``stacks.policies`` (what a token may do). What it writes is plain Terraform
JSON, which ``terraform`` or ``tofu`` can apply without cdktf.

It declares no KV data on purpose: the agent alone writes a user's backup,
and a placeholder written at apply time would become the "latest copy" that a
restore reads. Removing a user removes their policy and role (so their token
stops working) and leaves their stored data alone.
"""

from __future__ import annotations

from cdktf import TerraformStack
from cdktf_cdktf_provider_vault.kv_secret_backend_v2 import KvSecretBackendV2
from cdktf_cdktf_provider_vault.policy import Policy
from cdktf_cdktf_provider_vault.provider import VaultProvider
from cdktf_cdktf_provider_vault.token_auth_backend_role import TokenAuthBackendRole
from constructs import Construct

from agent.roster import Roster, User
from agent.settings import PROVISIONER_POLICY, Settings, policy_name, role_name
from stacks.policies import provisioner_policy, user_policy

STACK_NAME = "vault"


def resource_id(user: str) -> str:
    """The Terraform name of a user's policy and role, stable across rosters.

    Derived from the user name alone, never from the roster's order, so that
    removing one user removes exactly their two resources and nobody else's.
    """
    return f"user_{user}"


class UserAccess(Construct):
    """One user's policy and the token role that mints tokens carrying only it."""

    def __init__(
        self, scope: Construct, user: User, settings: Settings, cidrs: tuple[str, ...]
    ) -> None:
        super().__init__(scope, resource_id(user.name))
        self.user = user

        self.policy = Policy(
            self,
            "policy",
            name=policy_name(user.name),
            policy=user_policy(settings, user.name),
        )
        self.policy.override_logical_id(resource_id(user.name))

        # No explicit max TTL: a periodic token lives as long as it is renewed
        # within each period. No default policy: it grants far more than the
        # agent needs; lookup-self and renew-self are in the user policy.
        self.role = TokenAuthBackendRole(
            self,
            "role",
            role_name=role_name(user.name),
            allowed_policies=[policy_name(user.name)],
            orphan=True,
            renewable=True,
            token_period=settings.token_period_seconds,
            token_type="service",  # noqa: S106  # a token kind, not a secret
            token_no_default_policy=True,
            token_bound_cidrs=list(cidrs) or None,
        )
        self.role.override_logical_id(resource_id(user.name))


class VaultStack(TerraformStack):
    """Every roster user's access, the provisioner's policy, and optionally the mount.

    ``users`` maps each user name to its ``UserAccess``, so that callers and
    tests can reach what was declared for a user.
    """

    def __init__(
        self,
        scope: Construct,
        roster: Roster,
        settings: Settings,
        name: str = STACK_NAME,
    ) -> None:
        super().__init__(scope, name)

        # The address is configuration; the token never is: the provider
        # reads VAULT_TOKEN from the environment of whoever applies.
        VaultProvider(self, "vault", address=settings.vault_addr or None)

        self.provisioner = Policy(
            self, "provisioner", name=PROVISIONER_POLICY, policy=provisioner_policy()
        )

        self.mount: KvSecretBackendV2 | None = None
        if settings.manage_mount:
            self.mount = KvSecretBackendV2(
                self,
                "kv_mount",
                mount=settings.kv_mount,
                max_versions=settings.kv_max_versions,
            )

        self.users = {
            user.name: UserAccess(
                self,
                user,
                settings,
                roster.bound_cidrs_for(user) or settings.token_bound_cidrs,
            )
            for user in roster
        }
