"""Install the Claude login renewal on a workstation, or remove it again.

``make install-agent`` runs this as root with the machine's own Python. It
makes a virtual environment of its own under PREFIX (from Debian's
``/usr/bin/python3``, which every OS user can run), installs the package into
it, renders the systemd units and the settings file from ``templates/``,
installs the roster, and enables the hourly provisioner. Every step compares
what it would write with what is there, so a second run changes nothing and
says so. ``make uninstall-agent`` removes exactly what this installs and what
the provisioner added to systemd's configuration; no user's data.

DESTDIR stages the install under another root (for packaging, or tests): the
files still name their final paths, and nothing is started or reloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The layout and systemctl modules are standard library only: importable from
# the source tree before the venv exists, and after it is removed.
sys.path.insert(0, str(REPO))

from agent import layout as paths  # noqa: E402  # needs the path above
from agent.systemd import Systemctl  # noqa: E402  # needs the path above

TEMPLATES = REPO / "templates"
STAMP = ".claude-auth-sync-install.json"
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "agent", "stacks")
BOOT_DELAY_MINUTES = 5
RANDOM_DELAY_MINUTES = 15
SYNC_TIMEOUT_MINUTES = 10
DEFAULT_LOKI_PUSH_URL = "http://localhost:3100/loki/api/v1/push"

#: The settings copied from the installer's environment into agent.env, in
#: this order. VAULT_TOKEN is not among them, and never will be.
PASSED_SETTINGS = (
    "VAULT_ADDR",
    "VAULT_CACERT",
    "VAULT_CAPATH",
    "VAULT_NAMESPACE",
    "VAULT_SKIP_VERIFY",
    "CLAUDE_AUTH_SYNC_KV_MOUNT",
    "CLAUDE_AUTH_SYNC_KV_PREFIX",
    "CLAUDE_AUTH_SYNC_TOKEN_PERIOD_HOURS",
    "CLAUDE_AUTH_SYNC_TIMER_PERIOD_HOURS",
    "CLAUDE_AUTH_SYNC_LOGIN_WARN_DAYS",
    "CLAUDE_BIN",
    "ANTHROPIC_BASE_URL",
)

# systemd reads EnvironmentFile values inside double quotes with backslash
# escapes; refusing these keeps a value from meaning anything but itself.
_UNSAFE_VALUE = re.compile(r'[\x00-\x1f\x7f"\\$`]')


class InstallError(Exception):
    """The install cannot go on; the message says what failed and the fix."""


@dataclass
class Report:
    """What each step did, printed as it goes, and how many steps changed."""

    changes: int = 0
    lines: list[str] = field(default_factory=list)

    def step(self, what: str, outcome: str, changed: bool) -> None:
        self.changes += int(changed)
        line = f"{what}: {outcome}"
        self.lines.append(line)
        print(line, flush=True)

    def finish(self, verb: str) -> None:
        if self.changes:
            print(f"{verb}: {self.changes} change(s) made.")
        else:
            print(f"{verb}: nothing changed; everything was already in place.")


@dataclass(frozen=True)
class Layout:
    """Where everything goes: final paths, and the DESTDIR they are staged in."""

    prefix: Path
    destdir: Path | None

    def staged(self, path: Path) -> Path:
        """The path as written now: under DESTDIR when one is given."""
        if self.destdir is None:
            return path
        return self.destdir / path.relative_to("/")

    @property
    def venv(self) -> Path:
        return self.staged(self.prefix)


# -- the virtual environment ---------------------------------------------------


def source_digest(repo: Path = REPO) -> str:
    """A digest of what ``pip install`` would install, to tell if it changed."""
    digest = hashlib.sha256()
    for name in PACKAGE_SOURCES:
        top = repo / name
        files = sorted(top.rglob("*.py")) if top.is_dir() else [top]
        for path in files:
            digest.update(str(path.relative_to(repo)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def system_python() -> str:
    """Debian's Python when it is there, since every OS user can run it."""
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    found = shutil.which("python3")
    if not found:
        raise InstallError("No python3 found; install it with: apt-get install python3")
    return found


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallError(
            f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        )


def _copy_sources(target: Path) -> None:
    """Copy the package sources, so pip never writes into the repository."""
    for name in PACKAGE_SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, target / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, target / name)


