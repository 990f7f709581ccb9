"""The rendered units and settings file, and make install-agent's file steps.

Everything here renders into a DESTDIR with ``--skip-venv`` (the package is
importable in the test environment already); the real venv, systemd and the
sandbox's effect are proven in tests/systemd.
"""

from __future__ import annotations

import importlib.util
import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from agent.layout import COMMANDS, installed_files
from agent.report import Event, Report, Status
from tests.support.components import REPO

UNIT_DIR = Path("etc/systemd/system")
SERVICE = UNIT_DIR / "claude-auth-sync@.service"
TIMER = UNIT_DIR / "claude-auth-sync@.timer"
PROVISION_SERVICE = UNIT_DIR / "claude-auth-provision.service"
PROVISION_LINK = UNIT_DIR / "timers.target.wants" / "claude-auth-provision.timer"
ENV_FILE = Path("etc/claude-auth-sync/agent.env")
ADDR = "https://vault.example.com"


@pytest.fixture(scope="module")
def installer() -> ModuleType:
    """tools/install_agent.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location(
        "install_agent", REPO / "tools" / "install_agent.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["install_agent"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def install(
    installer: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., tuple[int, str]]:
    """Run ``install_agent.py ACTION`` into tmp_path; return (exit code, output)."""
    monkeypatch.setenv("VAULT_ADDR", ADDR)

    def run(action: str = "install", *extra: str, **env: str) -> tuple[int, str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = installer.main(
            [action, "--skip-venv", "--destdir", str(tmp_path / "root"),
             "--prefix", "/opt/cas", "--roster", str(REPO / "roster.yaml"), *extra]
        )  # fmt: skip
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def directives(text: str) -> dict[str, list[str]]:
    """Each ``Key=value`` of a unit file, all values of repeated keys in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def rendered(tmp_path: Path, path: Path) -> str:
    return (tmp_path / "root" / path).read_text()


def test_service_runs_as_the_instance_user(install, tmp_path: Path) -> None:
    """The renewal service runs as the OS user its instance names."""
    install()

    assert directives(rendered(tmp_path, SERVICE))["User"] == ["%i"]


def test_service_logs_under_the_alert_identifier(install, tmp_path: Path) -> None:
    """The service's output reaches the journal as claude-auth-sync."""
    install()

    assert directives(rendered(tmp_path, SERVICE))["SyslogIdentifier"] == [
        "claude-auth-sync"
    ]


def test_service_runs_the_agent_from_the_prefix(install, tmp_path: Path) -> None:
    """ExecStart runs claude-auth-sync run from the venv under PREFIX."""
    install()
    unit = directives(rendered(tmp_path, SERVICE))

    assert unit["Type"] == ["oneshot"]
    assert unit["ExecStart"] == ["/opt/cas/bin/claude-auth-sync run"]
    assert unit["EnvironmentFile"] == ["/etc/claude-auth-sync/agent.env"]


def test_service_is_sandboxed(install, tmp_path: Path) -> None:
    """The service carries the hardening the workstation relies on."""
    install()
    unit = directives(rendered(tmp_path, SERVICE))
    wanted = {
        "ProtectSystem": "strict",
        "ProtectHome": "tmpfs",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateUsers": "yes",
        "PrivateDevices": "yes",
        "ProtectProc": "invisible",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }

    assert {k: unit.get(k, ["missing"])[-1] for k in wanted} == wanted


def test_timer_runs_every_six_hours_and_catches_up(install, tmp_path: Path) -> None:
    """The timer fires every 6 h, persistently, spread, and soon after boot."""
    install()
    timer = directives(rendered(tmp_path, TIMER))

    assert timer["OnCalendar"] == ["*-*-* 00/6:00:00"]
    assert timer["Persistent"] == ["true"]
    assert timer["RandomizedDelaySec"] and timer["OnBootSec"]


def test_timer_follows_the_period_setting(install, tmp_path: Path) -> None:
    """CLAUDE_AUTH_SYNC_TIMER_PERIOD_HOURS=8 gives an 8-hourly calendar."""
    install(CLAUDE_AUTH_SYNC_TIMER_PERIOD_HOURS="8")

    assert directives(rendered(tmp_path, TIMER))["OnCalendar"] == ["*-*-* 00/8:00:00"]


