"""The probe: one minimal Haiku inference that proves the user's Claude login.

``claude auth status`` reads only local files and says "logged in" while the
server answers 401, so only a real request counts. The verdict is read from
the JSON answer, not from the exit code: a rate-limited answer can exit 0
with ``is_error`` true, and an auth failure exits 1 with its text on stdout.

The probe runs with an environment cleared of credentials: an API key or an
OAuth token in the environment outranks the user's login in ``-p`` mode and
would silently test somebody else's identity, and the scoped Vault token is
none of Claude's business.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from agent.errors import ProbeError
from agent.files import atomic_write

log = logging.getLogger(__name__)

#: Never passed to the probe (nor to any other child process of the agent).
FORBIDDEN_ENV = (
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "VAULT_TOKEN",
)
#: These switch Claude to a cloud provider's credentials: another identity too.
PROVIDER_SWITCHES = (
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
)

PROMPT = "Reply with exactly AUTH_OK and nothing else."
MINIMUM_VERSION = (2, 1, 117)  # older CLIs do not refresh the login in -p mode
_KILL_GRACE_SECONDS = 3

# The words Claude answers with when the login itself was refused before or
# without an HTTP status: no file, blanked tokens, or a refresh that failed.
_REJECTED_WORDS = (
    "not logged in",
    "please run /login",
    "failed to authenticate",
    "oauth token has expired",
    "oauth token revoked",
    "invalid api key",
    "invalid bearer token",
)
_UNREACHABLE_WORDS = (
    "connection error",
    "connection refused",
    "econnrefused",
    "enotfound",
    "etimedout",
    "timed out",
    "timeout",
    "network",
    "fetch failed",
    "overloaded",
)


class Verdict(Enum):
    """What the probe found. Only ``REJECTED`` leads to a restore."""

    VALID = "valid"
    REJECTED = "rejected"
    UNREACHABLE = "unreachable"
    OTHER = "other"


@dataclass(frozen=True)
class ProbeResult:
    """A verdict with a short, non-secret account of what Claude answered."""

    verdict: Verdict
    detail: str
    api_status: int | None = None
    rate_limited: bool = False


def find_claude(environ: Mapping[str, str], home: Path) -> Path:
    """``CLAUDE_BIN``, else ``claude`` on ``PATH``, else ``~/.local/bin/claude``.

    Raises ``ProbeError`` saying where it looked when none is executable.
    """
    chosen = environ.get("CLAUDE_BIN", "").strip()
    if chosen:
        if os.access(chosen, os.X_OK) and Path(chosen).is_file():
            return Path(chosen)
        raise ProbeError(
            f"CLAUDE_BIN={chosen} is not an executable file.",
            "Fix CLAUDE_BIN in /etc/claude-auth-sync/agent.env, or remove it to "
            "use claude from PATH.",
        )

    found = shutil.which("claude", path=environ.get("PATH", os.defpath))
    fallback = home / ".local" / "bin" / "claude"
    if found:
        return Path(found)
    if os.access(fallback, os.X_OK):
        return fallback
    raise ProbeError(
        f"No Claude Code CLI found: CLAUDE_BIN is unset, there is no claude on "
        f"PATH, and {fallback} does not exist.",
        "Install Claude Code for this user, or set CLAUDE_BIN in "
        "/etc/claude-auth-sync/agent.env.",
    )


def probe_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for Claude: everything but credentials and provider switches.

    ``ANTHROPIC_BASE_URL`` passes through, for gateways (and the test stub).
    """
    dropped = set(FORBIDDEN_ENV) | set(PROVIDER_SWITCHES)
    return {key: value for key, value in environ.items() if key not in dropped}


def probe_command(claude: Path) -> list[str]:
    """The smallest inference that proves the login, with no side effects.

    No tools, no session kept, no settings or slash commands from anywhere
    that could change what is sent or who sends it.
    """
    return [
        str(claude), "-p", PROMPT,
        "--model", "haiku",
        "--max-turns", "1",
        "--no-session-persistence",
        "--tools", "",
        "--disable-slash-commands",
        "--setting-sources", "",
        "--output-format", "json",
    ]  # fmt: skip


