"""Races: many runs at once, Claude writing during a restore, two hosts at once."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.agent_host import (
    MCP_OAUTH,
    Workstation,
    lines,
    oauth,
    stage_restore,
)
from tests.support.vault_recorder import VaultProxy, vault_proxy

KV_DATA = "/v1/secret/data/workstation/claude-users/agent-alice"
CONCURRENT_RUNS = 20


def test_twenty_concurrent_runs_one_restores_the_others_skip(
    station: Workstation,
) -> None:
    """20 runs at once for one user: one restores, 19 SKIP with exit 0, no damage."""
    good = stage_restore(station)
    # Each probe takes 1.5 s, so the run holding the lock holds it while the
    # others start.
    station.fake_claude(["api"], accepted=[good["accessToken"]], delay=1.5)

    children = [station.start() for _ in range(CONCURRENT_RUNS)]
    done = [station.collect(child) for child in children]

    assert [d.returncode for d in done] == [0] * CONCURRENT_RUNS
    outcomes = sorted(d.stdout.split()[0] for d in done)
    assert outcomes == ["status=RECOVERED"] + ["status=SKIP"] * (CONCURRENT_RUNS - 1)
    assert station.credentials() == {
        "claudeAiOauth": good, "mcpOAuth": MCP_OAUTH, "organizationUuid": "org-1"
    }  # fmt: skip
    assert station.stored() == {"claudeAiOauth": good}
    log = (station.state_dir / "sync.log").read_text().splitlines()
    assert len(log) == CONCURRENT_RUNS
    assert all(line.startswith("time=") for line in log)
    json.loads((station.state_dir / "status.json").read_text())


def rewrite_in_place(station: Workstation, data: dict[str, Any]) -> None:
    """An editor, or a tool, that rewrites the file through the same inode."""
    with open(station.credentials_path, "r+", encoding="utf-8") as handle:
        handle.truncate(0)
        handle.write(json.dumps(data, indent=1))


def rewrite_by_rename(station: Workstation, data: dict[str, Any]) -> None:
    """A second Claude session refreshing: a temporary file renamed over it."""
    tmp = station.credentials_path.with_name(".credentials.json.claude-session")
    station.write(tmp, json.dumps(data, indent=2))
    os.replace(tmp, station.credentials_path)


@pytest.mark.parametrize("rewrite", [rewrite_in_place, rewrite_by_rename])
def test_claude_writing_during_a_restore_is_never_overwritten(
    station: Workstation, rewrite: Callable[[Workstation, dict[str, Any]], None]
) -> None:
    """A login written while a restore waits to rename wins, byte for byte."""
    stage_restore(station)
    login = oauth("claude-refreshed", expires_in_days=0.5)
    refreshed = {"claudeAiOauth": login, "mcpOAuth": MCP_OAUTH}
    station.fake_claude(["api"], accepted=[login["accessToken"]])

    child = station.start(CLAUDE_AUTH_SYNC_TEST_MERGE_DELAY="1.5")
    folder = station.credentials_path.parent
    deadline = time.monotonic() + 30
    while not list(folder.glob(".credentials.json.*.tmp")):
        assert time.monotonic() < deadline, "the restore never wrote its file"
        time.sleep(0.005)
    rewrite(station, refreshed)
    written = station.credentials_path.read_bytes()
    done = station.collect(child)

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "OK") and not lines(done, "RECOVERED"), done.stdout
    assert station.credentials_path.read_bytes() == written
    assert station.stored() == {"claudeAiOauth": login}


class WriteOrder:
    """Lets both hosts read the backup, then lets their writes go in turn.

    Both reads are held until each host has asked, so both see the same
    version; ``first``'s write goes on at once, and the other's only after
    Vault answered it, so that check-and-set must refuse the second.
    """

    def __init__(self, proxy: Callable[[], VaultProxy], first: str) -> None:
        self.proxy = proxy
        self.first = first
        self.reads = threading.Barrier(2, timeout=30)
        self.read_by: set[str] = set()

    def __call__(self, method: str, path: str, who: str) -> int | None:
        if path != KV_DATA:
            return None
        if method == "GET" and who not in self.read_by:
            self.read_by.add(who)
            self.reads.wait()
        elif method in ("POST", "PUT") and who != self.first:
            self._wait_for_first_write()
        return None

    def _wait_for_first_write(self) -> None:
        deadline = time.monotonic() + 30
        while not any(
            c.who == self.first and c.method in ("POST", "PUT") and c.path == KV_DATA
            for c in self.proxy().calls
        ):
            assert time.monotonic() < deadline, "the first host never wrote"
            time.sleep(0.005)


@pytest.mark.parametrize("first", ["ws-newer", "ws-older"])
def test_two_hosts_backing_up_at_once_keep_the_newest(
    workstation_for: Callable[..., Workstation], first: str
) -> None:
    """Two hosts back up one user at once: check-and-set keeps the newest login."""
    hosts = {
        "ws-older": workstation_for("agent-alice", "-ws-older"),
        "ws-newer": workstation_for("agent-alice", "-ws-newer"),
    }
    logins = {
        "ws-older": oauth("older-host", expires_in_days=0.2),
        "ws-newer": oauth("newer-host", expires_in_days=0.4),
    }
    tokens = {}
    for name, host in hosts.items():
        tokens[host.mint_token()] = name
        host.write_credentials(logins[name])
        host.fake_claude(["api"], accepted=[logins[name]["accessToken"]])

    holder: list[VaultProxy] = []
    order = WriteOrder(lambda: holder[0], first)
    with vault_proxy(hosts[first].vault.addr, order, tokens.get) as proxy:
        holder.append(proxy)
        children = {
            name: host.start(hostname=name, VAULT_ADDR=proxy.addr)
            for name, host in hosts.items()
        }
        done = {name: hosts[name].collect(child) for name, child in children.items()}

    writes = [(c.who, c.status) for c in proxy.calls if c.method != "GET"
              and c.path == KV_DATA]  # fmt: skip
    if first == "ws-newer":  # the older host's retry finds a newer login
        assert writes == [("ws-newer", 200), ("ws-older", 400)]
    else:  # the newer host's retry writes over the older login
        assert writes == [("ws-older", 200), ("ws-newer", 400), ("ws-newer", 200)]
    for name, result in done.items():
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"host={name} " in lines(result, "OK")[0]
    assert hosts[first].stored() == {"claudeAiOauth": logins["ws-newer"]}
    if first == "ws-newer":
        assert "backup=newer_kept" in lines(done["ws-older"], "OK")[0]