def test_timer_refuses_a_period_that_splits_no_day(install) -> None:
    """A 5-hour period is refused with the periods that work."""
    code, output = install(CLAUDE_AUTH_SYNC_TIMER_PERIOD_HOURS="5")

    assert code == 1
    assert "does not divide a day evenly; use 1, 2, 3, 4, 6, 8, 12 or 24" in output


def test_provisioner_runs_with_the_installed_roster(install, tmp_path: Path) -> None:
    """The provisioner's service reads the roster that the install put in /etc."""
    install()

    assert directives(rendered(tmp_path, PROVISION_SERVICE))["ExecStart"] == [
        "/opt/cas/bin/claude-auth-provision --roster /etc/claude-auth-sync/roster.yaml"
    ]


def test_env_file_carries_the_settings(install, tmp_path: Path) -> None:
    """agent.env holds VAULT_ADDR, the roster path and optional settings given."""
    install(ANTHROPIC_BASE_URL="http://127.0.0.1:9", CLAUDE_AUTH_SYNC_KV_MOUNT="kv")
    env = directives(rendered(tmp_path, ENV_FILE))

    assert env == {
        "VAULT_ADDR": [f'"{ADDR}"'],
        "CLAUDE_AUTH_SYNC_KV_MOUNT": ['"kv"'],
        "ANTHROPIC_BASE_URL": ['"http://127.0.0.1:9"'],
        "CLAUDE_AUTH_SYNC_ROSTER": ['"/etc/claude-auth-sync/roster.yaml"'],
    }


def test_env_file_carries_a_ca_directory(install, tmp_path: Path) -> None:
    """VAULT_CAPATH reaches the agent like VAULT_CACERT does; a missing one stops."""
    code, output = install(VAULT_CAPATH="/nonexistent/cas")
    assert code == 1
    assert "VAULT_CAPATH=/nonexistent/cas is not a directory" in output
    install(VAULT_CAPATH=str(tmp_path))
    env_file = (tmp_path / "root" / ENV_FILE).read_text()
    assert f'VAULT_CAPATH="{tmp_path}"' in env_file


def test_env_file_never_holds_vault_token(install, tmp_path: Path) -> None:
    """A VAULT_TOKEN in the installer's environment never reaches agent.env."""
    install(VAULT_TOKEN="hvs.installer-admin-token")

    assert "hvs.installer-admin-token" not in rendered(tmp_path, ENV_FILE)


def test_install_without_vault_addr_says_how(install, monkeypatch) -> None:
    """Without VAULT_ADDR the install stops and shows the command to use."""
    monkeypatch.delenv("VAULT_ADDR")
    code, output = install()

    assert code == 1
    assert "make install-agent VAULT_ADDR=https://vault.example.com" in output


def test_install_refuses_a_value_agent_env_cannot_carry(install) -> None:
    """A setting with a quote in it is refused, not written half-quoted."""
    code, output = install(CLAUDE_BIN='/opt/cl"aude')

    assert code == 1
    assert "cannot carry safely" in output


def test_install_enables_the_provisioner_timer(install, tmp_path: Path) -> None:
    """Without a running systemd, the timer is enabled by its wants link."""
    install()

    link = tmp_path / "root" / PROVISION_LINK
    assert link.readlink() == Path("/etc/systemd/system/claude-auth-provision.timer")


def test_second_install_changes_nothing(install) -> None:
    """A second install reports every file unchanged and nothing changed."""
    install()
    code, output = install()

    assert code == 0
    unchanged = re.findall(r": (\w+)", output).count("unchanged")
    assert unchanged == len(installed_files()) + len(COMMANDS)
    assert "nothing changed" in output


def test_install_restores_an_edited_unit(install, tmp_path: Path) -> None:
    """A locally edited unit is put back, and reported as updated."""
    install()
    (tmp_path / "root" / SERVICE).write_text("[Service]\nUser=root\n")
    _, output = install()

    assert "claude-auth-sync@.service: updated" in output


