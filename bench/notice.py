"""Benchmark: what the login notice adds to the start of an interactive shell.

Usage: ``python bench/notice.py [--runs 1000]``.

Renders ``templates/profile.d/claude-auth-sync.sh.j2`` as ``make install-agent``
does, writes a ``status.json`` that asks for a login (the slowest case: the
file is read and the notice printed) with the agent's own report code, then
times ``--runs`` sourcings of the snippet inside one interactive ``bash`` and
one ``sh`` (dash), minus the same loop sourcing an empty file. The figure is
per sourcing, in milliseconds; no process is started per sourcing, exactly as
at a real login.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.report import Event, Report, Status  # noqa: E402  # needs the path above
from agent.settings import STATE_DIR  # noqa: E402


def render(target: Path) -> None:
    import jinja2  # noqa: PLC0415

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO / "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701  # a shell script, not HTML
    )
    text = env.get_template("profile.d/claude-auth-sync.sh.j2").render(
        state_dir=STATE_DIR, service_prefix="claude-auth-sync"
    )
    target.write_text(text)


def seconds(shell: str, snippet: Path, home: Path, runs: int) -> float:
    """Wall time of sourcing ``snippet`` ``runs`` times in one interactive shell."""
    loop = f"i=0; while [ $i -lt {runs} ]; do . {snippet} >/dev/null; i=$((i+1)); done"
    command = [shell, "-i", "-c", loop]
    if shell == "bash":
        command[1:1] = ["--norc", "--noprofile"]
    start = time.perf_counter()
    subprocess.run(
        command,
        env={"HOME": str(home), "USER": "alice", "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    runs = parser.parse_args().runs

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        snippet, empty = root / "notice.sh", root / "empty.sh"
        render(snippet)
        empty.write_text("")
        state = root / "home" / STATE_DIR
        state.mkdir(parents=True)
        report = Report("alice", "ws1", state, clock=time.time, out=io.StringIO())
        report.emit(Event(Status.FAIL, "sso_required", "rejected", "log in"))
        command = "claude auth login --claudeai --sso --email alice@corp.example"
        report.write_status({"needs_login": True, "login_command": command})

        print(f"{runs} sourcings each, status.json asking for a login")
        print("| shell | per sourcing |")
        print("|---|---:|")
        for shell in ("bash", "sh"):
            base = seconds(shell, empty, root / "home", runs)
            total = seconds(shell, snippet, root / "home", runs)
            print(f"| {shell} | {(total - base) / runs * 1000:.2f} ms |")


if __name__ == "__main__":
    main()
