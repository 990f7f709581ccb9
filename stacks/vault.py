"""The Vault stack: one policy and one token role per roster user, declared.

The stack is a thin layer over the validated roster: everything it says is
decided by ``agent.roster`` (who), ``agent.settings`` (where, how long) and
``stacks.policies`` (what a token may do). What it writes is plain Terraform
JSON, which ``terraform`` or ``tofu`` can apply without cdktf.

Each user's policy and role are instances of one ``for_each`` resource keyed
by the user name (``vault_policy.user["alice"]``), over a local map that holds
each user's names and policy text. The addresses depend on the name alone, so
removing one user removes exactly their two instances. One resource per kind,
rather than one per user, is what keeps synthesis fast: every construct costs
a round trip from Python to cdktf's Node process, and 10,000 users made as
20,000 constructs took half a minute (see docs/benchmarks.md).

It declares no KV data on purpose: the agent alone writes a user's backup,
and a placeholder written at apply time would become the "latest copy" that a
restore reads. Removing a user leaves their stored data alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cdktf import TerraformIterator, TerraformLocal, TerraformStack
from cdktf_cdktf_provider_vault.kv_secret_backend_v2 import KvSecretBackendV2
from cdktf_cdktf_provider_vault.policy import Policy
from cdktf_cdktf_provider_vault.provider import VaultProvider
from cdktf_cdktf_provider_vault.token_auth_backend_role import TokenAuthBackendRole
from constructs import Construct

from agent.roster import Roster
from agent.settings import PROVISIONER_POLICY, Settings
from stacks.alert_delivery import AlertRules
from stacks.alerts import AlertSettings, DeliverySettings
from stacks.policies import provisioner_policy, user_entries

STACK_NAME = "vault"

#: The Terraform name of the per-user policy and role resources, and of the
#: local map they iterate over.
USER_RESOURCE = "user"
USERS_LOCAL = "users"


@dataclass(frozen=True)
class ProviderConnection:
    """How the Vault provider reaches Vault, besides its address.

    From the same variables the agent and the Vault CLI read, at synthesis
    time: ``VAULT_CACERT`` and ``VAULT_CAPATH`` for a private CA, and
    ``VAULT_NAMESPACE`` for a Vault Enterprise or OpenBao namespace. Unset
    ones stay out of the provider block. The token never comes in here.
    """

    ca_cert_file: str | None = None
    ca_cert_dir: str | None = None
    namespace: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProviderConnection:
        env = os.environ if environ is None else environ
        return cls(
            ca_cert_file=env.get("VAULT_CACERT", "").strip() or None,
            ca_cert_dir=env.get("VAULT_CAPATH", "").strip() or None,
            namespace=env.get("VAULT_NAMESPACE", "").strip().strip("/") or None,
        )


class UserAccess(Construct):
    """Every roster user's policy, and the token role minting tokens with only it.

    ``entries`` is what was declared for each user, by user name; ``policies``
    and ``roles`` are the two ``for_each`` resources.
    """

    def __init__(self, scope: Construct, roster: Roster, settings: Settings) -> None:
        super().__init__(scope, "user_access")
        self.entries = user_entries(roster, settings)

        users = TerraformLocal(self, USERS_LOCAL, self.entries)
        users.override_logical_id(USERS_LOCAL)
        each = TerraformIterator.from_map(users.as_any_map)

        self.policies = Policy(
            self,
            "policy",
            for_each=each,
            name=each.get_string("policy_name"),
            policy=each.get_string("policy"),
        )
        self.policies.override_logical_id(USER_RESOURCE)

        # No explicit max TTL: a periodic token lives as long as it is renewed
        # within each period. No default policy: it grants far more than the
        # agent needs; lookup-self and renew-self are in the user policy.
        self.roles = TokenAuthBackendRole(
            self,
            "role",
            for_each=each,
            role_name=each.get_string("role_name"),
            allowed_policies=[each.get_string("policy_name")],
            orphan=True,
            renewable=True,
            token_period=settings.token_period_seconds,
            token_type="service",  # noqa: S106  # a token kind, not a secret
            token_no_default_policy=True,
            token_bound_cidrs=each.get_list("token_bound_cidrs"),
        )
        self.roles.override_logical_id(USER_RESOURCE)


class VaultStack(TerraformStack):
    """The users' access, the provisioner's policy, optionally the KV mount, and
    the Loki alert rules that watch the same roster.

    The rules live in this stack rather than one of their own so that a single
    ``cdktf deploy`` keeps Vault and alerting in step with the roster. Alert
    and delivery settings, and the provider's connection, default to what the
    environment says.
    """

    def __init__(
        self,
        scope: Construct,
        roster: Roster,
        settings: Settings,
        name: str = STACK_NAME,
        *,
        alerts: AlertSettings | None = None,
        delivery: DeliverySettings | None = None,
        connection: ProviderConnection | None = None,
    ) -> None:
        super().__init__(scope, name)

        # The address, CA and namespace are configuration; the token never
        # is: the provider reads VAULT_TOKEN from the environment of whoever
        # applies.
        connection = connection or ProviderConnection.from_env()
        VaultProvider(
            self,
            "vault",
            address=settings.vault_addr or None,
            ca_cert_file=connection.ca_cert_file,
            ca_cert_dir=connection.ca_cert_dir,
            namespace=connection.namespace,
        )

        self.users = UserAccess(self, roster, settings)
        self.provisioner = Policy(
            self, "provisioner", name=PROVISIONER_POLICY, policy=provisioner_policy()
        )

        # Only the mount's settings: the mount itself, and the data in it,
        # belong to whoever runs Vault.
        self.mount: KvSecretBackendV2 | None = None
        if settings.manage_mount:
            self.mount = KvSecretBackendV2(
                self,
                "kv_mount",
                mount=settings.kv_mount,
                max_versions=settings.kv_max_versions,
            )

        self.alert_rules = AlertRules(
            self,
            "alert_rules",
            roster=roster,
            alerts=alerts or AlertSettings.from_env(),
            delivery=delivery or DeliverySettings.from_env(),
        )
