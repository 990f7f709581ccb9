"""The rendered units and settings file, and make install-agent's file steps.

Everything here renders into a DESTDIR with ``--skip-venv`` (the package is
importable in the test environment already); the real venv, systemd and the
sandbox's effect are proven in tests/systemd.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

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
    assert re.findall(r": (\w+)", output).count("unchanged") == 6
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
