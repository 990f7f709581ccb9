"""A workstation for the agent's integration tests: OS users, homes, a leak watch.

The agent runs as the unit runs it: ``.venv/bin/claude-auth-sync run`` in a
child process, as a real OS user (the user name decides which Vault token is
this user's, and ``root`` is never a roster user), with ``HOME`` in a
temporary directory. Every output of every run is kept, with every token a
test used, so that one check can say whether any secret got out.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest

from agent.settings import DEFAULT_KV_MOUNT, Settings, state_dir, token_file
from tests.support.components import REPO, in_ci
from tests.support.openbao import OpenBao
from tests.support.vault_stack import mint_user_token

AGENT = REPO / ".venv" / "bin" / "claude-auth-sync"
FAKE_CLAUDE = REPO / "tests" / "support" / "fake_claude.py"
USERS = {"agent-alice": "alice@corp.example", "agent-bob": "bob@corp.example"}
ROSTER = "users:\n" + "".join(f"  {u}: {{email: {e}}}\n" for u, e in USERS.items())
DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def oauth(
    tag: str, expires_in_days: float = 0.3, login_days: float = 25
) -> dict[str, Any]:
    """A ``claudeAiOauth`` object shaped as Claude writes it, with fresh tokens."""
    return {
        "accessToken": f"sk-ant-oat01-{tag}-{secrets.token_urlsafe(24)}",
        "refreshToken": f"sk-ant-ort01-{tag}-{secrets.token_urlsafe(24)}",
        "expiresAt": now_ms() + int(expires_in_days * DAY_MS),
        "refreshTokenExpiresAt": now_ms() + int(login_days * DAY_MS),
        "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
        "subscriptionType": "enterprise",
    }


MCP_OAUTH = {
    "github|4f2a": {
        "serverName": "github",
        "serverUrl": "https://mcp.example.com/github",
        "accessToken": "mcp-access-kept-at-home",
        "refreshToken": "mcp-refresh-kept-at-home",
        "expiresAt": 1_900_000_000_000,
        "scope": "repo read:org",
    }
}


@dataclass
class LeakWatch:
    """Every secret the suite used, and every text the agent produced."""

    secrets: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def secret(self, *values: str) -> None:
        self.secrets.update(v for v in values if v)

    def oauth(self, login: dict[str, Any]) -> dict[str, Any]:
        self.secret(login["accessToken"], login["refreshToken"])
        return login

    def seen(self, label: str, text: str) -> None:
        self.texts.append((label, text))

    def leaks(self, since: int = 0) -> list[str]:
        """``label: token prefix`` for every secret found in the texts kept
        since the ``since``-th one."""
        return [
            f"{label}: {secret[:16]}..."
            for label, text in self.texts[since:]
            for secret in self.secrets
            if secret in text
        ]


#: One watch for the whole session: a token from any test, in any output.
LEAKS = LeakWatch()


@dataclass
class Workstation:
    """One OS user's home with the agent's inputs, and a way to run it."""

    user: str
    uid: int
    gid: int
    home: Path
    env: dict[str, str]
    vault: OpenBao

    @property
    def credentials_path(self) -> Path:
        return self.home / ".claude" / ".credentials.json"

    @property
    def token_path(self) -> Path:
        return Path(token_file(self.home))

    @property
    def state_dir(self) -> Path:
        return Path(state_dir(self.home))

    def own(self, path: Path, mode: int) -> None:
        os.chown(path, self.uid, self.gid)
        path.chmod(mode)

    def write(self, path: Path, text: str, mode: int = 0o600) -> None:
        """Write a file the user owns, creating the user's folders on the way."""
        for parent in reversed(path.relative_to(self.home).parents[:-1]):
            folder = self.home / parent
            folder.mkdir(exist_ok=True)
            self.own(folder, 0o700)
        path.write_text(text)
        self.own(path, mode)

    def mint_token(self) -> str:
        """A token minted through this user's role, written where the agent reads it."""
        token = mint_user_token(self.vault.client(), self.user)
        LEAKS.secret(token)
        self.write(self.token_path, token + "\n")
        return token

    def write_credentials(self, login: dict[str, Any] | None, **others: Any) -> None:
        data = {"claudeAiOauth": LEAKS.oauth(login)} if login else {}
        data.update(others)
        self.write(self.credentials_path, json.dumps(data))

    def credentials(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.credentials_path.read_text())
        return data

    def stored(self) -> dict[str, Any] | None:
        """The latest data at the user's Vault path, read with the root token."""
        try:
            answer = self.vault.client().secrets.kv.v2.read_secret_version(
                path=Settings().secret_path(self.user),
                mount_point=DEFAULT_KV_MOUNT,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            return None
        data: dict[str, Any] = answer["data"]["data"]
        return data

    def store(self, data: dict[str, Any]) -> None:
        """Put a copy in Vault as an earlier run (or another tool) would have."""
        if "claudeAiOauth" in data:
            LEAKS.oauth(data["claudeAiOauth"])
        self.vault.client().secrets.kv.v2.create_or_update_secret(
            path=Settings().secret_path(self.user), secret=data,
            mount_point=DEFAULT_KV_MOUNT,
        )  # fmt: skip

    def fake_claude(self, modes: list[str], **plan: Any) -> Path:
        """Use the fake CLI with this plan; returns the file of its recorded calls."""
        folder = self.home / "fake-claude"
        folder.mkdir(exist_ok=True)
        self.own(folder, 0o700)
        calls = folder / "calls.jsonl"
        self.write(
            folder / "plan.json",
            json.dumps({"modes": modes, "calls": str(calls), **plan}),
        )
        for login in ("rotate_to", "refresh_to"):
            if login in plan:
                LEAKS.secret(
                    plan[login].get("accessToken", ""),
                    plan[login].get("refreshToken", ""),
                )
        self.env.update(
            CLAUDE_BIN=str(FAKE_CLAUDE), FAKE_CLAUDE_PLAN=str(folder / "plan.json")
        )
        return calls

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run the agent as this user, keeping its output for the leak check."""
        done = subprocess.run(
            [str(AGENT), *(args or ("run",))],
            env={**self.env, **extra_env},
            cwd=self.home,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        LEAKS.seen(f"{self.user} {args} stdout", done.stdout)
        LEAKS.seen(f"{self.user} {args} stderr", done.stderr)
        for name in ("sync.log", "status.json"):
            if (self.state_dir / name).exists():
                LEAKS.seen(f"{self.user} {name}", (self.state_dir / name).read_text())
        return done

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "status.json").read_text())
        return data


def lines(done: subprocess.CompletedProcess[str], status: str) -> list[str]:
    """The agent's stdout lines with this status."""
    return [
        line
        for line in done.stdout.splitlines()
        if line.startswith(f"status={status} ")
    ]


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    message = "the agent tests create OS users and run the agent as them: run as root"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@contextmanager
def os_account(name: str) -> Iterator[pwd.struct_passwd]:
    """An OS account without login or home to run the agent as (root only).

    Created when missing and then removed again; an existing one is left be.
    """
    try:
        yield pwd.getpwnam(name)
        return
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--user-group", name],
        check=True,
    )  # fmt: skip
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="session")
def agent_users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """The test users as real OS accounts, created for the session if missing."""
    _require_root()
    with ExitStack() as stack:
        yield {user: stack.enter_context(os_account(user)) for user in USERS}


