"""A workstation for the agent's integration tests: OS users, homes, a leak watch.

The agent runs as the unit runs it: ``.venv/bin/claude-auth-sync run`` in a
child process, as a real OS user (the user name decides which Vault token is
this user's, and ``root`` is never a roster user), with ``HOME`` in a
temporary directory. Every output of every run is kept, with every token a
test used, so that one check can say whether any secret got out.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest

from agent.provision import Account, Outcome, Provisioner
from agent.roster import parse_roster
from agent.settings import DEFAULT_KV_MOUNT, Settings, state_dir, token_file
from agent.systemd import Systemctl
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
        """Watch a login's tokens; a malformed one has what text it has."""
        tokens = (login.get("accessToken"), login.get("refreshToken"))
        self.secret(*(token for token in tokens if isinstance(token, str)))
        return login

    def seen(self, label: str, text: str) -> None:
        self.texts.append((label, text))

    def leaks(self, since: int = 0) -> list[str]:
        """``label: token prefix`` for every secret found in the texts kept
        since the ``since``-th one."""
        texts = self.texts[since:]
        # One search per secret through all the texts at once; only a hit is
        # looked for text by text (a session keeps thousands of both).
        joined = "\0".join(text for _, text in texts)
        return [
            f"{label}: {secret[:16]}..."
            for secret in self.secrets
            if secret in joined
            for label, text in texts
            if secret in text
        ]


#: One watch for the whole session: a token from any test, in any output.
LEAKS = LeakWatch()
SAMPLER = Path(__file__).with_name("proc_sampler.py")
#: How often every process's arguments are read: an agent run lasts about
#: 200 ms and a probe about 30, so each is seen many times.
SAMPLE_INTERVAL_SECONDS = 0.005


@dataclass
class ProcessWatch:
    """The sampler of ``/proc`` that runs beside the whole test session."""

    out: Path
    child: subprocess.Popen[bytes] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        # Made here, not by the sampler: a session shorter than the sampler's
        # start-up would otherwise stop it before it wrote anything.
        self.out.touch()
        self.child = subprocess.Popen(
            [sys.executable, str(SAMPLER), str(self.out), str(SAMPLE_INTERVAL_SECONDS)]
        )

    def samples(self) -> list[tuple[str, str]]:
        """Every distinct command line and environment seen so far."""
        found = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["kind"] == "counts":
                self.counts = {k: v for k, v in record.items() if k != "kind"}
            else:
                found.append((record["kind"], record["text"]))
        return found

    def stop(self) -> list[tuple[str, str]]:
        """Stop sampling and return everything it saw."""
        if self.child is not None:
            self.child.terminate()
            self.child.wait(timeout=30)
        found = self.samples()
        self.out.unlink()
        return found


#: The session's watch; its counts are reported at the end of the run.
PROCESSES = ProcessWatch(Path())


@pytest.fixture(scope="session", autouse=True)
def watch_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Sample every process's arguments all session; no token may show up there.

    Also checks, once more, every output that the session kept against every
    token that any test used, including tokens first used after the output.
    """
    if not Path("/proc/self/cmdline").is_file():
        yield
        return
    PROCESSES.out = tmp_path_factory.mktemp("process-watch") / "samples.jsonl"
    PROCESSES.start()
    yield
    for kind, text in PROCESSES.stop():
        LEAKS.seen(f"a process's {kind}", text)
    found = LEAKS.leaks()
    assert not found, f"secrets found in the session's processes or output: {found}"


@dataclass(frozen=True)
class FileState:
    """A file as a person comparing before and after would see it."""

    content: bytes
    inode: int
    mtime_ns: int
    mode: int
    owner: int


def file_state(path: Path) -> FileState:
    """The content, inode, modification time, mode and owner, without following."""
    info = path.lstat()
    content = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
    return FileState(
        content, info.st_ino, info.st_mtime_ns, stat.S_IMODE(info.st_mode), info.st_uid
    )


@dataclass
class Workstation:
    """One OS user's home with the agent's inputs, and a way to run it."""

    user: str
    uid: int
    gid: int
    home: Path
    env: dict[str, str]
    vault: OpenBao

    @classmethod
    def create(
        cls, entry: pwd.struct_passwd, home: Path, vault: OpenBao, roster: Path
    ) -> Workstation:
        """A new empty home for the account, and the environment its unit sets."""
        home.mkdir()
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o700)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "VAULT_ADDR": vault.addr,
            "CLAUDE_AUTH_SYNC_ROSTER": str(roster),
            "CLAUDE_AUTH_SYNC_PROBE_TIMEOUT": "20",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, home, env, vault)

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
        if isinstance(data.get("claudeAiOauth"), dict):
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
        return self.collect(self.start(*args, **extra_env))

    def start(
        self, *args: str, hostname: str = "", **extra_env: str
    ) -> subprocess.Popen[str]:
        """Start the agent as this user in a session of its own, and return.

        ``hostname`` runs it in a UTS namespace of its own under that host
        name, as on another workstation. Killing the session's group ends the
        agent and its probe together, as systemd ends a unit's processes.
        """
        command = [str(AGENT), *(args or ("run",))]
        ids: dict[str, Any] = {"user": self.uid, "group": self.gid}
        if hostname:
            command = [
                "unshare", "--uts", "/bin/sh", "-c", 'hostname "$1" && shift && '
                'exec "$@"', "sh", hostname, "setpriv", f"--reuid={self.uid}",
                f"--regid={self.gid}", "--clear-groups", "--", *command,
            ]  # fmt: skip
            ids = {}
        return subprocess.Popen(
            command,
            env={**self.env, **extra_env},
            cwd=self.home,
            extra_groups=[] if ids else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **ids,
        )

    def collect(
        self, child: subprocess.Popen[str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Wait for a started agent; keep its output and files for the leak check."""
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            stdout, stderr = child.communicate()
        label = " ".join(map(str, child.args[-1:]))
        LEAKS.seen(f"{self.user} {label} stdout", stdout)
        LEAKS.seen(f"{self.user} {label} stderr", stderr)
        for name in ("sync.log", "status.json"):
            if (self.state_dir / name).exists():
                LEAKS.seen(f"{self.user} {name}", (self.state_dir / name).read_text())
        return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)

    def provision(self, work: Path, addr: str = "") -> Outcome:
        """Run the root provisioner with the admin token for this user alone.

        As the runbook's fix for a dead or missing token; ``work`` holds the
        drop-ins it writes, and systemd is taken as not running.
        """
        addr = addr or self.vault.addr
        account = Account(self.user, self.uid, self.gid, self.home)
        [outcome] = Provisioner(
            Settings(vault_addr=addr),
            parse_roster(ROSTER),
            {"VAULT_ADDR": addr},
            admin_token=self.vault.root_token,
            systemctl=Systemctl(run_dir=work / "no-systemd"),
            unit_dir=work / "units",
            accounts={self.user: account}.get,
        ).run()[:1]
        if self.token_path.is_file() and not self.token_path.is_symlink():
            LEAKS.secret(self.token_path.read_text().strip())
        return outcome

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


