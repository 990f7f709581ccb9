"""The scoped token file: refused unless it is the user's own, private, one token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import TokenFileError
from agent.run import read_token

UID = os.geteuid()


def token_file(tmp_path: Path, content: str, mode: int = 0o600) -> Path:
    path = tmp_path / "vault-token"
    path.write_text(content)
    path.chmod(mode)
    return path


def test_good_file_gives_the_token(tmp_path: Path) -> None:
    """A mode 0600 file with one line gives that token, without the newline."""
    assert read_token(token_file(tmp_path, "hvs.abc\n"), UID) == "hvs.abc"


def test_missing_file_asks_for_the_provisioner(tmp_path: Path) -> None:
    """No token file says who can mint one and how."""
    with pytest.raises(TokenFileError, match="no scoped Vault token") as caught:
        read_token(tmp_path / "vault-token", UID)
    assert "claude-auth-provision" in caught.value.action


def test_group_readable_file_is_refused_with_chmod(tmp_path: Path) -> None:
    """Mode 0644 is refused, and the fix is the exact chmod."""
    path = token_file(tmp_path, "hvs.abc\n", 0o644)
    with pytest.raises(TokenFileError, match="mode 644") as caught:
        read_token(path, UID)
    assert f"chmod 600 {path}" in caught.value.action


def test_someone_elses_file_is_refused(tmp_path: Path) -> None:
    """A token file owned by another user is never used."""
    with pytest.raises(TokenFileError, match="is owned by"):
        read_token(token_file(tmp_path, "hvs.abc\n"), UID + 1)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "is empty"),
        ("  \n\t\n", "is empty"),
        ("hvs.a\nhvs.b\n", "not a single line"),
    ],
)
def test_empty_or_two_line_file_is_refused(
    tmp_path: Path, content: str, why: str
) -> None:
    """An empty, blank or two-token file is refused with what is wrong."""
    with pytest.raises(TokenFileError, match=why):
        read_token(token_file(tmp_path, content), UID)


def test_symlinked_token_is_refused(tmp_path: Path) -> None:
    """A symlink to somebody's token is not followed."""
    target = token_file(tmp_path, "hvs.abc\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(TokenFileError, match="symlink"):
        read_token(link, UID)
