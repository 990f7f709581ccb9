"""The renewal agent's part of ``make demo``: one user's login, through its life.

After the isolation steps, one user is walked through what the timer would
see: a valid login (``OK``, backed up), the local login blanked by a failed
refresh (``RECOVERED`` from Vault), and the login revoked by the provider
(``FAIL sso_required``). Each time the demo prints what the operator sees
(the journal line, the Vault metadata) and what the user sees
(``claude-auth-sync status``). The real Claude CLI is used when it is
installed under tests/node, against a local Messages API stub; otherwise the
test suite's fake ``claude``.

The agent runs as a real OS user, as its unit does. As root, the demo uses a
temporary account ``claude-demo`` (created and removed again); otherwise it
runs as the invoking user. No token is printed.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.settings import DEFAULT_KV_MOUNT, state_dir, token_file
from tests.support.agent_host import os_account
from tests.support.api_stub import ApiStub, api_stub
from tests.support.components import REPO, claude_binary
from tests.support.vault_stack import apply_stack, mint_user_token, synthesize
from tools.demo import ROSTER, Demo, DemoError, step

AGENT = REPO / ".venv" / "bin" / "claude-auth-sync"
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"
DEMO_ACCOUNT = "claude-demo"
DEMO_EMAIL = "demo.user@corp.example"


@dataclass
class Person:
    """The demo user: their account, home, and how the agent is run for them."""

    name: str
    uid: int
    gid: int
    home: Path
    env: dict[str, str]

    def write(self, path: Path, text: str, mode: int = 0o600) -> None:
        """Write a file in the home, owned by the person, as theirs would be."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(text)
        path.chmod(mode)
        folders = path.relative_to(self.home).parents
        for item in [path, *(self.home / folder for folder in folders)]:
            os.chown(item, self.uid, self.gid)

    def agent(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the agent as the person (switching to them when run as root)."""
        switch = os.geteuid() != self.uid
        return subprocess.run(
            [str(AGENT), *args], env=self.env, cwd=self.home, capture_output=True,
            text=True, timeout=120, check=False,
            user=self.uid if switch else None, group=self.gid if switch else None,
        )  # fmt: skip


@contextmanager
def demo_account() -> Iterator[pwd.struct_passwd]:
    """The invoking user, or as root a temporary account removed afterwards."""
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.geteuid())
        return
    with os_account(DEMO_ACCOUNT) as entry:
        yield entry


def login(tag: str) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "accessToken": f"sk-ant-oat01-demo-{tag}-{secrets.token_urlsafe(16)}",
        "refreshToken": f"sk-ant-ort01-demo-{tag}-{secrets.token_urlsafe(16)}",
        "expiresAt": now + 8 * 3_600_000,
        "refreshTokenExpiresAt": now + 25 * 86_400_000,
        "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "enterprise",
    }


def walk_lifecycle(demo: Demo, stack: ExitStack) -> None:
    """OK, then a blanked local login RECOVERED, then a revoked login FAIL."""
    account = stack.enter_context(demo_account())
    person = _set_up(demo, stack, account)
    api = stack.enter_context(api_stub())
    uses_real_cli = _choose_claude(person, api)

    step(f"{person.name}: a valid login ({'real' if uses_real_cli else 'fake'} claude)")
    first = login("first")
    _credentials(person, first)
    _accept(person, api, first)
    _show_run(demo, person, expected="OK")

    step(f"{person.name}: a failed refresh blanked the local login")
    blank = {**first, "accessToken": "", "refreshToken": "", "expiresAt": 0}
    _credentials(person, blank)
    _show_run(demo, person, expected="RECOVERED")
    kept = json.loads((person.home / ".claude" / ".credentials.json").read_text())
    print(f"  mcpOAuth servers still in the file: {', '.join(kept['mcpOAuth'])}")

    step(f"{person.name}: the provider revoked the login; only a person can help")
    _accept(person, api)
    _show_run(demo, person, expected="FAIL")
    _show_status(person)


def _set_up(demo: Demo, stack: ExitStack, account: pwd.struct_passwd) -> Person:
    """Apply the stack with this user added, mint their token, make their home."""
    if demo.server is None:
        raise DemoError("No OpenBao is running; the server step comes first.")
    step(f"Adding {account.pw_name} to the roster and minting their token")
    roster = yaml.safe_load(ROSTER.read_text(encoding="utf-8"))
    roster["users"][account.pw_name] = {"email": DEMO_EMAIL}
    roster_text = yaml.safe_dump(roster)
    tf_json = synthesize(roster_text, demo.workdir / "cdktf-agent.out")
    apply_stack(demo.client(), tf_json)
    token = mint_user_token(demo.client(), account.pw_name)

    base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="demo-home-")))
    base.chmod(0o711)
    home = base / account.pw_name
    home.mkdir(mode=0o700)
    os.chown(home, account.pw_uid, account.pw_gid)
    roster_file = base / "roster.yaml"
    roster_file.write_text(roster_text)
    roster_file.chmod(0o644)
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
        "CLAUDE_AUTH_SYNC_ROSTER": str(roster_file),
        "VAULT_ADDR": demo.server.addr, "CLAUDE_AUTH_SYNC_PROBE_TIMEOUT": "30",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }  # fmt: skip
    person = Person(account.pw_name, account.pw_uid, account.pw_gid, home, env)
    person.write(Path(token_file(home)), token + "\n")
    print(f"  token at ~/{Path(token_file(home)).relative_to(home)} (mode 600)")
    return person


def _choose_claude(person: Person, api: ApiStub) -> bool:
    real = claude_binary()
    if real is not None:
        person.env.update(CLAUDE_BIN=str(real), ANTHROPIC_BASE_URL=api.base_url)
        return True
    plan = person.home / ".demo-claude-plan.json"
    person.env.update(CLAUDE_BIN=str(FAKE_CLAUDE), FAKE_CLAUDE_PLAN=str(plan))
    return False


def _accept(person: Person, api: ApiStub, *logins: dict[str, Any]) -> None:
    """Make the API accept exactly these logins (none: the login was revoked)."""
    api.behaviour.accepted = {item["accessToken"] for item in logins}
    if "FAKE_CLAUDE_PLAN" in person.env:
        plan = {"modes": ["api"], "accepted": sorted(api.behaviour.accepted)}
        person.write(Path(person.env["FAKE_CLAUDE_PLAN"]), json.dumps(plan))


def _credentials(person: Person, oauth: dict[str, Any]) -> None:
    mcp = {"github|demo": {"serverName": "github", "accessToken": "stays-home"}}
    data = {"claudeAiOauth": oauth, "mcpOAuth": mcp}
    person.write(person.home / ".claude" / ".credentials.json", json.dumps(data))


def _show_run(demo: Demo, person: Person, expected: str) -> None:
    """Run the agent as the unit would, and show both audiences what it did."""
    print(f"  $ systemctl start claude-auth-sync@{person.name}.service   (here: "
          "claude-auth-sync run)")  # fmt: skip
    done = person.agent("run")
    print(f"  exit code {done.returncode}; the operator's journal line:")
    for line in done.stdout.splitlines():
        print(f"    {line}")
    if not done.stdout.startswith(f"status={expected} "):
        demo.surprises += 1
        print(f"    <-- UNEXPECTED: wanted {expected}")
        if done.stderr:
            print(f"    stderr: {done.stderr.strip()[-500:]}")

    metadata = demo.client().secrets.kv.v2.read_secret_metadata(
        path=demo.settings.secret_path(person.name), mount_point=DEFAULT_KV_MOUNT
    )["data"]
    facts = metadata.get("custom_metadata") or {}
    where = f"{DEFAULT_KV_MOUNT}/{demo.settings.secret_path(person.name)}"
    print(
        f"  vault kv metadata get {where}: version {metadata['current_version']}, "
        f"last verified {facts.get('last_verified', '-')}, refresh token "
        f"fingerprint {facts.get('refresh_token_sha256', '-')}"
    )


def _show_status(person: Person) -> None:
    step(f"What {person.name} sees: claude-auth-sync status")
    shown = person.agent("status")
    for line in shown.stdout.splitlines():
        print(f"  {line}")
    log = Path(state_dir(person.home)) / "sync.log"
    print(f"  ({log.name} holds {len(log.read_text().splitlines())} lines)")
