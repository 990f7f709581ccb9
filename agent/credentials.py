"""Claude Code's credentials file: read it, judge the login, merge a restore in.

The file holds the user's ``claudeAiOauth`` login beside other state, notably
``mcpOAuth`` (their MCP servers' logins), which never leaves the home
directory. A restore therefore replaces ``claudeAiOauth`` only and keeps
every other key exactly. Claude itself writes the file by temporary file and
rename at mode 0600; so does this module, and before its rename it checks that
Claude has not rewritten the file since it was read, because then Claude has
refreshed the login and what it wrote must win.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from agent.errors import CredentialsChanged, CredentialsFileError
from agent.files import (
    FileIdentity,
    atomic_write,
    ensure_private_dir,
    identity_of,
    read_private,
)

OAUTH_KEY = "claudeAiOauth"
#: Claude keeps project history in .claude.json too; past this size the address
#: is taken from the roster instead of parsing a huge file on every run.
MAX_CLAUDE_JSON = 4 << 20
CREDENTIALS_NAME = ".credentials.json"
#: How ``atomic_write`` names its temporary file beside the credentials.
_OWN_TEMPORARY = re.compile(
    rf"^{re.escape(CREDENTIALS_NAME)}\.[0-9]+\.[0-9a-f]{{8}}\.tmp$"
)
#: Seconds to pause before a restore's rename; see ``_test_pause``.
TEST_MERGE_DELAY = "CLAUDE_AUTH_SYNC_TEST_MERGE_DELAY"

log = logging.getLogger(__name__)

#: The fields a login needs, with the exact JSON types Claude writes.
_REQUIRED: dict[str, type] = {"accessToken": str, "refreshToken": str, "expiresAt": int}
#: Optional fields; when present they must have these types.
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "refreshTokenExpiresAt": (int, type(None)),
    "scopes": (list,),
    "subscriptionType": (str, type(None)),
    "rateLimitTier": (str, type(None)),
}


class LoginState(Enum):
    """What the local file holds, as far as a restore decision cares."""

    PRESENT = "present"
    MISSING = "missing"
    MALFORMED = "malformed"
    BLANKED = "blanked"


@dataclass(frozen=True)
class Credentials:
    """One reading of the credentials file.

    ``data`` is the whole parsed file (None when missing or not a JSON
    object); ``oauth`` the validated login, or None. ``identity`` is what the
    file looked like when read, to notice a rewrite before replacing it.
    """

    path: Path
    state: LoginState
    data: dict[str, Any] | None
    oauth: dict[str, Any] | None
    identity: FileIdentity | None
    raw: bytes | None = None
    problem: str = ""


def credentials_path(home: Path, environ: Mapping[str, str]) -> Path:
    """Where Claude keeps the login: under ``CLAUDE_CONFIG_DIR`` when it is set."""
    config_dir = environ.get("CLAUDE_CONFIG_DIR", "").strip()
    base = Path(config_dir) if config_dir else home / ".claude"
    return base / CREDENTIALS_NAME


def oauth_problem(value: Any) -> str:
    """Why ``value`` is not a well-formed ``claudeAiOauth`` object; "" if it is.

    Booleans are refused where numbers belong: JSON ``true`` is not a time.
    """
    if not isinstance(value, dict):
        return f"{OAUTH_KEY} is not an object"
    for name, kind in _REQUIRED.items():
        field = value.get(name)
        if not isinstance(field, kind) or isinstance(field, bool):
            return f"{OAUTH_KEY}.{name} is missing or not a {kind.__name__}"
    for name, kinds in _OPTIONAL.items():
        field = value.get(name)
        if name in value and (not isinstance(field, kinds) or isinstance(field, bool)):
            return f"{OAUTH_KEY}.{name} has the wrong type"
    scopes = value.get("scopes", [])
    if not all(isinstance(scope, str) for scope in scopes):
        return f"{OAUTH_KEY}.scopes holds something other than text"
    return ""


def is_blanked(oauth: Mapping[str, Any]) -> bool:
    """A failed refresh leaves empty tokens and ``expiresAt`` 0: nothing to use."""
    return (
        not oauth["accessToken"] or not oauth["refreshToken"] or oauth["expiresAt"] <= 0
    )


def read_credentials(path: Path, uid: int) -> Credentials:
    """Read and judge the credentials file.

    Raises ``CredentialsFileError`` for a symlink, a file owned by someone
    else, or anything but a regular file. A missing, malformed or blanked
    login is not an error: it is a state that a restore can repair.
    """
    found = read_private(path, uid, "Claude credentials file", CredentialsFileError)
    if found is None:
        return Credentials(path, LoginState.MISSING, None, None, None)

    try:
        data = json.loads(found.content)
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        return Credentials(
            path, LoginState.MALFORMED, None, None, found.identity, found.content,
            "the file is not a JSON object",
        )  # fmt: skip

    problem = oauth_problem(data.get(OAUTH_KEY)) if OAUTH_KEY in data else "no login"
    if problem:
        return Credentials(
            path, LoginState.MALFORMED, data, None, found.identity, found.content,
            problem,
        )  # fmt: skip
    oauth = data[OAUTH_KEY]
    state = LoginState.BLANKED if is_blanked(oauth) else LoginState.PRESENT
    return Credentials(path, state, data, oauth, found.identity, found.content)


def merge_oauth(
    data: Mapping[str, Any] | None, oauth: Mapping[str, Any]
) -> dict[str, Any]:
    """The file's content with ``claudeAiOauth`` replaced and all else kept.

    Key order is kept too, so a diff of the file shows only the login.
    """
    merged = dict(data or {})
    merged[OAUTH_KEY] = dict(oauth)
    return merged


def write_merged(current: Credentials, oauth: Mapping[str, Any]) -> None:
    """Merge ``oauth`` into the file atomically, unless it changed since read.

    Raises ``CredentialsChanged`` when the file on disk is no longer the one
    ``current`` describes (Claude refreshed it meanwhile), and
    ``CredentialsFileError`` when it cannot be written. A malformed file is
    kept beside the new one (mode 0600), so nothing of it is lost.
    """
    content = json.dumps(merge_oauth(current.data, oauth), ensure_ascii=False)
    ensure_private_dir(current.path.parent)

    def unchanged() -> None:
        _test_pause()
        if identity_of(current.path) != current.identity:
            raise CredentialsChanged(
                f"Claude rewrote {current.path} while a restore was merging into it.",
                "Nothing to do: the run starts over with what Claude wrote.",
            )

    try:
        if current.state is LoginState.MALFORMED and current.raw is not None:
            keep = current.path.with_name(current.path.name + ".unreadable")
            atomic_write(keep, current.raw)
        atomic_write(current.path, content.encode(), before_rename=unchanged)
    except OSError as err:
        raise CredentialsFileError(
            f"Could not write {current.path} ({err.strerror}).",
            f"Check that {current.path.parent} is writable by its owner.",
        ) from None


def remove_stale_temporaries(path: Path, uid: int) -> int:
    """Remove the temporary files that killed restores left beside ``path``.

    Each holds a copy of a login, which nothing else would ever delete. The
    caller holds the run's lock, so no other restore of this user is writing
    one now; Claude's own temporary files are named otherwise and are left
    alone, and so is anything not owned by the user. Returns how many went.
    """
    removed = 0
    for candidate in path.parent.glob(f".{path.name.lstrip('.')}.*.tmp"):
        try:
            info = candidate.lstat()
            if (
                _OWN_TEMPORARY.match(candidate.name)
                and stat.S_ISREG(info.st_mode)
                and info.st_uid == uid
            ):
                candidate.unlink()
                removed += 1
        except OSError as err:
            log.debug("could not remove %s: %s", candidate, err)
    return removed


def _test_pause() -> None:
    """Widen the window between writing and renaming, for race and crash tests.

    Only the test suite sets this variable; a unit never does.
    """
    delay = os.environ.get(TEST_MERGE_DELAY, "")
    if delay:
        time.sleep(float(delay))


def fingerprint(secret: str) -> str:
    """A short one-way fingerprint that tells two refresh tokens apart.

    Twelve hex digits of SHA-256: enough to see a rotation in the audit
    history, far too little (and one-way) to recover anything from.
    """
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def expires_at_ms(oauth: Mapping[str, Any] | None, key: str = "expiresAt") -> int:
    """A millisecond deadline from the login, or 0 when it has none."""
    if oauth is None:
        return 0
    value = oauth.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def claude_email(home: Path, environ: Mapping[str, str]) -> str | None:
    """The Enterprise address Claude last logged in with, if it recorded one.

    Claude keeps it in ``.claude.json`` (under ``CLAUDE_CONFIG_DIR`` when
    set). Unreadable or odd content only means no address is known.
    """
    config_dir = environ.get("CLAUDE_CONFIG_DIR", "").strip()
    path = Path(config_dir) / ".claude.json" if config_dir else home / ".claude.json"
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(MAX_CLAUDE_JSON))
    except (OSError, ValueError):
        return None
    account = data.get("oauthAccount") if isinstance(data, dict) else None
    email = account.get("emailAddress") if isinstance(account, dict) else None
    return email if isinstance(email, str) else None
