"""Benchmark: how long ``python main.py`` takes, and how much memory, per roster size.

Usage: ``python bench/synth.py [--sizes 100,1000,10000] [--runs 3]``.

For each size a roster of generated users is written to a scratch folder and
``main.py`` is run on it as a child process, exactly as ``make synth`` runs it,
``--runs`` times. Each run records:

- wall time, from start to exit of the child;
- peak RSS of the largest single process (``ru_maxrss`` from ``wait4``, which
  covers the child and every descendant it waited for: Python and cdktf's two
  Node processes);
- peak RSS of the whole process tree, summed over Python and Node, sampled
  every 20 ms from ``/proc`` (a sample can miss a peak shorter than that).

It prints the median of each per size as a Markdown table, for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_EVERY = 0.02  # seconds
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Run:
    """One synthesis: wall seconds and peak memory in MiB."""

    seconds: float
    largest_mib: float
    tree_mib: float


def write_roster(users: int, path: Path) -> None:
    """A valid roster of ``users`` generated users, one line each."""
    lines = ["users:"]
    lines += [f"  u{i:05d}: {{email: u{i:05d}@corp.example}}" for i in range(users)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found = []
        for task in tasks:
            text = (task / "children").read_text()
            found += [int(p) for p in text.split()]
        return found
    except OSError:
        return []


def tree_rss_kib(root: int) -> int:
    """The summed resident memory of a process and all its descendants, in KiB."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
        pending += _children(pid)
    return total


def synthesize_once(roster: Path, outdir: Path) -> Run:
    """Run main.py once on the roster, sampling its process tree until it exits."""
    env = {
        **os.environ,
        "ROSTER": str(roster),
        "CDKTF_OUTDIR": str(outdir),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(REPO / "main.py")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    tree_peak = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        tree_peak = max(tree_peak, tree_rss_kib(child.pid))
        time.sleep(SAMPLE_EVERY)
    seconds = time.perf_counter() - start

    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"main.py failed with {child.returncode}:\n{errors}")
    return Run(seconds, usage.ru_maxrss / 1024, tree_peak / 1024)


def main() -> int:
    """Run every size, print one Markdown row per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    python = sys.version.split()[0]
    print(f"{args.runs} runs each, median; {os.cpu_count()} CPUs, Python {python}")
    print("| users | wall time | peak RSS, largest process | peak RSS, whole tree |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as scratch:
        for size in (int(s) for s in args.sizes.split(",")):
            roster = Path(scratch) / f"roster-{size}.yaml"
            write_roster(size, roster)
            runs = [
                synthesize_once(roster, Path(scratch) / "out") for _ in range(args.runs)
            ]
            print(
                f"| {size:,} | {statistics.median(r.seconds for r in runs):.1f} s "
                f"| {statistics.median(r.largest_mib for r in runs):.0f} MiB "
                f"| {statistics.median(r.tree_mib for r in runs):.0f} MiB |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
