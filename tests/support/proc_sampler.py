"""Sample every process's arguments and environment until told to stop.

Run by the test session as a separate process (so that its sweeps never
compete with the tests' own threads for the interpreter lock)::

    python proc_sampler.py OUT INTERVAL_SECONDS

Every ``INTERVAL_SECONDS`` it reads ``/proc/*/cmdline``; each command line it
has not seen yet is appended to ``OUT`` as one JSON line, and so is the
process's environment when the process does not run as root (the agent and
the Claude probe run as the user; the root provisioner is handed the admin
token in ``VAULT_TOKEN`` on purpose, and passes it to no child). A command
line is fixed once a process has executed, so only new or changed ones are
read twice. On SIGTERM it appends its counts and exits.

The output holds whatever the processes held, secrets included if one got
out: it is written at mode 0600 and read back only by the session's check.
Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import IO


class Sampler:
    """The sweeps and what they found so far."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.commands: dict[int, bytes] = {}
        self.seen: set[tuple[str, bytes]] = set()
        self.sweeps = 0
        self.processes = 0

    def sweep(self) -> None:
        for name in os.listdir("/proc"):
            if name.isdigit():
                self._look_at(int(name))
        self.sweeps += 1

    def _look_at(self, pid: int) -> None:
        command = _read(f"/proc/{pid}/cmdline")
        if not command or self.commands.get(pid) == command:
            return
        self.commands[pid] = command
        self.processes += 1
        self._keep("cmdline", command)
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return
        if uid != 0:
            self._keep("environ", _read(f"/proc/{pid}/environ"))

    def _keep(self, kind: str, raw: bytes) -> None:
        if not raw or (kind, raw) in self.seen:
            return
        self.seen.add((kind, raw))
        text = raw.replace(b"\0", b" ").decode("utf-8", "replace")
        self.out.write(json.dumps({"kind": kind, "text": text}) + "\n")

    def counts(self) -> dict[str, int]:
        return {"sweeps": self.sweeps, "processes": self.processes,
                "distinct": len(self.seen)}  # fmt: skip


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:  # the process ended meanwhile, or hides it from us
        return b""


def main(argv: list[str]) -> int:
    out_path, interval = argv[1], float(argv[2])
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with os.fdopen(fd, "w", buffering=1) as out:
        sampler = Sampler(out)
        while not stopping:
            sampler.sweep()
            time.sleep(interval)
        out.write(json.dumps({"kind": "counts", **sampler.counts()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
