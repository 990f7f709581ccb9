"""The Vault policy documents of the product, as HCL text.

Kept apart from the cdktf stack so that it imports neither cdktf nor jsii:
unit tests read the exact text, and the tests that apply the stack to a real
server compare against it. Each document grants one path per stanza, so a
reviewer can read off everything a token may do.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.roster import Roster
from agent.settings import (
    NAME_PREFIX,
    Settings,
    policy_name,
    role_name,
)

#: What the agent does with its own data: write a backup (create the first
#: version, update later ones), read the latest copy back, and merge into it
#: with a PATCH so that keys other tools keep there are left alone.
DATA_CAPABILITIES = ("create", "read", "update", "patch")

#: Metadata: read it for ``vault kv metadata get``, update ``custom_metadata``
#: with non-secret audit facts. Never delete (that would destroy the history)
#: and never list (that would reveal who else has a path).
METADATA_CAPABILITIES = ("read", "update")


def _stanza(path: str, capabilities: Sequence[str], why: str) -> str:
    quoted = ", ".join(f'"{c}"' for c in capabilities)
    return f'# {why}\npath "{path}" {{\n  capabilities = [{quoted}]\n}}\n'


def user_policy(settings: Settings, user: str) -> str:
    """The policy of one user's renewal token: their own path and nothing else.

    ``user`` must already be a validated roster name: it is placed in the
    paths as it is, where a glob character would widen the grant.
    """
    return "\n".join(
        (
            _stanza(
                settings.data_path(user),
                DATA_CAPABILITIES,
                f"The Claude OAuth backup of {user}, and only theirs.",
            ),
            _stanza(
                settings.metadata_path(user),
                METADATA_CAPABILITIES,
                "Its version history and non-secret audit facts; no delete.",
            ),
            _stanza(
                "auth/token/lookup-self",
                ("read",),
                "The agent checks its own token before using it.",
            ),
            _stanza(
                "auth/token/renew-self",
                ("update",),
                "Every run renews the periodic token, or it would expire.",
            ),
        )
    )


def provisioner_policy() -> str:
    """The policy of the root provisioner on a workstation.

    It mints user tokens only through this product's token roles, whose
    allowed policies decide what a token gets; it manages tokens by accessor
    so that it never holds a user's token; it reads no secret at all.
    """
    roles = NAME_PREFIX + "*"
    return "\n".join(
        (
            _stanza(
                f"auth/token/create/{roles}",
                ("create", "update"),
                "Mint a user's token, only through that user's token role.",
            ),
            _stanza(
                f"auth/token/roles/{roles}",
                ("read",),
                "Confirm that a user's role exists before minting.",
            ),
            _stanza(
                "auth/token/lookup-accessor",
                ("update",),
                "Check a minted token by its accessor, without holding it.",
            ),
            _stanza(
                "auth/token/revoke-accessor",
                ("update",),
                "Revoke a user's old token by its accessor.",
            ),
        )
    )


def user_entries(
    roster: Roster, settings: Settings
) -> dict[str, dict[str, str | list[str]]]:
    """What the stack declares for each user, keyed by user name.

    Each entry has the policy's and the role's name, the policy text, and the
    networks the user's tokens are bound to: the user's own from the roster,
    else the roster's, else the settings'; empty means unbound.
    """
    return {
        user.name: {
            "policy_name": policy_name(user.name),
            "role_name": role_name(user.name),
            "policy": user_policy(settings, user.name),
            "token_bound_cidrs": list(
                roster.bound_cidrs_for(user) or settings.token_bound_cidrs
            ),
        }
        for user in roster
    }
