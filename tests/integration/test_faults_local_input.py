"""Bad local input: broken credentials and token files, as alice, beside bob.

The credentials cases run the real Claude CLI against the local API stub,
because how the real CLI reads a broken file is part of what is tested; the
token cases stop before any probe. In every case bob's files stay exactly as
they were, and a refused file is refused before Vault or the API hears of it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_host import (
    MCP_OAUTH,
    FileState,
    Workstation,
    file_state,
    lines,
    oauth,
    only_line,
)
from tests.support.api_stub import ApiStub, api_stub
from tests.support.components import claude_binary, require
from tests.support.vault_recorder import vault_recorder


@pytest.fixture
def api() -> Iterator[ApiStub]:
    with api_stub() as stub:
        yield stub


@pytest.fixture
def bob(workstation_for: Callable[..., Workstation]) -> Workstation:
    """Bob next door, with a login and a token of his own."""
    neighbour = workstation_for("agent-bob")
    neighbour.mint_token()
    neighbour.write_credentials(oauth("bob"), mcpOAuth=MCP_OAUTH)
    return neighbour


@pytest.fixture
def bobs_files(bob: Workstation) -> Iterator[dict[Path, FileState]]:
    """Bob's files before the test; after it they must be exactly the same."""
    paths = [bob.credentials_path, bob.token_path, bob.home]
    before = {path: file_state(path) for path in paths}
    yield before
    assert {path: file_state(path) for path in paths} == before
    assert sorted(p.name for p in bob.home.iterdir()) == [".claude", ".config"]


@pytest.fixture
def alice(
    workstation_for: Callable[..., Workstation],
    api: ApiStub,
    bobs_files: dict[Path, FileState],
) -> tuple[Workstation, dict[str, Any]]:
    """Alice with her token, the real CLI, and a good login in Vault."""
    claude = require(
        "the Claude Code CLI", claude_binary(), "make node (npm ci in tests/node)"
    )
    station = workstation_for("agent-alice")
    station.mint_token()
    station.env.update(CLAUDE_BIN=str(claude), ANTHROPIC_BASE_URL=api.base_url)
    good = oauth("vault-copy", expires_in_days=0.4)
    station.store({"claudeAiOauth": good})
    api.accept(good["accessToken"])
    return station, good


def wrong_types() -> dict[str, Any]:
    login = oauth("typed")
    return {"claudeAiOauth": {**login, "expiresAt": str(login["expiresAt"]),
                              "scopes": "user:inference"}}  # fmt: skip


#: Broken contents that a restore repairs: name -> (bytes, keys kept beside).
REPAIRABLE: dict[str, tuple[Callable[[], bytes], dict[str, Any]]] = {
    "empty": (lambda: b"", {}),
    "not JSON": (lambda: b'{"claudeAiOauth": {"accessToken": "sk-ant-oat01-', {}),
    "a JSON list": (lambda: b"[1, 2, 3]", {}),
    "no claudeAiOauth": (
        lambda: json_bytes({"mcpOAuth": MCP_OAUTH}),
        {"mcpOAuth": MCP_OAUTH},
    ),
    "fields of the wrong type": (lambda: json_bytes(wrong_types()), {}),
}


def json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REPAIRABLE))
def test_broken_credentials_are_restored_and_kept_aside(
    alice: tuple[Workstation, dict[str, Any]], case: str
) -> None:
    """A file Claude cannot use is restored from Vault; the old bytes are kept."""
    station, good = alice
    content, kept = REPAIRABLE[case][0](), REPAIRABLE[case][1]
    station.write(station.credentials_path, content.decode())

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done, "RECOVERED"), done.stdout
    assert station.credentials() == {**kept, "claudeAiOauth": good}
    aside = station.credentials_path.with_name(".credentials.json.unreadable")
    assert file_state(aside).content == content
    assert file_state(aside).mode == 0o600


@pytest.mark.slow
def test_missing_credentials_are_restored(
    alice: tuple[Workstation, dict[str, Any]],
) -> None:
    """No credentials file at all: the Vault copy is written as a new 0600 file."""
    station, good = alice

    done = station.run()

    assert lines(done, "RECOVERED"), done.stdout + done.stderr
    assert station.credentials() == {"claudeAiOauth": good}
    assert file_state(station.credentials_path).mode == 0o600


def junk(station: Workstation, bob: Workstation) -> str:
    station.write(station.credentials_path, secrets.token_hex(5 << 20))
    return "larger than"


def symlink_to_bob(station: Workstation, bob: Workstation) -> str:
    # Readable by alice, so following the link would really read bob's login.
    bob.credentials_path.chmod(0o644)
    bob.credentials_path.parent.chmod(0o755)
    bob.home.chmod(0o711)
    station.write(station.credentials_path, "{}")
    station.credentials_path.unlink()
    station.credentials_path.symlink_to(bob.credentials_path)
    os.lchown(station.credentials_path, station.uid, station.gid)
    return "is a symlink"