def only_line(
    done: subprocess.CompletedProcess[str], status: str, reason: str, code: int
) -> str:
    """The run's single line, with this status, reason and exit code.

    A fault must give exactly one line, and no traceback.
    """
    assert "Traceback" not in done.stderr, done.stderr
    output = done.stdout.splitlines()
    assert len(output) == 1, done.stdout + done.stderr
    assert output[0].startswith(f"status={status} "), output[0]
    assert f" reason={reason} " in output[0], output[0]
    assert done.returncode == code, output[0]
    return output[0]


def stage_restore(station: Workstation) -> dict[str, Any]:
    """A rejected local login beside MCP state, and a newer good copy in Vault.

    The fake claude accepts only the Vault copy, so a healthy run restores it
    and ends RECOVERED. Returns that copy.
    """
    good = oauth("vault-copy", expires_in_days=0.4)
    station.store({"claudeAiOauth": good})
    spent = oauth("local-spent", expires_in_days=0.1)
    station.write_credentials(spent, mcpOAuth=MCP_OAUTH, organizationUuid="org-1")
    station.fake_claude(["api"], accepted=[good["accessToken"]])
    return good


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


PASSWD = Path("/etc/passwd")
#: Marks the accounts ``many_accounts`` adds, so a run that died cannot leave
#: them behind for good: the next one removes them first.
BULK_MARK = "claude-auth-sync test account"
BULK_FIRST_UID = 2_100_000
NOGROUP = 65534


@contextmanager
def many_accounts(prefix: str, count: int) -> Iterator[list[pwd.struct_passwd]]:
    """``count`` OS accounts named ``<prefix>0001``... for the block (root only).

    ``useradd`` takes 25 ms or more per account, and ``userdel`` longer as
    the database grows: 500 accounts would cost most of a minute. These are
    added to ``/etc/passwd`` in one atomic rewrite under the database's own
    lock (``lckpwdf``) and removed the same way. They have no password, no
    home, no group of their own (``nogroup``) and uids far above any real
    account's.
    """
    names = [f"{prefix}{n:04d}" for n in range(1, count + 1)]
    taken = {entry.pw_name for entry in pwd.getpwall()} & set(names)
    if taken:
        raise RuntimeError(f"accounts already exist: {sorted(taken)[:5]}")
    entries = [
        f"{name}:*:{BULK_FIRST_UID + n}:{NOGROUP}:{BULK_MARK}:/nonexistent:"
        "/usr/sbin/nologin"
        for n, name in enumerate(names)
    ]
    _rewrite_passwd(entries)
    try:
        yield [pwd.getpwnam(name) for name in names]
    finally:
        _rewrite_passwd([])


def _rewrite_passwd(added: list[str]) -> None:
    """Drop every account this module added, then add ``added``, atomically."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.lckpwdf() != 0:
        raise OSError(ctypes.get_errno(), "cannot lock the user database")
    try:
        kept = [
            line
            for line in PASSWD.read_text(encoding="utf-8").splitlines()
            if line.split(":")[4:5] != [BULK_MARK]
        ]
        tmp = PASSWD.with_name(".passwd.claude-auth-sync-tests")
        tmp.write_text("\n".join(kept + added) + "\n", encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, PASSWD)
    finally:
        libc.ulckpwdf()


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
) -> Iterator[Callable[..., Workstation]]:
    """Make a workstation for a test user, with the stack applied to OpenBao.

    After the test, every output so far is scanned for every token so far.
    """
    apply_roster(ROSTER)
    roster = homes / f"roster-{tmp_path.name}.yaml"
    roster.write_text(ROSTER)
    roster.chmod(0o644)

    first_text = len(LEAKS.texts)

    def make(user: str, tag: str = "") -> Workstation:
        """``tag`` tells apart several homes of one user (several hosts)."""
        entry = agent_users[user]
        return Workstation.create(
            entry, homes / f"{tmp_path.name}-{user}{tag}", openbao, roster
        )

    yield make
    found = LEAKS.leaks(since=first_text)
    assert not found, f"secrets found in the agent's output: {found}"
