"""Reading, judging and merging Claude's credentials file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.credentials import (
    LoginState,
    claude_email,
    credentials_path,
    fingerprint,
    merge_oauth,
    oauth_problem,
    read_credentials,
    write_merged,
)
from agent.errors import CredentialsChanged, CredentialsFileError

UID = os.geteuid()
LOGIN = {
    "accessToken": "sk-ant-oat01-local",
    "refreshToken": "sk-ant-ort01-local",
    "expiresAt": 1_900_000_000_000,
    "scopes": ["user:inference"],
    "subscriptionType": "enterprise",
}
RESTORED = {
    **LOGIN,
    "accessToken": "sk-ant-oat01-vault",
    "expiresAt": 1_900_000_500_000,
}
OTHERS: dict[str, Any] = {
    "mcpOAuth": {"srv|1": {"accessToken": "m", "expiresAt": 5, "scope": None}},
    "zLast": [1, 2.5, True, None],
}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    folder = tmp_path / ".claude"
    folder.mkdir(mode=0o700)
    return folder / ".credentials.json"


def write(path: Path, data: Any) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(0o600)


def test_missing_file_is_a_missing_login(path: Path) -> None:
    """No file is a state a restore can repair, not an error."""
    assert read_credentials(path, UID).state is LoginState.MISSING


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '"text"'])
def test_unparsable_file_is_malformed(path: Path, content: str) -> None:
    """Anything but a JSON object is a malformed login."""
    write(path, content)
    assert read_credentials(path, UID).state is LoginState.MALFORMED


@pytest.mark.parametrize(
    "login",
    [
        {**LOGIN, "expiresAt": "1900000000000"},
        {**LOGIN, "expiresAt": True},
        {**LOGIN, "accessToken": None},
        {**LOGIN, "scopes": "user:inference"},
        {**LOGIN, "scopes": [1]},
        {key: value for key, value in LOGIN.items() if key != "refreshToken"},
    ],
)
def test_fields_of_the_wrong_type_are_malformed(path: Path, login: Any) -> None:
    """A login with a missing field or a wrong JSON type is never used."""
    write(path, {"claudeAiOauth": login})
    assert read_credentials(path, UID).state is LoginState.MALFORMED


def test_file_without_a_login_is_malformed(path: Path) -> None:
    """A file holding only other keys has no login to probe."""
    write(path, OTHERS)
    found = read_credentials(path, UID)
    assert (found.state, found.data) == (LoginState.MALFORMED, OTHERS)


def test_blanked_login_is_recognised(path: Path) -> None:
    """Empty tokens and expiresAt 0, as a failed refresh leaves them, are blanked."""
    write(path, {"claudeAiOauth": {**LOGIN, "accessToken": "", "refreshToken": "",
                                   "expiresAt": 0}})  # fmt: skip
    assert read_credentials(path, UID).state is LoginState.BLANKED


def test_good_login_is_present(path: Path) -> None:
    """A well-formed login is read with its exact values."""
    write(path, {"claudeAiOauth": LOGIN, **OTHERS})
    found = read_credentials(path, UID)
    assert (found.state, found.oauth) == (LoginState.PRESENT, LOGIN)


def test_symlink_is_refused(path: Path, tmp_path: Path) -> None:
    """A symlink in place of the file is refused, whatever it points at."""
    target = tmp_path / "elsewhere.json"
    write(target, {"claudeAiOauth": LOGIN})
    path.symlink_to(target)
    with pytest.raises(CredentialsFileError, match="is a symlink"):
        read_credentials(path, UID)


def test_directory_is_refused(path: Path) -> None:
    """A directory in the file's place is refused with the fix."""
    path.mkdir()
    with pytest.raises(CredentialsFileError, match="not a regular file"):
        read_credentials(path, UID)


def test_someone_elses_file_is_refused(path: Path) -> None:
    """A file owned by another user is refused."""
    write(path, {"claudeAiOauth": LOGIN})
    with pytest.raises(CredentialsFileError, match="is owned by"):
        read_credentials(path, UID + 1)


def test_merge_replaces_only_the_login_and_keeps_order() -> None:
    """Merging keeps every other key, its value and its place."""
    data = {"first": 1, "claudeAiOauth": LOGIN, **OTHERS}
    merged = merge_oauth(data, RESTORED)
    assert list(merged) == list(data)
    assert merged == {"first": 1, "claudeAiOauth": RESTORED, **OTHERS}


def test_write_merged_keeps_other_keys_at_mode_600(path: Path) -> None:
    """A restore writes the new login, keeps every other key, and mode 0600."""
    write(path, {"claudeAiOauth": LOGIN, **OTHERS})
    path.chmod(0o644)

    write_merged(read_credentials(path, UID), RESTORED)

    assert json.loads(path.read_text()) == {"claudeAiOauth": RESTORED, **OTHERS}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [".credentials.json"]


def test_write_merged_refuses_a_file_changed_since_read(path: Path) -> None:
    """If Claude rewrote the file after it was read, the restore backs off."""
    write(path, {"claudeAiOauth": LOGIN, **OTHERS})
    seen = read_credentials(path, UID)
    claude_wrote = {"claudeAiOauth": {**LOGIN, "accessToken": "new"}, **OTHERS}
    tmp = path.with_name("claude.tmp")
    write(tmp, claude_wrote)
    tmp.replace(path)

    with pytest.raises(CredentialsChanged):
        write_merged(seen, RESTORED)
    assert json.loads(path.read_text()) == claude_wrote
    assert sorted(p.name for p in path.parent.iterdir()) == [".credentials.json"]


def test_write_merged_keeps_a_malformed_file_aside(path: Path) -> None:
    """Restoring over junk keeps the junk beside it, so nothing is lost."""
    write(path, "{not json")
    write_merged(read_credentials(path, UID), RESTORED)
    assert json.loads(path.read_text()) == {"claudeAiOauth": RESTORED}
    kept = path.with_name(".credentials.json.unreadable")
    assert kept.read_text() == "{not json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_write_merged_creates_a_missing_file(path: Path) -> None:
    """With no file at all, the restore creates one holding only the login."""
    path.parent.rmdir()
    write_merged(read_credentials(path, UID), RESTORED)
    assert json.loads(path.read_text()) == {"claudeAiOauth": RESTORED}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_oauth_problem_accepts_a_real_login() -> None:
    """The shape Claude writes passes the check."""
    assert oauth_problem(LOGIN) == ""


def test_fingerprint_is_short_and_stable() -> None:
    """The fingerprint tells tokens apart without showing them."""
    assert fingerprint("abc") == fingerprint("abc") != fingerprint("abd")
    assert len(fingerprint("abc")) == 12


def test_config_dir_moves_the_file(tmp_path: Path) -> None:
    """CLAUDE_CONFIG_DIR decides where the file is, as it does for Claude."""
    found = credentials_path(tmp_path, {"CLAUDE_CONFIG_DIR": "/srv/c"})
    assert found == Path("/srv/c/.credentials.json")
    assert credentials_path(tmp_path, {}) == tmp_path / ".claude/.credentials.json"


def test_email_comes_from_claude_json(tmp_path: Path) -> None:
    """The address Claude recorded at login is found in ~/.claude.json."""
    account = {"oauthAccount": {"emailAddress": "a@corp.example"}}
    (tmp_path / ".claude.json").write_text(json.dumps(account))
    assert claude_email(tmp_path, {}) == "a@corp.example"


def test_email_is_none_without_claude_json(tmp_path: Path) -> None:
    """No record means no address, never an error."""
    assert claude_email(tmp_path, {}) is None
