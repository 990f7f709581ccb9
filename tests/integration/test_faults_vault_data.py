"""Bad data at the user's Vault path: never merged in part, other keys kept.

Another tool, an operator's hand edit or an older agent may leave anything at
``secret/workstation/claude-users/<user>``. A restore takes the stored
``claudeAiOauth`` whole or not at all, and a backup keeps every key (and
every ``custom_metadata`` entry) that it does not own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agent.settings import Settings
from tests.support.agent_host import (
    LEAKS,
    MCP_OAUTH,
    Workstation,
    file_state,
    lines,
    oauth,
    only_line,
)

OTHER_TOOL = {"otherTool": {"note": "kept", "n": 3}, "rotatedBy": "ops"}


def copy(**changes: Any) -> dict[str, Any]:
    """A newer login with some fields changed; a None value removes the field."""
    login = LEAKS.oauth(oauth("stored", expires_in_days=0.4))
    login.update(changes)
    return {k: v for k, v in login.items() if v is not None}


#: What is stored as claudeAiOauth -> a name for it.
BAD_COPIES: dict[str, Callable[[], Any]] = {
    "a string": lambda: "sk-ant-ort01-not-an-object",
    "a list": lambda: [copy()],
    "no refreshToken": lambda: copy(refreshToken=None),
    "no expiresAt": lambda: copy(expiresAt=None),
    "expiresAt as text": lambda: copy(expiresAt="1900000000000"),
    "expiresAt as true": lambda: copy(expiresAt=True),
    "accessToken as a number": lambda: copy(accessToken=12345),
    "scopes as text": lambda: copy(scopes="user:inference"),
    "blanked": lambda: copy(accessToken="", refreshToken="", expiresAt=0),
    "absent": lambda: None,
}


@pytest.mark.parametrize("case", list(BAD_COPIES))
def test_bad_stored_copy_is_never_merged(station: Workstation, case: str) -> None:
    """A malformed, incomplete or blanked copy: FAIL sso_required, file untouched."""
    stored = BAD_COPIES[case]()
    data = {**OTHER_TOOL, **({"claudeAiOauth": stored} if stored is not None else {})}
    station.store(data)
    local = oauth("local-spent", expires_in_days=0.1)
    station.write_credentials(local, mcpOAuth=MCP_OAUTH)
    # A partial merge would be noticed: the fake API accepts the stored token.
    accepted = stored.get("accessToken") if isinstance(stored, dict) else None
    station.fake_claude(["api"], accepted=[accepted] if accepted else [])
    before = file_state(station.credentials_path)

    done = station.run()

    assert "no usable copy" in only_line(done, "FAIL", "sso_required", 3)
    assert file_state(station.credentials_path) == before
    assert not station.credentials_path.with_name(
        ".credentials.json.unreadable"
    ).exists()
    assert station.stored() == data


def test_deleted_latest_version_is_not_restored_from_older_ones(
    station: Workstation,
) -> None:
    """With the latest version deleted, no older version is replayed."""
    older = oauth("older-version", expires_in_days=0.4)
    station.store({"claudeAiOauth": older})
    station.store({"claudeAiOauth": oauth("latest", expires_in_days=0.4)})
    station.vault.client().secrets.kv.v2.delete_latest_version_of_secret(
        path=Settings().secret_path(station.user)
    )
    station.write_credentials(oauth("local-spent", expires_in_days=0.1))
    station.fake_claude(["api"], accepted=[older["accessToken"]])
    before = file_state(station.credentials_path)

    done = station.run()

    only_line(done, "FAIL", "sso_required", 3)
    assert file_state(station.credentials_path) == before


@pytest.mark.parametrize("case", ["a string", "no refreshToken", "absent"])
def test_backup_replaces_a_bad_copy_and_keeps_other_keys(
    station: Workstation, case: str
) -> None:
    """A backup over bad data stores the login and keeps every other key."""
    stored = BAD_COPIES[case]()
    station.store({**OTHER_TOOL, **({"claudeAiOauth": stored} if stored else {})})
    station.vault.client().secrets.kv.v2.update_metadata(
        path=Settings().secret_path(station.user),
        custom_metadata={"owner": "other-tool"},
    )
    login = oauth("current", expires_in_days=0.3)
    station.write_credentials(login, mcpOAuth=MCP_OAUTH)
    station.fake_claude(["api"], accepted=[login["accessToken"]])

    done = station.run()

    assert done.returncode == 0, done.stdout + done.stderr
    assert "backup=written" in lines(done, "OK")[0]
    assert station.stored() == {**OTHER_TOOL, "claudeAiOauth": login}
    metadata = station.vault.client().secrets.kv.v2.read_secret_metadata(
        path=Settings().secret_path(station.user)
    )["data"]["custom_metadata"]
    assert metadata["owner"] == "other-tool"
    assert metadata["host"]
