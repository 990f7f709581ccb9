"""The workstation lifecycle under a real systemd, in a booted Debian container.

One container serves the module: ``make install-agent`` from the repository,
two OS users, the provisioner run once with an admin token, as the runbook's
set-up does. OpenBao (with the stack's policies and roles) and the Messages
API stub run on the host's loopback, which the container shares. Each test
then checks one thing the runbook's verification would, in file order; the
last ones change the roster and uninstall.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest

from agent.settings import DEFAULT_KV_MOUNT, DEFAULT_KV_PREFIX, NAME_PREFIX
from tests.support.api_stub import ApiStub, api_stub
from tests.support.components import REPO, claude_binary, require
from tests.support.container import Container, booted, debian_root
from tests.support.openbao import OpenBao
from tests.support.vault_stack import apply_stack, synthesize

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

ROSTER = """\
users:
  alice:
    email: alice@corp.example
  bob:
    email: bob@corp.example
"""
ROSTER_WITHOUT_BOB = """\
users:
  alice:
    email: alice@corp.example
"""
ACCESS_TOKEN = "sk-ant-oat01-e2e-alice-access-token"
REFRESH_TOKEN = "sk-ant-ort01-e2e-alice-refresh-token"
PREFIX = "/opt/claude-auth-sync"
SNAPSHOT = (
    "Makefile", "pyproject.toml", "README.md", "roster.yaml",
    "agent", "stacks", "tools", "templates",
)  # fmt: skip
PROVISION = f"{PREFIX}/bin/claude-auth-provision"

# Runs inside alice's unit in place of the agent: every attempt to reach bob's
# home, and, as a control, alice's own writable and read-only paths.
SANDBOX_CHECK = r"""
import errno, json, os
def attempt(action):
    try:
        action()
    except OSError as err:
        return errno.errorcode[err.errno]
    return "allowed"
def write(path):
    return lambda: open(path, "w").write("planted")
print("SANDBOX " + json.dumps({
    "list_bob_home": attempt(lambda: os.listdir("/home/bob")),
    "read_bob_token": attempt(
        lambda: open("/home/bob/.config/claude-auth-sync/vault-token").read()),
    "write_bob_home": attempt(write("/home/bob/planted")),
    "write_bob_claude": attempt(write("/home/bob/.claude/planted")),
    "write_own_claude": attempt(write("/home/alice/.claude/sandbox-check")),
    "write_own_token_dir": attempt(
        write("/home/alice/.config/claude-auth-sync/planted")),
    "write_own_home": attempt(write("/home/alice/planted")),
}))
"""


@dataclass
class Workstation:
    """The booted container and what the set-up left, for the tests to check."""

    container: Container
    openbao: OpenBao
    stub: ApiStub
    scratch: Path
    install_args: list[str]
    provision_output: str

    def make(self, target: str, roster: str = "/scratch/roster.yaml") -> str:
        command = ["make", "-C", "/src", target, f"ROSTER={roster}", *self.install_args]
        return self.container.run(command, timeout=300).stdout

    def provision(self, admin: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the provisioner as root; the admin token only in its environment."""
        env = {"VAULT_ADDR": self.openbao.addr}
        if admin:
            env["VAULT_TOKEN"] = self.openbao.root_token
        return self.container.run([PROVISION], env=env, check=False)

    def journal(self, identifier: str) -> str:
        return self.container.run(
            ["journalctl", "-t", identifier, "--since", "today", "-o", "cat"]
        ).stdout

    def exists(self, path: str) -> bool:
        return self.container.run(["test", "-e", path], check=False).returncode == 0

    def user_token(self, user: str) -> str:
        path = f"/home/{user}/.config/claude-auth-sync/vault-token"
        return self.container.run(["cat", path]).stdout.strip()


def _needs_root_and_tools() -> None:
    require("root", "root" if os.geteuid() == 0 else None, "run the tests as root")
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
    ):
        require(tool, shutil.which(tool), f"apt-get install {package}")