def _relocate(layout: Layout) -> None:
    """Point the staged venv's scripts at PREFIX instead of DESTDIR/PREFIX."""
    staged, final = str(layout.venv).encode(), str(layout.prefix).encode()
    for script in (layout.venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        content = script.read_bytes()
        if staged in content:
            script.write_bytes(content.replace(staged, final))


def install_venv(layout: Layout, wheelhouse: Path | None, report: Report) -> None:
    """Create the venv and (re)install the package when its sources changed.

    ``wheelhouse`` makes pip install from that directory only, for machines
    that cannot reach a package index.
    """
    python = layout.venv / "bin" / "python"
    stamp_path = layout.venv / STAMP
    wanted = {"source": source_digest(), "python": sys.version.split()[0]}
    created = not python.exists()
    if created:
        _run([system_python(), "-m", "venv", str(layout.venv)], "Creating the venv")
    elif stamp_path.is_file() and json.loads(stamp_path.read_text()) == wanted:
        report.step(f"venv {layout.prefix}", "unchanged", changed=False)
        return

    index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    with tempfile.TemporaryDirectory(prefix="claude-auth-sync-src-") as src:
        _copy_sources(Path(src))
        _run(
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade",
             "--disable-pip-version-check", *index, src],
            f"pip install into {layout.venv}",
        )  # fmt: skip
    if layout.destdir is not None:
        _relocate(layout)
    stamp_path.write_text(json.dumps(wanted) + "\n")
    report.step(
        f"venv {layout.prefix}", "created" if created else "updated", changed=True
    )


def use_venv_packages(layout: Layout) -> None:
    """Make the venv's packages (jinja2, agent) importable in this process.

    The venv was made from this very interpreter, so its packages fit it.
    """
    lib = layout.venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site_packages = lib / "site-packages"
    if site_packages.is_dir() and str(site_packages) not in sys.path:
        sys.path.insert(0, str(site_packages))


# -- files ---------------------------------------------------------------------


def write_file(path: Path, content: str, mode: int) -> str:
    """Write ``content`` atomically unless it is already there with ``mode``.

    Returns "installed", "updated" or "unchanged".
    """
    data = content.encode()
    if path.is_file() and not path.is_symlink():
        same = path.read_bytes() == data
        if same and (path.stat().st_mode & 0o7777) == mode:
            return "unchanged"
        outcome = "updated"
    else:
        outcome = "installed"

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return outcome


def env_quote(value: str) -> str:
    """Quote a value for a systemd EnvironmentFile; refuse what it would mangle."""
    if _UNSAFE_VALUE.search(value):
        raise InstallError(
            f"The setting value {value!r} holds a quote, backslash, '$', backquote "
            "or control character, which agent.env cannot carry safely; give it "
            "without them."
        )
    return f'"{value}"'


