"""Synthesize the Vault stack and apply it to a real OpenBao, for the tests.

No Terraform binary can run here, so ``apply_stack`` plays Terraform's part
for the few resource types the stack declares: each ``vault_policy`` and
``vault_token_auth_backend_role`` instance in ``cdk.tf.json`` becomes the same
Vault API call the provider would make (``stacks.terraform_json`` expands the
stack's ``for_each`` into those instances). A resource type without a
translation is refused, so a new construct in the stack cannot slip past the
tests untranslated.

Synthesis starts Node and costs seconds, so its output is cached per roster
text and settings for the whole test session.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hvac

from agent.settings import NAME_PREFIX, role_name, token_display_name
from stacks.terraform_json import instances
from tests.support.components import REPO

STACK_JSON = Path("stacks") / "vault" / "cdk.tf.json"

# Synthesized JSON by (roster text, settings), shared by every test.
_synthesized: dict[str, bytes] = {}


class StackError(RuntimeError):
    """Synthesis failed, or the JSON holds something this translation lacks."""


def _roster_text(roster: str | Path) -> str:
    if isinstance(roster, Path) or ("\n" not in roster and Path(roster).is_file()):
        return Path(roster).read_text(encoding="utf-8")
    return roster


def synthesize(
    roster: str | Path, outdir: Path, settings_env: Mapping[str, str] | None = None
) -> Path:
    """Run ``main.py`` for a roster (a path or its YAML text); return cdk.tf.json.

    ``settings_env`` adds ``CLAUDE_AUTH_SYNC_*`` settings for the synthesis.
    Raises ``StackError`` with the synthesis output when it fails.
    """
    text = _roster_text(roster)
    extra = dict(settings_env or {})
    key = hashlib.sha256(json.dumps([text, sorted(extra.items())]).encode()).hexdigest()
    target = outdir / STACK_JSON
    target.parent.mkdir(parents=True, exist_ok=True)

    if key not in _synthesized:
        _synthesized[key] = _run_synthesis(text, outdir, extra)
    target.write_bytes(_synthesized[key])
    return target


def _run_synthesis(text: str, outdir: Path, extra: dict[str, str]) -> bytes:
    roster_file = outdir / "roster.yaml"
    roster_file.write_text(text, encoding="utf-8")
    # A clean environment: no Vault address or token of the caller's leaks in.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "ROSTER": str(roster_file),
        "CDKTF_OUTDIR": str(outdir),
        **extra,
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "main.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(
            f"main.py exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return (outdir / STACK_JSON).read_bytes()


def declared(tf_json: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every resource instance the stack declares: type -> address -> arguments."""
    return instances(json.loads(tf_json.read_text(encoding="utf-8")))


def apply_stack(client: hvac.Client, tf_json: Path) -> None:
    """Make the server match the stack, as ``terraform apply`` would.

    Terraform also destroys what its state holds but the JSON no longer
    declares; without a state file, every policy and role of this product's
    name prefix that the JSON lacks stands for that. Stored KV data is never
    touched, as Terraform would not touch it either.
    """
    resources = declared(tf_json)
    unknown = set(resources) - {
        "vault_policy",
        "vault_token_auth_backend_role",
        "vault_kv_secret_backend_v2",
        # The alert rules go to Loki, not Vault: nothing to translate for them.
        "local_file",
        "kubernetes_config_map_v1",
    }
    if unknown:
        raise StackError(f"{tf_json} declares {sorted(unknown)}, not translated here")

    for mount in resources.get("vault_kv_secret_backend_v2", {}).values():
        settings = {k: v for k, v in mount.items() if k != "mount"}
        client.write_data(f"{mount['mount']}/config", data=settings)
    policies = list(resources.get("vault_policy", {}).values())
    roles = list(resources.get("vault_token_auth_backend_role", {}).values())
    for policy in policies:
        client.sys.create_or_update_acl_policy(policy["name"], policy["policy"])
    for role in roles:
        settings = {k: v for k, v in role.items() if k != "role_name"}
        client.write_data(f"auth/token/roles/{role['role_name']}", data=settings)

    _remove_undeclared(
        client, {p["name"] for p in policies}, {r["role_name"] for r in roles}
    )


def _remove_undeclared(
    client: hvac.Client, policies: set[str], roles: set[str]
) -> None:
    for name in client.sys.list_acl_policies()["data"]["keys"]:
        if name.startswith(NAME_PREFIX) and name not in policies:
            client.sys.delete_acl_policy(name)
    listed = client.list("auth/token/roles")
    for name in listed["data"]["keys"] if listed else []:
        if name.startswith(NAME_PREFIX) and name not in roles:
            client.delete(f"auth/token/roles/{name}")


def mint_user_token(client: hvac.Client, user: str) -> str:
    """Mint a user's periodic token through their role, as the provisioner does.

    ``client`` is whoever mints (root, or a token with the provisioner
    policy); a denial raises ``hvac.exceptions.Forbidden``.
    """
    response = client.write_data(
        f"auth/token/create/{role_name(user)}",
        data={"display_name": token_display_name(user)},
    )
    token: str = response["auth"]["client_token"]
    return token


_STANZA = re.compile(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}')


def grants(policy: str) -> dict[str, set[str]]:
    """What an HCL policy document allows: path -> capabilities.

    Only the one-stanza-per-path form that ``stacks.policies`` writes.
    """
    return {
        path: {c.strip().strip('"') for c in capabilities.split(",") if c.strip()}
        for path, capabilities in _STANZA.findall(policy)
    }