def run_probe(
    claude: Path, environ: Mapping[str, str], cwd: Path, timeout: float
) -> ProbeResult:
    """Run the probe under ``timeout`` seconds and classify its answer.

    A probe that runs out of time is ``UNREACHABLE``: the CLI retries
    network errors for minutes. Raises ``ProbeError`` when Claude cannot be
    started at all.
    """
    started = time.monotonic()
    try:
        child = subprocess.Popen(
            probe_command(claude),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=probe_env(environ),
            cwd=cwd,
            start_new_session=True,  # so a timeout can stop its whole group
        )
    except OSError as err:
        raise ProbeError(
            f"Could not start {claude} ({err.strerror}).",
            "Check that the Claude CLI is installed and executable by this user.",
        ) from None

    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(child)
        return ProbeResult(Verdict.UNREACHABLE, f"timed out after {timeout:.0f} s")
    log.debug(
        "probe exited %s after %.1f s; stderr: %s",
        child.returncode, time.monotonic() - started, stderr[-500:],
    )  # fmt: skip
    return classify(child.returncode, stdout.decode("utf-8", "replace"))


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Stop the probe and anything it started: TERM, then KILL after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        try:
            child.communicate(timeout=_KILL_GRACE_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue


def classify(returncode: int, stdout: str) -> ProbeResult:
    """The verdict from Claude's JSON answer; the exit code only as a last word."""
    answer = _last_json_object(stdout)
    if answer is None:
        return ProbeResult(Verdict.OTHER, f"exit {returncode} without a JSON answer")

    status = answer.get("api_error_status")
    if not isinstance(status, int) or isinstance(status, bool):
        status = None
    if answer.get("is_error") is False:
        return ProbeResult(Verdict.VALID, "answered", status)
    text = str(answer.get("result", ""))[:300].lower()
    return _classify_error(returncode, status, text)


def _classify_error(returncode: int, status: int | None, text: str) -> ProbeResult:
    if status in (401, 403):
        return ProbeResult(Verdict.REJECTED, f"API status {status}", status)
    if status == 429 or "rate limit" in text or "usage limit" in text:
        # The login was accepted; only the quota said no.
        return ProbeResult(Verdict.VALID, "rate limited", status, rate_limited=True)
    if status is not None and (status >= 500 or status == 408):
        return ProbeResult(Verdict.UNREACHABLE, f"API status {status}", status)
    if status is None and any(word in text for word in _REJECTED_WORDS):
        return ProbeResult(Verdict.REJECTED, "Claude reports no usable login")
    if any(word in text for word in _UNREACHABLE_WORDS):
        return ProbeResult(Verdict.UNREACHABLE, "API unreachable", status)
    shown = f"API status {status}" if status is not None else f"exit {returncode}"
    return ProbeResult(Verdict.OTHER, f"unexpected answer ({shown})", status)


def _last_json_object(stdout: str) -> dict[str, Any] | None:
    """Claude prints one JSON object; take the last line that is one."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def claude_version(
    claude: Path, environ: Mapping[str, str], cache: Path | None = None
) -> str | None:
    """``claude --version``, remembered in ``cache`` until the binary changes.

    The version is only an audit fact: any failure gives None, never an error.
    """
    try:
        st = claude.stat()
    except OSError:
        return None
    key = f"{claude}:{st.st_size}:{st.st_mtime_ns}"
    remembered = _read_cache(cache)
    if remembered.get("key") == key and isinstance(remembered.get("version"), str):
        return str(remembered["version"])

    version = _ask_version(claude, environ)
    if version is not None and cache is not None:
        _write_cache(cache, {"key": key, "version": version})
    return version


def _ask_version(claude: Path, environ: Mapping[str, str]) -> str | None:
    try:
        done = subprocess.run(
            [str(claude), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=probe_env(environ),
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.debug("claude --version failed: %s", err)
        return None
    parsed = parse_version(done.stdout.decode("utf-8", "replace"))
    return ".".join(map(str, parsed)) if parsed else None


def _read_cache(cache: Path | None) -> dict[str, Any]:
    if cache is None:
        return {}
    try:
        value = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_cache(cache: Path, value: dict[str, Any]) -> None:
    try:
        atomic_write(cache, json.dumps(value).encode())
    except OSError as err:
        log.debug("could not remember the Claude version in %s: %s", cache, err)