def passed_settings(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The settings for agent.env, checked; raises ``InstallError`` when unusable."""
    from agent.settings import Settings, SettingsError  # noqa: PLC0415

    address = environ.get("VAULT_ADDR", "").strip()
    if not re.match(r"^https?://[^\s/]+", address):
        raise InstallError(
            f"VAULT_ADDR={address!r} is not a Vault address; give the site's, "
            "such as: make install-agent VAULT_ADDR=https://vault.example.com"
        )
    try:
        Settings.from_env(environ)
    except SettingsError as err:
        raise InstallError(str(err)) from None
    cacert = environ.get("VAULT_CACERT", "").strip()
    if cacert and not Path(cacert).is_file():
        raise InstallError(f"VAULT_CACERT={cacert} does not exist on this host.")
    capath = environ.get("VAULT_CAPATH", "").strip()
    if capath and not Path(capath).is_dir():
        raise InstallError(f"VAULT_CAPATH={capath} is not a directory on this host.")
    return [
        (name, environ[name].strip())
        for name in PASSED_SETTINGS
        if environ.get(name, "").strip()
    ]


def loki_push_url(environ: Mapping[str, str]) -> str:
    """Where the log shipper pushes; raises ``InstallError`` for a non-URL."""
    url = environ.get("LOKI_PUSH_URL", "").strip() or DEFAULT_LOKI_PUSH_URL
    if not re.match(r"^https?://[^\s/\"]+/\S*$", url):
        raise InstallError(
            f"LOKI_PUSH_URL={url!r} is not a Loki push address; give one such as "
            f"{DEFAULT_LOKI_PUSH_URL}"
        )
    return url


def timer_schedule(environ: Mapping[str, str]) -> tuple[int, str]:
    """The renewal period in hours and its OnCalendar expression.

    A calendar schedule keeps ``Persistent=true`` meaningful (a pass missed
    while the machine was off runs at boot); it needs a period that divides
    the day evenly. Raises ``InstallError`` otherwise.
    """
    from agent.settings import Settings  # noqa: PLC0415

    hours = Settings.from_env(environ).timer_period_hours
    if 24 % hours:
        raise InstallError(
            f"CLAUDE_AUTH_SYNC_TIMER_PERIOD_HOURS={hours} does not divide a day "
            "evenly; use 1, 2, 3, 4, 6, 8, 12 or 24."
        )
    return hours, f"*-*-* 00/{hours}:00:00"


def render_all(layout: Layout, environ: Mapping[str, str]) -> dict[Path, str]:
    """Every file the install writes (final path -> text), rendered from templates."""
    import jinja2  # noqa: PLC0415  # from the venv, once it exists

    from agent.settings import LOG_IDENTIFIER  # noqa: PLC0415

    settings = [
        *passed_settings(environ),
        ("CLAUDE_AUTH_SYNC_ROSTER", str(paths.ROSTER_FILE)),
    ]
    hours, calendar = timer_schedule(environ)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701  # systemd and env files, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["envquote"] = env_quote
    context: dict[str, Any] = {
        "prefix": str(layout.prefix),
        "env_file": str(paths.ENV_FILE),
        "roster": str(paths.ROSTER_FILE),
        "unit_dir": str(paths.UNIT_DIR),
        "identifier": LOG_IDENTIFIER,
        "home_dropin": paths.HOME_DROPIN,
        "timeout_minutes": SYNC_TIMEOUT_MINUTES,
        "period_hours": hours,
        "on_calendar": calendar,
        "boot_delay_minutes": BOOT_DELAY_MINUTES,
        "random_delay_minutes": RANDOM_DELAY_MINUTES,
        "variables": settings,
        "state_dir": str(paths.STATE_DIR),
        "service_prefix": paths.SYNC_UNIT.rstrip("@"),
        "loki_push_url": loki_push_url(environ),
        "max_age": "12h",
        "positions_file": "/var/lib/claude-auth-sync/promtail-positions.yaml",
    }
    return {
        target: env.get_template(paths.template_of(target)).render(
            source=paths.template_of(target),
            **context,
        )
        for target in paths.installed_files()
        if target != paths.ROSTER_FILE
    }


def install_files(
    layout: Layout, rendered: Mapping[Path, str], roster: Path, report: Report
) -> bool:
    """Write the rendered files and the roster; return whether a unit changed."""
    from agent.roster import RosterError, load_roster  # noqa: PLC0415  # needs yaml

    try:
        load_roster(roster)
    except RosterError as err:
        raise InstallError(str(err)) from None

    files = {**rendered, paths.ROSTER_FILE: roster.read_text(encoding="utf-8")}
    units_changed = False
    for target, text in files.items():
        outcome = write_file(layout.staged(target), text, 0o644)
        changed = outcome != "unchanged"
        units_changed |= changed and target.parent == paths.UNIT_DIR
        report.step(str(target), outcome, changed)
    return units_changed


def link_commands(layout: Layout, report: Report) -> None:
    """Put the commands on PATH as links into the venv; never replace another's."""
    for name in paths.COMMANDS:
        link = layout.staged(paths.COMMAND_DIR / name)
        target = layout.prefix / "bin" / name
        if link.is_symlink() and link.readlink() == target:
            report.step(str(paths.COMMAND_DIR / name), "unchanged", changed=False)
            continue
        if link.is_symlink() or link.exists():
            report.step(
                str(paths.COMMAND_DIR / name),
                f"left alone: it is not a link to {target}; run {target} instead",
                changed=False,
            )
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        report.step(str(paths.COMMAND_DIR / name), "linked", changed=True)


def _our_commands(layout: Layout) -> Iterator[Path]:
    """The command links that point into this install's venv."""
    for name in paths.COMMANDS:
        link = layout.staged(paths.COMMAND_DIR / name)
        if link.is_symlink() and link.readlink() == layout.prefix / "bin" / name:
            yield link


# -- systemd -------------------------------------------------------------------


def enable_provisioner(layout: Layout, units_changed: bool, report: Report) -> None:
    """Reload systemd when a unit changed, and enable the provisioner's timer.

    Where systemd is not running (or under DESTDIR), the timer is enabled by
    its ``timers.target.wants`` link, as ``systemctl enable`` would make it.
    """
    systemctl = Systemctl()
    live = systemctl.running and layout.destdir is None
    if not live:
        link = layout.staged(
            paths.UNIT_DIR / "timers.target.wants" / paths.PROVISION_TIMER
        )
        present = link.is_symlink()
        if not present:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(paths.UNIT_DIR / paths.PROVISION_TIMER)
        report.step(
            paths.PROVISION_TIMER,
            "already enabled" if present else "enabled (starts at the next boot)",
            changed=not present,
        )
        return

    if units_changed:
        systemctl.run("daemon-reload")
        report.step("systemd", "reloaded", changed=True)
    if systemctl.is_enabled(paths.PROVISION_TIMER) and systemctl.is_active(
        paths.PROVISION_TIMER
    ):
        report.step(paths.PROVISION_TIMER, "already enabled and active", changed=False)
        return
    systemctl.run("enable", "--now", paths.PROVISION_TIMER)
    report.step(paths.PROVISION_TIMER, "enabled and started", changed=True)


def _our_links(unit_dir: Path) -> Iterator[Path]:
    """The enable links of this product's units, in every ``.wants`` directory."""
    for wants in unit_dir.glob("*.wants"):
        for link in wants.iterdir():
            if link.name.startswith((paths.SYNC_UNIT, "claude-auth-provision.")):
                yield link


def uninstall(layout: Layout, report: Report) -> None:
    """Stop and remove everything the install and the provisioner put in place.

    Users' homes (their token, state and Claude login) are left alone.
    """
    systemctl = Systemctl()
    unit_dir = layout.staged(paths.UNIT_DIR)
    if systemctl.running and layout.destdir is None:
        timers = [link.name for link in _our_links(unit_dir)]
        for unit in sorted(set(timers) | {paths.PROVISION_TIMER}):
            systemctl.run("disable", "--now", unit, check=False)
        systemctl.run("reset-failed", paths.SYNC_UNIT + "*", check=False)

    removals: list[Callable[[], Path | None]] = [
        *(_unlinker(link) for link in _our_links(unit_dir)),
        *(_unlinker(d / paths.HOME_DROPIN) for d in paths.dropin_dirs(unit_dir)),
        *(_unlinker(layout.staged(path)) for path in paths.installed_files()),
        *(_unlinker(link) for link in _our_commands(layout)),
    ]
    for remove in removals:
        removed = remove()
        if removed is not None:
            report.step(str(removed), "removed", changed=True)
    for directory in [*paths.dropin_dirs(unit_dir), layout.staged(paths.CONF_DIR)]:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()

    _remove_venv(layout, report)
    if systemctl.running and layout.destdir is None and report.changes:
        systemctl.run("daemon-reload")


def _unlinker(path: Path) -> Callable[[], Path | None]:
    def remove() -> Path | None:
        if not (path.is_symlink() or path.exists()):
            return None
        path.unlink()
        return path

    return remove


def _remove_venv(layout: Layout, report: Report) -> None:
    """Remove the venv, but only one that this installer made (it has the stamp)."""
    if not layout.venv.exists():
        return
    if not (layout.venv / STAMP).is_file():
        raise InstallError(
            f"{layout.venv} exists but was not made by make install-agent (no "
            f"{STAMP} in it); remove it yourself if it is unused."
        )
    shutil.rmtree(layout.venv)
    report.step(f"venv {layout.prefix}", "removed", changed=True)


# -- command line ---------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--prefix", default="/opt/claude-auth-sync")
    parser.add_argument("--destdir", default="", help="stage under this root")
    parser.add_argument("--roster", default="roster.yaml")
    parser.add_argument(
        "--wheelhouse", default="", help="install packages only from this directory"
    )
    parser.add_argument(
        "--skip-venv",
        action="store_true",
        help="render and install the files only; the package is importable already",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.umask(0o022)  # the venv and units must be readable by every user
    layout = Layout(Path(args.prefix), Path(args.destdir) if args.destdir else None)
    if not layout.prefix.is_absolute():
        print(f"PREFIX={args.prefix} must be an absolute path.", file=sys.stderr)
        return 2
    report = Report()
    try:
        if args.action == "install":
            if not args.skip_venv:
                wheelhouse = Path(args.wheelhouse) if args.wheelhouse else None
                install_venv(layout, wheelhouse, report)
                use_venv_packages(layout)
            rendered = render_all(layout, os.environ)
            changed = install_files(layout, rendered, Path(args.roster), report)
            link_commands(layout, report)
            enable_provisioner(layout, changed, report)
            report.finish("install-agent")
            return 0
        uninstall(layout, report)
        report.finish("uninstall-agent")
        return 0
    except (InstallError, OSError) as err:
        print(f"{args.action}-agent failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
