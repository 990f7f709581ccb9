"""A booted Debian container with a real systemd, for the workstation tests.

The machines that run the tests have no systemd as PID 1, so the units are
proven inside a container: a Debian root made by ``debootstrap`` and booted
with ``systemd-nspawn``. The root is cached between local runs (building it
takes about a minute) and built fresh under CI, so that CI proves the whole
recipe. The container boots with a volatile overlay: everything a test writes
lands in memory and vanishes at shutdown, and the cached root stays pristine.

The container shares the host's network namespace, so servers that the tests
start on the host's loopback (OpenBao, the API stub) are reachable from it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.components import in_ci

SUITE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "make", "sudo",
)  # fmt: skip
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SOURCES = (
    Path("/etc/apt/sources.list.d/debian.sources"),
    Path("/etc/apt/sources.list"),
)

#: What a command inside the container sees unless a test adds to it; none of
#: the host's environment (and so none of its tokens) crosses the boundary.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class ContainerError(RuntimeError):
    """The Debian root could not be built, or the container did not boot."""


def debian_mirror(sources: Sequence[Path] = SOURCES) -> str:
    """The Debian mirror this machine's own apt uses, which it can reach.

    Reads the deb822 ``URIs:`` of the stanza whose suites include the plain
    release, or a one-line ``deb URL SUITE`` entry; else the default mirror.
    """
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        line = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M)
        if line:
            return line.group(1)
    return DEFAULT_MIRROR


def cache_root() -> Path:
    """Where built roots are kept between local runs: outside the repository."""
    configured = os.environ.get("CLAUDE_AUTH_SYNC_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "claude-auth-sync-tests"


def root_key(mirror: str) -> str:
    """A cache key that changes whenever the recipe of the root changes."""
    recipe = "\n".join((SUITE, mirror, "minbase", *PACKAGES))
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_root(target: Path, mirror: str) -> None:
    """Run debootstrap into ``target``; raise ``ContainerError`` with its log tail."""
    log = target.with_name(target.name + ".log")
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(target),
        mirror,
    ]
    with log.open("wb") as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise ContainerError(f"debootstrap exited with {done.returncode}:\n{tail}")


def debian_root(scratch: Path) -> Path:
    """A bootable Debian root: cached between local runs, fresh under CI.

    A cached root is only used once it is complete: it is built beside its
    final name and renamed into place at the end.
    """
    mirror = debian_mirror()
    if in_ci():
        target = scratch / "debian-root"
        build_root(target, mirror)
        return target

    cached = cache_root() / f"debian-{SUITE}-{root_key(mirror)}"
    if cached.is_dir():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="partial-", dir=cached.parent))
    shutil.rmtree(partial)
    try:
        build_root(partial, mirror)
        partial.rename(cached)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return cached


@dataclass
class Container:
    """A running ``systemd-nspawn`` container and the PID of its systemd."""

    nspawn: subprocess.Popen[bytes]
    leader: int
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(BASE_ENV))

    def run(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in every namespace of the container, as root there.

        ``env`` adds variables to the command's environment; it is how a
        secret reaches a command without appearing in any process argument.
        Raises ``ContainerError`` with the output when ``check`` and it fails.
        """
        done = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", *command],
            env={**self.env, **(env or {})},
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise ContainerError(
                f"{' '.join(command)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def sh(
        self,
        script: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside the container (see ``run``)."""
        return self.run(["/bin/sh", "-ec", script], env, None, timeout, check)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside the container, through its own shell."""
        self.run(
            ["/bin/sh", "-ec", f'cat > "$1"; chmod {mode:o} "$1"', "-", path],
            input_text=text,
        )


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _wait_leader(nspawn: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with {nspawn.returncode}:\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        children = _children(nspawn.pid)
        if children:
            return children[0]
        time.sleep(0.1)
    raise ContainerError(f"systemd-nspawn started no container within {timeout} s")


def _wait_booted(container: Container, timeout: float) -> None:
    """Wait until systemd inside has finished booting ("running" or "degraded")."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        done = container.run(
            ["systemctl", "is-system-running", "--wait"], timeout=timeout, check=False
        )
        state = done.stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.2)
    raise ContainerError(f"the container did not finish booting (state {state!r})")


def stop(nspawn: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Power the container off; kill it if it does not go in time.

    systemd-nspawn turns SIGTERM into an orderly shutdown of the container.
    """
    if nspawn.poll() is not None:
        return
    nspawn.send_signal(signal.SIGTERM)
    try:
        nspawn.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        nspawn.kill()
        nspawn.wait()


@contextmanager
def booted(
    root: Path,
    scratch: Path,
    binds_ro: Mapping[Path, str] | None = None,
    timeout: float = 90,
) -> Iterator[Container]:
    """Boot ``root`` with systemd as PID 1; stop it when the block ends, always.

    ``binds_ro`` maps host paths to where they appear, read-only, inside.
    ``--keep-unit --register=no`` are needed where the host has no systemd
    bus; ``--volatile=overlay`` keeps every write in memory.
    """
    log = scratch / "nspawn.log"
    command = [
        "systemd-nspawn",
        "--keep-unit",
        "--register=no",
        "--volatile=overlay",
        "--console=passive",
        f"--machine=cas-{os.getpid()}",
        "-D",
        str(root),
        *(f"--bind-ro={host}:{guest}" for host, guest in (binds_ro or {}).items()),
        "-b",
    ]
    with log.open("wb") as out:
        nspawn = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        container = Container(nspawn, _wait_leader(nspawn, log, timeout), log)
        _wait_booted(container, timeout)
        yield container
    finally:
        stop(nspawn)
