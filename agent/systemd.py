"""A thin wrapper over ``systemctl``, for the installer and the provisioner.

Both must work where systemd is not running (a container image being built, a
staged install): ``running`` says whether the systemctl steps can be taken at
all, so callers skip only those and say so.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

RUN_DIR = Path("/run/systemd/system")


class SystemctlError(RuntimeError):
    """A systemctl command failed; the message holds its output."""


class Systemctl:
    """Runs systemctl; ``running`` is whether systemd is this host's init."""

    def __init__(self, run_dir: Path = RUN_DIR) -> None:
        self.running = run_dir.is_dir()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``systemctl ARGS``; raises ``SystemctlError`` when it fails and
        ``check`` is set. Never given a secret: its arguments are unit names."""
        log.debug("systemctl %s", " ".join(args))
        done = subprocess.run(
            ["systemctl", *args], capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise SystemctlError(
                f"systemctl {' '.join(args)} exited with {done.returncode}: {output}"
            )
        return done

    def is_enabled(self, unit: str) -> bool:
        return self.run("is-enabled", unit, check=False).stdout.strip() == "enabled"

    def is_active(self, unit: str) -> bool:
        return self.run("is-active", unit, check=False).stdout.strip() == "active"

    def instances(self, template: str) -> set[str]:
        """Names of the loaded or enabled instances of a template (``name@``)."""
        pattern = f"{template}*"
        found: set[str] = set()
        for verb in ("list-units", "list-unit-files"):
            done = self.run(verb, "--no-legend", "--plain", pattern, check=False)
            found |= {
                line.split()[0]
                for line in done.stdout.splitlines()
                if line.split() and "@." not in line.split()[0]
            }
        return found