def directory(station: Workstation, bob: Workstation) -> str:
    station.write(station.credentials_path, "{}")
    station.credentials_path.unlink()
    station.credentials_path.mkdir()
    station.own(station.credentials_path, 0o700)
    return "not a regular file"


@pytest.mark.parametrize("make", [junk, symlink_to_bob, directory])
def test_unusable_credentials_file_is_refused_before_anything_is_asked(
    alice: tuple[Workstation, dict[str, Any]],
    api: ApiStub,
    bob: Workstation,
    bobs_files: dict[Path, FileState],
    make: Callable[[Workstation, Workstation], str],
) -> None:
    """10 MB of junk, a symlink to bob's file, a directory: FAIL, exit 7."""
    station, _ = alice
    said = make(station, bob)
    bobs_files.update({bob.credentials_path: file_state(bob.credentials_path),
                       bob.home: file_state(bob.home)})  # fmt: skip
    before = file_state(station.credentials_path)

    with vault_recorder(station.vault.addr) as (addr, seen):
        done = station.run(VAULT_ADDR=addr)

    line = only_line(done, "FAIL", "credentials_file", 7)
    assert said in line and str(station.credentials_path) in line
    assert seen == [] and api.inference_bearers() == []
    assert file_state(station.credentials_path) == before


@pytest.fixture
def token_station(
    workstation_for: Callable[..., Workstation], bobs_files: dict[Path, FileState]
) -> Workstation:
    """Alice with a valid login and a fake claude that would accept it."""
    station = workstation_for("agent-alice")
    station.mint_token()
    login = oauth("alice")
    station.write_credentials(login, mcpOAuth=MCP_OAUTH)
    station.fake_claude(["api"], accepted=[login["accessToken"]])
    return station


def bobs_token(station: Workstation, bob: Workstation, mode: int) -> None:
    station.token_path.write_bytes(bob.token_path.read_bytes())
    bob.own(station.token_path, mode)


#: How the token file is broken -> what the line must say.
BAD_TOKEN_FILES: dict[str, tuple[Callable[[Workstation, Workstation], None], str]] = {
    "mode 0644": (lambda s, b: s.token_path.chmod(0o644), "chmod 600"),
    "owned by bob, 0600": (lambda s, b: bobs_token(s, b, 0o600), "cannot be opened"),
    "owned by bob, 0644": (lambda s, b: bobs_token(s, b, 0o644), "owned by agent-bob"),
    "empty": (lambda s, b: s.write(s.token_path, ""), "is empty"),
    "whitespace only": (lambda s, b: s.write(s.token_path, " \n\t\n"), "is empty"),
    "two lines": (
        lambda s, b: s.write(s.token_path, s.token_path.read_text() * 2),
        "is not a single line",
    ),
    "symlink to bob's": (
        lambda s, b: (s.token_path.unlink(), s.token_path.symlink_to(b.token_path)),
        "is a symlink",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKEN_FILES))
def test_bad_token_file_is_refused_before_anything_is_asked(
    token_station: Workstation,
    bob: Workstation,
    bobs_files: dict[Path, FileState],
    case: str,
) -> None:
    """A token file that is unsafe or not one token: FAIL token_file, exit 5."""
    station = token_station
    make, said = BAD_TOKEN_FILES[case]
    make(station, bob)
    before = file_state(station.credentials_path)

    with vault_recorder(station.vault.addr) as (addr, seen):
        done = station.run(VAULT_ADDR=addr)

    line = only_line(done, "FAIL", "token_file", 5)
    assert said in line and str(station.token_path) in line
    assert seen == []
    assert not (station.home / "fake-claude" / "calls.jsonl").exists()
    assert file_state(station.credentials_path) == before


def token_dir_to_bobs(station: Workstation, bob: Workstation) -> None:
    station.token_path.unlink()
    station.token_path.parent.rmdir()
    station.token_path.parent.symlink_to(bob.token_path.parent)


def token_file_to_bobs(station: Workstation, bob: Workstation) -> None:
    station.token_path.unlink()
    station.token_path.symlink_to(bob.token_path)


@pytest.mark.parametrize("make", [token_dir_to_bobs, token_file_to_bobs])
def test_provisioner_refuses_a_home_pointing_into_bobs(
    token_station: Workstation,
    bob: Workstation,
    bobs_files: dict[Path, FileState],
    tmp_path: Path,
    make: Callable[[Workstation, Workstation], None],
) -> None:
    """A token path that leads into bob's home: alice fails, bob's token stays."""
    make(token_station, bob)

    outcome = token_station.provision(tmp_path)

    assert outcome.error is not None
    assert str(token_station.token_path.parent) in outcome.error.message
    assert "symlink" in outcome.error.message
    assert token_station.token_path.parent.is_symlink() or (
        token_station.token_path.is_symlink()
    )