@pytest.fixture(scope="session")
def homes() -> Iterator[Path]:
    """A folder the test users can pass through to their own homes."""
    base = Path(tempfile.mkdtemp(prefix="agent-homes-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workstation_for(
    agent_users: dict[str, pwd.struct_passwd],
    homes: Path,
    apply_roster: Callable[..., Path],
    openbao: OpenBao,
    tmp_path: Path,
) -> Iterator[Callable[[str], Workstation]]:
    """Make a workstation for a test user, with the stack applied to OpenBao.

    After the test, every output so far is scanned for every token so far.
    """
    apply_roster(ROSTER)
    roster = homes / f"roster-{tmp_path.name}.yaml"
    roster.write_text(ROSTER)
    roster.chmod(0o644)

    first_text = len(LEAKS.texts)

    def make(user: str) -> Workstation:
        entry = agent_users[user]
        home = homes / f"{tmp_path.name}-{user}"
        home.mkdir()
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o700)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "VAULT_ADDR": openbao.addr,
            "CLAUDE_AUTH_SYNC_ROSTER": str(roster),
            "CLAUDE_AUTH_SYNC_PROBE_TIMEOUT": "20",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        return Workstation(user, entry.pw_uid, entry.pw_gid, home, env, openbao)

    yield make
    found = LEAKS.leaks(since=first_text)
    assert not found, f"secrets found in the agent's output: {found}"