def _wheelhouse(target: Path) -> Path:
    """Wheels of the package's dependencies and build tools, built on the host.

    The container then installs without reaching any index; the package
    itself is built there by ``make install-agent`` from the repository.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(target),
         *wanted, "wheel"],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    return target


def _snapshot(target: Path) -> Path:
    """A copy of what make install-agent reads, so that the container sees one
    consistent tree even while the working tree changes under the test."""
    target.mkdir()
    for name in SNAPSHOT:
        source = REPO / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "node_modules")
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def _forget_stack(client: hvac.Client) -> None:
    """Remove this module's policies, roles and backups from the shared server."""
    for name in client.sys.list_acl_policies()["data"]["keys"]:
        if name.startswith(NAME_PREFIX):
            client.sys.delete_acl_policy(name)
    for name in (client.list("auth/token/roles") or {"data": {"keys": []}})["data"][
        "keys"
    ]:
        if name.startswith(NAME_PREFIX):
            client.delete(f"auth/token/roles/{name}")
    for user in ("alice", "bob"):
        client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=f"{DEFAULT_KV_PREFIX}/{user}", mount_point=DEFAULT_KV_MOUNT
        )


def _login_alice(container: Container) -> None:
    """Leave alice a valid Claude login, as her SSO login would have."""
    expires_ms = int((time.time() + 8 * 3600) * 1000)
    credentials = {
        "claudeAiOauth": {
            "accessToken": ACCESS_TOKEN,
            "refreshToken": REFRESH_TOKEN,
            "expiresAt": expires_ms,
            "scopes": ["user:inference", "user:profile"],
            "subscriptionType": "enterprise",
        }
    }
    container.run(
        ["runuser", "-u", "alice", "--", "sh", "-c",
         "umask 077; cat > /home/alice/.claude/.credentials.json"],
        input_text=json.dumps(credentials),
    )  # fmt: skip


@pytest.fixture(scope="module")
def workstation(
    openbao: OpenBao, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workstation]:
    """The runbook's set-up in a booted container; stopped at the end, always."""
    _needs_root_and_tools()
    claude = require("Claude Code CLI", claude_binary(), "make node")
    scratch = tmp_path_factory.mktemp("workstation")
    (scratch / "roster.yaml").write_text(ROSTER)
    (scratch / "roster-without-bob.yaml").write_text(ROSTER_WITHOUT_BOB)
    _wheelhouse(scratch / "wheels")
    client = openbao.client()
    apply_stack(client, synthesize(ROSTER, scratch / "stack"))
    root = debian_root(scratch)

    source = _snapshot(scratch / "src")
    binds = {source: "/src", scratch: "/scratch", claude: "/usr/local/bin/claude"}
    try:
        with api_stub() as stub, booted(root, scratch, binds) as container:
            stub.accept(ACCESS_TOKEN)
            args = [
                f"VAULT_ADDR={openbao.addr}",
                f"ANTHROPIC_BASE_URL={stub.base_url}",
                "CLAUDE_BIN=/usr/local/bin/claude",
                "WHEELHOUSE=/scratch/wheels",
            ]
            station = Workstation(container, openbao, stub, scratch, args, "")
            station.make("install-agent")
            container.run(["useradd", "--create-home", "alice"])
            container.run(["useradd", "--create-home", "bob"])
            done = station.provision(admin=True)
            assert done.returncode == 0, done.stdout + done.stderr
            station.provision_output = done.stdout + done.stderr
            _login_alice(container)
            yield station
    finally:
        _forget_stack(client)


@pytest.fixture(scope="module")
def alice_run(workstation: Workstation) -> subprocess.CompletedProcess[str]:
    """The first sync, started by hand as the runbook's step 4 does."""
    return workstation.container.run(
        ["systemctl", "start", "claude-auth-sync@alice.service"],
        timeout=200,
        check=False,
    )


