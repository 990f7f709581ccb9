"""SIGKILL at 200 random points of restores: the login file is never half-written.

Each trial starts a restore (a rejected local login, a newer good copy in
Vault) and kills the agent's whole process group, as systemd would, at a
random moment after its first probe started: during the probe, the Vault
read, the temporary file, the pause before its rename (widened by the
test-only ``CLAUDE_AUTH_SYNC_TEST_MERGE_DELAY``), the re-probe or the
backup. After each kill the file must hold exactly the old or exactly the
restored bytes, as valid JSON at mode 0600 with every other key, and the
next run must complete. Four homes of the same user run their trials side
by side to use both cores; the random offsets come from a fixed seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent_host import MCP_OAUTH, Workstation, lines, stage_restore

KILLS = 200
LANES = 4
SEED = 20261203
#: Seconds the restore pauses before its rename: long enough that a fair
#: share of the kills land while the temporary file exists.
MERGE_DELAY = "0.05"
#: Kills land this many seconds or less after the first probe starts, which
#: covers the rest of a restore (about 0.15 s here).
SPREAD = 0.16
MAX_TRIALS = 2 * KILLS


@dataclass
class Lane:
    """One home of the user, with its file's content before and after a restore."""

    station: Workstation
    old: bytes
    new: bytes
    rng: random.Random
    seen: Counter[str]


def started_probes(station: Workstation) -> int:
    calls = station.home / "fake-claude" / "calls.jsonl"
    return calls.read_bytes().count(b"\n") if calls.exists() else 0


def kill_during_restore(lane: Lane) -> str:
    """One trial: start a restore, kill it at a random point, check, recover.

    Returns where the kill left the file: ``old``, ``new`` or ``finished``
    (the run ended before its kill came).
    """
    station = lane.station
    station.write(station.credentials_path, lane.old.decode())
    probes = started_probes(station)
    offset = lane.rng.uniform(0, SPREAD)

    child = station.start(CLAUDE_AUTH_SYNC_TEST_MERGE_DELAY=MERGE_DELAY)
    deadline = time.monotonic() + 30
    while started_probes(station) == probes and child.poll() is None:
        assert time.monotonic() < deadline, "the agent never started its probe"
        time.sleep(0.002)
    time.sleep(offset)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    killed = station.collect(child).returncode == -signal.SIGKILL

    where = check_after_kill(lane)
    lane.seen["temporary file left"] += len(temporaries(station))
    done = station.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "RECOVERED" if where == "old" else "OK"), done.stdout
    assert station.credentials_path.read_bytes() == lane.new
    assert not temporaries(station), "a copy of the login was left behind"
    return where if killed else "finished"


def check_after_kill(lane: Lane) -> str:
    """The file is exactly the old or the new content, private, whole."""
    path = lane.station.credentials_path
    info = path.lstat()
    content = path.read_bytes()
    assert stat.S_ISREG(info.st_mode)
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, lane.station.uid)
    assert content in (lane.old, lane.new), content[:200]
    assert json.loads(content)["mcpOAuth"] == MCP_OAUTH

    status = lane.station.state_dir / "status.json"
    if status.exists():
        json.loads(status.read_text())
    return "old" if content == lane.old else "new"


def temporaries(station: Workstation) -> list[Path]:
    """Temporary files beside the login: each would hold a copy of it."""
    return list(station.credentials_path.parent.glob(".credentials.json.*.tmp"))


def prepare_lanes(stations: list[Workstation]) -> list[Lane]:
    """One restore staged in every home; a first restore gives its exact bytes.

    The user has one Vault path, so every home restores the same copy.
    """
    good = stage_restore(stations[0])
    old = stations[0].credentials_path.read_bytes()
    lanes = []
    for n, station in enumerate(stations):
        station.mint_token()
        station.write(station.credentials_path, old.decode())
        station.fake_claude(["api"], accepted=[good["accessToken"]])
        done = station.run()
        assert lines(done, "RECOVERED"), done.stdout + done.stderr
        new = station.credentials_path.read_bytes()
        rng = random.Random(SEED + n)  # noqa: S311  # kill times, not keys
        lanes.append(Lane(station, old, new, rng, Counter()))
    return lanes


def run_lane(lane: Lane, kills: int) -> None:
    """Trials until ``kills`` of them killed a running agent."""
    for _ in range(MAX_TRIALS // LANES):
        if lane.seen["old"] + lane.seen["new"] >= kills:
            return
        lane.seen[kill_during_restore(lane)] += 1


def test_copy_left_by_a_killed_restore_is_removed_by_the_next_run(
    workstation_for: Callable[..., Workstation],
) -> None:
    """A restore killed with its temporary file written leaves no copy for long."""
    station = workstation_for("agent-alice")
    station.mint_token()
    stage_restore(station)
    old = station.credentials_path.read_bytes()

    child = station.start(CLAUDE_AUTH_SYNC_TEST_MERGE_DELAY="5")
    deadline = time.monotonic() + 30
    while not temporaries(station):
        assert time.monotonic() < deadline, "the restore never wrote its file"
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGKILL)
    station.collect(child)
    assert station.credentials_path.read_bytes() == old

    done = station.run()

    assert lines(done, "RECOVERED"), done.stdout + done.stderr
    assert not temporaries(station)


@pytest.mark.slow
def test_sigkill_during_restores_leaves_old_or_new_file_and_next_run_completes(
    workstation_for: Callable[..., Workstation],
) -> None:
    """200 SIGKILLs at random points of restores: old or new bytes, never a mix."""
    lanes = prepare_lanes(
        [workstation_for("agent-alice", f"-lane{n}") for n in range(LANES)]
    )

    with ThreadPoolExecutor(LANES) as pool:
        for future in [pool.submit(run_lane, lane, KILLS // LANES) for lane in lanes]:
            future.result()

    total = sum((lane.seen for lane in lanes), Counter())
    print(f"\nSIGKILL trials: {dict(total)}")
    assert total["old"] + total["new"] == KILLS
    assert total["old"] and total["new"], "the kills did not spread over the restore"
