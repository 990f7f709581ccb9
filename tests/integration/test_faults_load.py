"""Load: 500 users' agents against one OpenBao, each with its own scoped token.

Five hundred real OS accounts are added to the user database for the test
(in one step: see ``many_accounts``), the stack for all of them is applied,
and each gets a token minted through its own role, a login of its own and
an instant fake ``claude``. The agents run as their users through a
recording forwarder in front of OpenBao, which labels every request with
whose token sent it and times it. Two cores cannot run 500 Python processes
at once usefully, so at most ``CONCURRENCY`` run at a time, a new one
starting as soon as one ends.

What must hold: every run ends OK with its login written, every user's
path holds exactly that user's login, and every request reached only its
own user's path. The p50 and p99 of a run's Vault time (the sum of its
requests' times at the forwarder) are printed, for docs/reliability.md.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.settings import DEFAULT_KV_PREFIX
from tests.support.agent_host import (
    LEAKS,
    Workstation,
    lines,
    many_accounts,
    oauth,
)
from tests.support.components import REPO
from tests.support.openbao import OpenBao
from tests.support.vault_recorder import Call, vault_proxy

pytestmark = pytest.mark.slow

USERS = 500
#: Runs at a time; ``FAULTS_LOAD_CONCURRENCY`` changes it to rerun the figures.
CONCURRENCY = int(os.environ.get("FAULTS_LOAD_CONCURRENCY") or 8)
INSTANT_CLAUDE = REPO / "tests" / "support" / "instant_claude.sh"


@pytest.fixture
def fleet(
    apply_roster: Callable[..., Path],
    openbao: OpenBao,
    homes: Path,
    tmp_path: Path,
) -> Iterator[list[Workstation]]:
    """500 users with the stack applied, a token, a login and a home each."""
    with many_accounts("load-", USERS) as accounts:
        roster_text = "users:\n" + "".join(
            f"  {a.pw_name}: {{email: {a.pw_name}@corp.example}}\n" for a in accounts
        )
        apply_roster(roster_text)
        roster = homes / f"roster-{tmp_path.name}.yaml"
        roster.write_text(roster_text)
        roster.chmod(0o644)

        stations = []
        for account in accounts:
            station = Workstation.create(
                account, homes / f"{tmp_path.name}-{account.pw_name}", openbao, roster
            )
            station.mint_token()
            station.write_credentials(oauth(account.pw_name))
            station.env["CLAUDE_BIN"] = str(INSTANT_CLAUDE)
            stations.append(station)
        yield stations


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the value below which ``share`` of them lie."""
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered)) - 1)]


def foreign_requests(calls: list[Call]) -> list[tuple[str, str]]:
    """Requests that named a user's path other than the sender's, or no sender."""
    prefix = f"/{DEFAULT_KV_PREFIX}/"
    return [
        (call.who, call.path)
        for call in calls
        if not call.who
        or (prefix in call.path and call.path.split(prefix)[1] != call.who)
    ]


def test_five_hundred_agents_back_up_their_own_logins(
    fleet: list[Workstation], openbao: OpenBao
) -> None:
    """500 agents with their own tokens: all OK, each path its own user's login."""
    first_text = len(LEAKS.texts)
    owners = {s.token_path.read_text().strip(): s.user for s in fleet}
    walls: dict[str, float] = {}

    def run(station: Workstation, addr: str) -> str:
        started = time.monotonic()
        done = station.run(VAULT_ADDR=addr)
        walls[station.user] = time.monotonic() - started
        ok = lines(done, "OK")
        return ok[0] if ok and done.returncode == 0 else done.stdout + done.stderr

    with (
        vault_proxy(openbao.addr, who=owners.get) as proxy,
        ThreadPoolExecutor(CONCURRENCY) as pool,
    ):
        results = list(pool.map(run, fleet, [proxy.addr] * len(fleet)))

    failed = [r for r in results if "backup=written" not in r]
    assert not failed, f"{len(failed)} runs failed, such as: {failed[:3]}"
    assert not foreign_requests(proxy.calls)
    assert all(s.stored() == {"claudeAiOauth": s.credentials()["claudeAiOauth"]}
               for s in fleet)  # fmt: skip
    assert not LEAKS.leaks(since=first_text)

    vault_ms: dict[str, float] = defaultdict(float)
    for call in proxy.calls:
        vault_ms[call.who] += call.seconds * 1000
    times = list(vault_ms.values())
    print(
        f"\n{USERS} agents, {CONCURRENCY} at a time, {len(proxy.calls)} Vault "
        f"requests: Vault time per run p50 {percentile(times, 0.5):.1f} ms, "
        f"p99 {percentile(times, 0.99):.1f} ms, max {max(times):.1f} ms; "
        f"run wall time p50 {statistics.median(walls.values()) * 1000:.0f} ms, "
        f"p99 {percentile(list(walls.values()), 0.99) * 1000:.0f} ms"
    )