@pytest.fixture(scope="module")
def sandbox(workstation: Workstation) -> dict[str, str]:
    """What alice's unit, with its own sandbox, could do to bob's home and hers.

    A runtime drop-in swaps only the command: every sandbox setting of the
    installed unit and of alice's home drop-in stays as it is.
    """
    container = workstation.container
    dropin = "/run/systemd/system/claude-auth-sync@alice.service.d"
    container.run(["mkdir", "-p", dropin])
    container.write("/run/sandbox-check.py", SANDBOX_CHECK)
    container.write(
        f"{dropin}/99-sandbox-check.conf",
        "[Service]\nSyslogIdentifier=sandbox-check\nExecStart=\n"
        "ExecStart=/usr/bin/python3 /run/sandbox-check.py\n",
    )
    try:
        container.run(["systemctl", "daemon-reload"])
        container.run(["systemctl", "start", "claude-auth-sync@alice.service"])
        journal = container.run(["journalctl", "-t", "sandbox-check", "-o", "cat"])
    finally:
        container.run(["rm", "-rf", dropin, "/run/sandbox-check.py"])
        container.run(["systemctl", "daemon-reload"])
    line = next(x for x in journal.stdout.splitlines() if x.startswith("SANDBOX "))
    return dict(json.loads(line.removeprefix("SANDBOX ")))


def test_second_install_changes_nothing(workstation: Workstation) -> None:
    """Running make install-agent again changes nothing and says so."""
    output = workstation.make("install-agent")

    assert "nothing changed" in output
    assert not re.search(r": (installed|updated|created|enabled)", output)


def test_provisioner_writes_private_tokens(workstation: Workstation) -> None:
    """Each user's minted token is a file of mode 600 owned by that user."""
    found = workstation.container.run(
        ["stat", "-c", "%U %a",
         "/home/alice/.config/claude-auth-sync/vault-token",
         "/home/bob/.config/claude-auth-sync/vault-token"]
    )  # fmt: skip

    assert found.stdout.split("\n")[:2] == ["alice 600", "bob 600"]


def test_provisioner_output_holds_no_token(workstation: Workstation) -> None:
    """The provisioner's own output names no minted or admin token."""
    tokens = [workstation.user_token("alice"), workstation.user_token("bob")]

    assert all(t and t not in workstation.provision_output for t in tokens)


def test_list_timers_shows_both_users(workstation: Workstation) -> None:
    """systemctl list-timers lists alice's and bob's renewal timers."""
    listed = workstation.container.run(
        ["systemctl", "list-timers", "--all", "claude-auth-sync@*"]
    ).stdout

    assert "claude-auth-sync@alice.timer" in listed
    assert "claude-auth-sync@bob.timer" in listed


def test_alice_service_succeeds(alice_run: subprocess.CompletedProcess[str]) -> None:
    """systemctl start claude-auth-sync@alice.service succeeds with the real CLI."""
    assert alice_run.returncode == 0, alice_run.stdout + alice_run.stderr


def test_probe_reached_the_api_as_alice(
    workstation: Workstation, alice_run: subprocess.CompletedProcess[str]
) -> None:
    """The real CLI in the sandbox made its inference with alice's own login."""
    assert ACCESS_TOKEN in workstation.stub.inference_bearers()


def test_journal_has_the_ok_line(
    workstation: Workstation, alice_run: subprocess.CompletedProcess[str]
) -> None:
    """journalctl -t claude-auth-sync holds alice's OK line."""
    assert re.search(
        r"^status=OK user=alice\b", workstation.journal("claude-auth-sync"), re.M
    )


def test_journal_holds_no_secret(
    workstation: Workstation, alice_run: subprocess.CompletedProcess[str]
) -> None:
    """No OAuth token and no Vault token appears in the journal."""
    journal = workstation.container.run(["journalctl", "-o", "cat"]).stdout
    secrets = [
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        workstation.user_token("alice"),
        workstation.user_token("bob"),
    ]

    assert [s for s in secrets if s in journal] == []


def test_sync_log_has_the_ok_line(
    workstation: Workstation, alice_run: subprocess.CompletedProcess[str]
) -> None:
    """alice's own ~/.local/state/claude-auth-sync/sync.log records OK."""
    log = workstation.container.run(
        ["cat", "/home/alice/.local/state/claude-auth-sync/sync.log"]
    ).stdout

    assert re.search(r"\bstatus=OK user=alice\b", log)