def test_uninstall_removes_what_install_wrote(install, tmp_path: Path) -> None:
    """Uninstall leaves no unit, link, drop-in or settings file behind."""
    install()
    dropin = tmp_path / "root" / UNIT_DIR / "claude-auth-sync@alice.service.d"
    dropin.mkdir()
    (dropin / "10-home-paths.conf").write_text("[Service]\n")
    code, _ = install("uninstall")

    left = [p for p in (tmp_path / "root").rglob("*") if not p.is_dir()]
    assert code == 0
    assert left == []


def test_install_puts_the_commands_on_path(install, tmp_path: Path) -> None:
    """claude-auth-sync and claude-auth-provision run by name, from the venv."""
    install()
    bin_dir = tmp_path / "root" / "usr/local/bin"
    assert (bin_dir / "claude-auth-sync").readlink() == Path(
        "/opt/cas/bin/claude-auth-sync"
    )
    assert (bin_dir / "claude-auth-provision").readlink() == Path(
        "/opt/cas/bin/claude-auth-provision"
    )


def test_install_never_replaces_someone_elses_command(install, tmp_path: Path) -> None:
    """A claude-auth-sync already on PATH is left alone, and the install says so."""
    bin_dir = tmp_path / "root" / "usr/local/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "claude-auth-sync").write_text("#!/bin/sh\n")
    code, output = install()
    assert code == 0
    assert (bin_dir / "claude-auth-sync").read_text() == "#!/bin/sh\n"
    assert "claude-auth-sync: left alone" in output
    code, output = install("uninstall")
    assert (bin_dir / "claude-auth-sync").exists()
    assert not (bin_dir / "claude-auth-provision").is_symlink()


def test_uninstall_keeps_other_units(install, tmp_path: Path) -> None:
    """Units and drop-ins that are not this product's stay."""
    install()
    other = tmp_path / "root" / UNIT_DIR / "claude-auth-sync@alice.service.d"
    other.mkdir()
    (other / "50-site.conf").write_text("[Service]\nNice=5\n")
    (tmp_path / "root" / UNIT_DIR / "backup.service").write_text("[Service]\n")
    install("uninstall")

    assert (other / "50-site.conf").is_file()
    assert (tmp_path / "root" / UNIT_DIR / "backup.service").is_file()


def test_uninstall_refuses_a_foreign_prefix(install, tmp_path: Path) -> None:
    """A PREFIX this installer did not make is left alone, with the reason."""
    (tmp_path / "root" / "opt" / "cas").mkdir(parents=True)
    code, output = install("uninstall")

    assert code == 1
    assert "was not made by make install-agent" in output
    assert (tmp_path / "root" / "opt" / "cas").is_dir()


# -- the login notice and the log shipper's configuration ----------------------

PROFILE = Path("etc/profile.d/claude-auth-sync.sh")
SHIPPER = Path("etc/claude-auth-sync/log-shipper")


def write_status(home: Path, event: Event, facts: dict[str, object]) -> None:
    """A status.json as the agent's own report writes it."""
    state = home / ".local/state/claude-auth-sync"
    state.mkdir(parents=True, exist_ok=True)
    report = Report("alice", "ws1", state, clock=lambda: 1_800_000_000.0)
    report.out = io.StringIO()
    report.emit(event)
    report.write_status(facts)


