"""Where a workstation install puts things, and the paths below a user's home.

``make install-agent``, the root provisioner and the units all name these
files; keeping the names here means the drop-in the provisioner writes, the
unit that reads it and the uninstall that removes it can never disagree.
Standard library only: the installer imports this with the machine's Python,
before (and after) the package's own virtual environment exists.
"""

from __future__ import annotations

from pathlib import Path

from agent import settings

UNIT_DIR = Path("/etc/systemd/system")
CONF_DIR = Path("/etc/claude-auth-sync")
ENV_FILE = CONF_DIR / "agent.env"
ROSTER_FILE = CONF_DIR / "roster.yaml"

SYNC_UNIT = "claude-auth-sync@"
SYNC_SERVICE = SYNC_UNIT + ".service"
SYNC_TIMER = SYNC_UNIT + ".timer"
PROVISION_SERVICE = "claude-auth-provision.service"
PROVISION_TIMER = "claude-auth-provision.timer"

#: The commands, linked onto everyone's PATH from the install's own venv, so
#: that the agent's advice (``claude-auth-sync status``) works as written.
COMMAND_DIR = Path("/usr/local/bin")
COMMANDS = ("claude-auth-sync", "claude-auth-provision")

#: The login notice every interactive shell sources.
PROFILE_SNIPPET = Path("/etc/profile.d/claude-auth-sync.sh")
#: Configurations for the log shipper that carries the journal lines to Loki:
#: one for Grafana Alloy, one for promtail; the host uses whichever it runs.
SHIPPER_DIR = CONF_DIR / "log-shipper"
ALLOY_CONFIG = SHIPPER_DIR / "claude-auth-sync.alloy"
PROMTAIL_CONFIG = SHIPPER_DIR / "promtail.yaml"

#: The template of each installed file that is not named after it, relative to
#: ``templates/``; every other file's template is its own name plus ``.j2``.
TEMPLATE_OF = {
    PROFILE_SNIPPET: "profile.d/claude-auth-sync.sh.j2",
    ALLOY_CONFIG: "log-shipper/claude-auth-sync.alloy.j2",
    PROMTAIL_CONFIG: "log-shipper/promtail.yaml.j2",
}

#: The provisioner's record of each user's token accessor (root only, no
#: secret): what lets it revoke a departed user's token without reading it.
STATE_ROOT = Path("/var/lib/claude-auth-sync")
ACCESSORS_FILE = STATE_ROOT / "accessors.json"

#: The per-user drop-in that binds the user's own paths into the sandbox:
#: systemd has no specifier for the home directory of ``User=``.
HOME_DROPIN = "10-home-paths.conf"

# Below each user's home directory; the agent's own files are named in settings.
TOKEN_FILE = Path(settings.TOKEN_FILE)
TOKEN_DIR = TOKEN_FILE.parent
STATE_DIR = Path(settings.STATE_DIR)
CLAUDE_DIR = Path(".claude")
CLAUDE_JSON = Path(".claude.json")
#: Where Claude's native installer puts the CLI, if a user installed it so.
CLAUDE_USER_INSTALL = (Path(".local/bin"), Path(".local/share/claude"))


def sync_service(user: str) -> str:
    return f"{SYNC_UNIT}{user}.service"


def sync_timer(user: str) -> str:
    return f"{SYNC_UNIT}{user}.timer"


def dropin_dir(unit_dir: Path, user: str) -> Path:
    return unit_dir / f"{sync_service(user)}.d"


def dropin_dirs(unit_dir: Path) -> list[Path]:
    """Every user's drop-in directory of the renewal service under ``unit_dir``."""
    return sorted(unit_dir.glob(f"{SYNC_UNIT}*.service.d"))


def installed_files() -> tuple[Path, ...]:
    """The files ``make install-agent`` writes (final paths), each rendered from
    ``template_of`` its path, except the roster, which is copied."""
    units = (SYNC_SERVICE, SYNC_TIMER, PROVISION_SERVICE, PROVISION_TIMER)
    return (
        *(UNIT_DIR / name for name in units),
        ENV_FILE,
        ROSTER_FILE,
        PROFILE_SNIPPET,
        ALLOY_CONFIG,
        PROMTAIL_CONFIG,
    )


def template_of(target: Path) -> str:
    """The template, relative to ``templates/``, that renders an installed file."""
    return TEMPLATE_OF.get(target, f"{target.name}.j2")