def test_backup_reached_alices_vault_path(
    workstation: Workstation, alice_run: subprocess.CompletedProcess[str]
) -> None:
    """The run stored alice's login at her own Vault path."""
    stored = workstation.openbao.client().secrets.kv.v2.read_secret_version(
        path=f"{DEFAULT_KV_PREFIX}/alice",
        mount_point=DEFAULT_KV_MOUNT,
        raise_on_deleted_version=True,
    )["data"]["data"]

    assert stored["claudeAiOauth"]["refreshToken"] == REFRESH_TOKEN


def test_sandbox_control_writes_own_claude_dir(sandbox: dict[str, str]) -> None:
    """Alice's unit may write her ~/.claude (the check below is not vacuous)."""
    assert sandbox["write_own_claude"] == "allowed"


def test_sandbox_hides_bobs_home(sandbox: dict[str, str]) -> None:
    """Alice's unit cannot even list bob's home."""
    assert sandbox["list_bob_home"] != "allowed"


def test_sandbox_cannot_read_bobs_token(sandbox: dict[str, str]) -> None:
    """Alice's unit cannot read bob's scoped Vault token."""
    assert sandbox["read_bob_token"] != "allowed"


def test_sandbox_cannot_write_bobs_home(sandbox: dict[str, str]) -> None:
    """Alice's unit can write nothing into bob's home or his ~/.claude."""
    assert "allowed" not in (sandbox["write_bob_home"], sandbox["write_bob_claude"])


def test_sandbox_keeps_token_dir_read_only(sandbox: dict[str, str]) -> None:
    """Alice's unit cannot change her own token directory or the rest of her home."""
    assert sandbox["write_own_token_dir"] != "allowed"
    assert sandbox["write_own_home"] != "allowed"


def test_security_exposure_is_low(workstation: Workstation) -> None:
    """systemd-analyze security rates alice's unit at 2.0 or less."""
    report = workstation.container.run(
        ["systemd-analyze", "security", "--no-pager", "claude-auth-sync@alice.service"],
        check=False,
    ).stdout
    (workstation.scratch / "security.txt").write_text(report)
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)

    assert exposure, report
    assert float(exposure.group(1)) <= 2.0, report


def test_dropping_bob_disables_his_timer(workstation: Workstation) -> None:
    """After bob leaves the roster, the provisioner's own unit disables his timer."""
    workstation.make("install-agent", roster="/scratch/roster-without-bob.yaml")
    done = workstation.container.run(
        ["systemctl", "start", "claude-auth-provision.service"], check=False
    )
    state = workstation.container.run(
        ["systemctl", "is-enabled", "claude-auth-sync@bob.timer"], check=False
    ).stdout.strip()

    assert done.returncode == 0, workstation.journal("claude-auth-provision")
    assert state != "enabled"


def test_dropping_bob_keeps_alices_timer(workstation: Workstation) -> None:
    """Removing bob leaves alice's timer enabled."""
    state = workstation.container.run(
        ["systemctl", "is-enabled", "claude-auth-sync@alice.timer"], check=False
    ).stdout.strip()

    assert state == "enabled"


@pytest.fixture(scope="module")
def uninstalled(workstation: Workstation) -> Workstation:
    """The workstation after make uninstall-agent."""
    workstation.make("uninstall-agent")
    return workstation


def test_uninstall_removes_units_and_venv(uninstalled: Workstation) -> None:
    """make uninstall-agent removes the units, agent.env and the venv."""
    paths = [
        "/etc/systemd/system/claude-auth-sync@.service",
        "/etc/systemd/system/claude-auth-provision.timer",
        "/etc/systemd/system/claude-auth-sync@alice.service.d/10-home-paths.conf",
        "/etc/claude-auth-sync/agent.env",
        PREFIX,
    ]

    assert [p for p in paths if uninstalled.exists(p)] == []


def test_uninstall_keeps_user_data(uninstalled: Workstation) -> None:
    """make uninstall-agent leaves alice's token, state and Claude login alone."""
    paths = [
        "/home/alice/.config/claude-auth-sync/vault-token",
        "/home/alice/.local/state/claude-auth-sync/sync.log",
        "/home/alice/.claude/.credentials.json",
    ]

    assert [p for p in paths if not uninstalled.exists(p)] == []