def login_shell(snippet: Path, home: Path, shell: str = "bash") -> str:
    """What an interactive shell of alice prints at start, from the snippet alone."""
    command = [shell, "-i", "-c", f". {snippet}"]
    if shell == "bash":
        command[1:1] = ["--norc", "--noprofile"]
    done = subprocess.run(
        command,
        env={"HOME": str(home), "USER": "alice", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return done.stdout


LOGIN = "claude auth login --claudeai --sso --email alice@corp.example"


@pytest.fixture
def snippet(install, tmp_path: Path) -> Path:
    install()
    return tmp_path / "root" / PROFILE


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_notice_when_sso_is_required(snippet: Path, tmp_path: Path, shell: str) -> None:
    """A FAIL sso_required shows the exact login and rerun commands."""
    home = tmp_path / "home"
    write_status(
        home,
        Event(Status.FAIL, "sso_required", "rejected", "log in"),
        {"needs_login": True, "login_command": LOGIN},
    )
    shown = login_shell(snippet, home, shell)
    assert shown.splitlines() == [
        "claude-auth-sync: your Claude login was rejected and no backup could "
        "restore it.",
        f"  Log in again:   {LOGIN}",
        "  Then check it:  systemctl start claude-auth-sync@alice.service",
    ]


def test_notice_when_the_login_expires_soon(snippet: Path, tmp_path: Path) -> None:
    """The login_expiring warning names the deadline and the login command."""
    home = tmp_path / "home"
    write_status(
        home,
        Event(Status.WARN, "login_expiring", "ends soon"),
        {
            "needs_login": False,
            "login_expiring": True,
            "login_command": LOGIN,
            "login_expires_at": "2027-01-02T03:04:05Z",
        },
    )
    assert login_shell(snippet, home).splitlines() == [
        "claude-auth-sync: your Claude login ends at 2027-01-02T03:04:05Z; no "
        "refresh can extend it.",
        f"  Log in again when it suits you:  {LOGIN}",
    ]


def test_notice_is_gone_after_an_ok(snippet: Path, tmp_path: Path) -> None:
    """The next OK rewrites the status, and the shell is silent again."""
    home = tmp_path / "home"
    write_status(
        home,
        Event(Status.FAIL, "sso_required"),
        {"needs_login": True, "login_command": LOGIN},
    )
    write_status(home, Event(Status.OK), {"needs_login": False})
    assert login_shell(snippet, home) == ""


def test_notice_is_silent_without_a_status_file(snippet: Path, tmp_path: Path) -> None:
    """A user who never ran the agent sees nothing, and no error."""
    assert login_shell(snippet, tmp_path / "nobody") == ""


def test_notice_is_silent_in_scripts(snippet: Path, tmp_path: Path) -> None:
    """A non-interactive shell (scp, cron, scripts) never gets the notice."""
    home = tmp_path / "home"
    write_status(
        home,
        Event(Status.FAIL, "sso_required"),
        {"needs_login": True, "login_command": LOGIN},
    )
    done = subprocess.run(
        ["sh", "-c", f". {snippet}"],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == ""


def test_promtail_config_labels_what_the_rules_select(install, tmp_path: Path) -> None:
    """promtail keeps only the agent's lines and labels identifier and host."""
    install(LOKI_PUSH_URL="https://loki.corp.example/loki/api/v1/push")
    config = yaml.safe_load((tmp_path / "root" / SHIPPER / "promtail.yaml").read_text())
    assert config["clients"] == [{"url": "https://loki.corp.example/loki/api/v1/push"}]
    (job,) = config["scrape_configs"]
    relabel = {
        rule.get("target_label") or rule["action"]: rule
        for rule in job["relabel_configs"]
    }
    assert relabel["keep"]["regex"] == "claude-auth-sync"
    assert relabel["identifier"]["source_labels"] == ["__journal_syslog_identifier"]
    assert relabel["host"]["source_labels"] == ["__journal__hostname"]


def test_alloy_config_labels_what_the_rules_select(install, tmp_path: Path) -> None:
    """Alloy reads the agent's journal lines and sets identifier and host."""
    install()
    text = (tmp_path / "root" / SHIPPER / "claude-auth-sync.alloy").read_text()
    assert 'matches       = "SYSLOG_IDENTIFIER=claude-auth-sync"' in text
    assert (
        'source_labels = ["__journal_syslog_identifier"]\n    target_label  = '
        '"identifier"'
    ) in text
    assert 'url = "http://localhost:3100/loki/api/v1/push"' in text
    assert text.count("{") == text.count("}")


def test_a_bad_loki_address_is_refused(install) -> None:
    """A push address that is not a URL stops the install with the fix."""
    code, output = install(LOKI_PUSH_URL="loki:3100")
    assert code == 1
    assert "LOKI_PUSH_URL='loki:3100' is not a Loki push address" in output
