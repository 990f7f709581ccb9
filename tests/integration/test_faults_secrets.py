"""The session's watch on every process: it sees what it must, and no token.

The sampler (``tests/support/proc_sampler.py``) runs beside the whole test
session; at its end every command line and every non-root environment it
saw, and every output the tests kept, is searched for every token any test
used. These tests show that the watch would see a leak, and that an agent
run, watched while its probe runs, shows none.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.support.agent_host import (
    FAKE_CLAUDE,
    LEAKS,
    PROCESSES,
    Workstation,
    lines,
    oauth,
)


@pytest.fixture(autouse=True)
def sampling() -> None:
    if PROCESSES.child is None or PROCESSES.child.poll() is not None:
        pytest.skip("the process watch is not running in this session (no /proc)")


def sampled(marker: str, kind: str, timeout: float = 5) -> list[str]:
    """The samples of ``kind`` holding ``marker``, once the sampler wrote one."""
    deadline = time.monotonic() + timeout
    while True:
        found = [t for k, t in PROCESSES.samples() if k == kind and marker in t]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_watch_sees_the_arguments_of_a_short_process(
    workstation_for: Callable[..., Workstation],
) -> None:
    """A process living 50 ms, as a user, has its arguments sampled."""
    station = workstation_for("agent-alice")
    marker = f"planted-{secrets.token_hex(8)}"

    subprocess.run(["/bin/sh", "-c", "sleep 0.05", marker], user=station.uid,
                   group=station.gid, extra_groups=[], check=True)  # fmt: skip

    assert sampled(marker, "cmdline")


def test_watch_sees_the_environment_of_a_users_process(
    workstation_for: Callable[..., Workstation],
) -> None:
    """A user's process has its environment sampled too."""
    station = workstation_for("agent-alice")
    marker = f"planted-{secrets.token_hex(8)}"

    subprocess.run(["/bin/sleep", "0.05"], env={"PLANTED": marker},
                   user=station.uid, group=station.gid, extra_groups=[],
                   check=True)  # fmt: skip

    assert sampled(marker, "environ")


def test_agent_and_probe_carry_no_token_in_arguments_or_environment(
    workstation_for: Callable[..., Workstation],
) -> None:
    """Sampled during a run, the agent and its probe show no token anywhere."""
    station = workstation_for("agent-alice")
    token = station.mint_token()
    login = oauth("watched")
    station.write_credentials(login)
    station.fake_claude(["api"], accepted=[login["accessToken"]], delay=0.3)
    home = str(station.home)

    done = station.run()

    assert lines(done, "OK"), done.stdout + done.stderr
    probe = sampled(str(FAKE_CLAUDE), "cmdline")
    assert any(" -p " in text for text in probe), "the probe was never sampled"
    watched = [text for _, text in PROCESSES.samples() if home in text]
    assert watched, "no process of this run was sampled"
    tokens = {token, login["accessToken"], login["refreshToken"]}
    assert tokens <= LEAKS.secrets
    assert not [t for t in tokens if any(t in text for text in watched)]
