"""What a run tells the world: one logfmt line per event, and ``status.json``.

The line is a contract with the Loki alert rules, so its format lives here and
nowhere else::

    status=FAIL user=alice host=ws1 reason=sso_required msg="..." action="..."

``status`` is one of OK, RECOVERED, SKIP, WARN, FAIL; ``user`` and ``host``
always follow; then ``reason`` (absent on OK), any short facts, the message
and the action. Each line goes to stdout (journald, under the identifier
``claude-auth-sync``) and, prefixed with ``time=``, to the user's ``sync.log``.
``status.json`` keeps the outcome for ``claude-auth-sync status`` and the
login notice. No secret may appear in any of them: the report also refuses,
by redaction, any token the run has told it about.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from agent.errors import AgentError, ExitCode
from agent.files import atomic_write

SYNC_LOG = "sync.log"
STATUS_JSON = "status.json"
STATUS_VERSION = 1
REDACTED = "[redacted]"

_SAFE_VALUE = re.compile(r'^[^\s"=\\]+$')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


class Status(StrEnum):
    OK = "OK"
    RECOVERED = "RECOVERED"
    SKIP = "SKIP"
    WARN = "WARN"
    FAIL = "FAIL"


#: How much each status says about the run, for choosing its outcome.
_SEVERITY = {
    Status.SKIP: 0, Status.OK: 1, Status.RECOVERED: 2, Status.WARN: 3, Status.FAIL: 4,
}  # fmt: skip


@dataclass(frozen=True)
class Event:
    """One thing a run found, with what to do about it and how the run ends."""

    status: Status
    reason: str = ""
    message: str = ""
    action: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    exit_code: ExitCode = ExitCode.OK

    @classmethod
    def from_error(cls, err: AgentError, status: Status = Status.FAIL) -> Event:
        return cls(status, err.reason, err.message, err.action, (), err.exit_code)


def logfmt_value(value: str) -> str:
    """A value as logfmt writes it: bare when safe, else quoted and escaped."""
    value = _CONTROL.sub(" ", value)
    if _SAFE_VALUE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_line(event: Event, user: str, host: str) -> str:
    """The one place the line format is decided; see the module docstring."""
    pairs: list[tuple[str, str]] = [
        ("status", event.status.value),
        ("user", user),
        ("host", host),
    ]
    if event.reason:
        pairs.append(("reason", event.reason))
    pairs.extend((key, value) for key, value in event.facts if _KEY.match(key))
    if event.message:
        pairs.append(("msg", event.message))
    if event.action:
        pairs.append(("action", event.action))
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs)


class LogfmtFormatter(logging.Formatter):
    """Diagnostics as logfmt too, for the journal the unit writes to.

    The unit sends stderr to the journal under the same identifier as the
    event lines, and Loki parses every line there with ``| logfmt``; a line
    of another shape would only carry a parse error. A traceback (DEBUG
    only) follows on its own lines, for the person who asked for it.
    """

    def format(self, record: logging.LogRecord) -> str:
        pairs = (
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", record.getMessage()),
        )
        line = " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def iso(epoch_seconds: float) -> str:
    """A UTC time as the log and status file write it, to the second."""
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Report:
    """The events of one run, printed and logged as they happen."""

    user: str
    host: str
    state_dir: Path
    clock: Callable[[], float]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    events: list[Event] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _secrets: set[str] = field(default_factory=set)

    def forbid(self, *secrets: str | None) -> None:
        """Never let these strings out, whatever code path tries to print them."""
        self._secrets.update(s for s in secrets if s and len(s) >= 8)

    def emit(self, event: Event) -> str:
        """Print the event's line and append it, timestamped, to ``sync.log``."""
        line = format_line(event, self.user, self.host)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        self.events.append(event)
        self.lines.append(line)

        print(line, file=self.out, flush=True)
        self._append_log(f"time={iso(self.clock())} {line}\n")
        return line

    def _append_log(self, text: str) -> None:
        """Append with O_APPEND, so concurrent runs never interleave inside a line."""
        path = self.state_dir / SYNC_LOG
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as err:
            print(f"cannot append to {path}: {err.strerror}", file=sys.stderr)
            return
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def outcome(self) -> Event:
        """The event that sums the run up: the most severe, the last of equals."""
        if not self.events:
            return Event(Status.OK)
        return max(reversed(self.events), key=lambda e: _SEVERITY[e.status])

    def exit_code(self) -> ExitCode:
        """The outcome's code, or the first other non-zero code of the run."""
        code = self.outcome().exit_code
        if code == ExitCode.OK:
            code = next((e.exit_code for e in self.events if e.exit_code), code)
        return code

    def write_status(self, extra: dict[str, Any]) -> None:
        """Keep the outcome in ``status.json`` (mode 0600, atomic).

        ``extra`` carries non-secret facts such as deadlines. The time of the
        last success is carried over from the previous file when this run
        had none.
        """
        outcome = self.outcome()
        now = self.clock()
        previous = read_status(self.state_dir) or {}
        succeeded = any(e.status in (Status.OK, Status.RECOVERED) for e in self.events)
        status = {
            "version": STATUS_VERSION,
            "time": iso(now),
            "user": self.user,
            "host": self.host,
            "status": outcome.status.value,
            "reason": outcome.reason or None,
            "message": outcome.message or None,
            "action": outcome.action or None,
            "exit_code": int(self.exit_code()),
            "last_success": iso(now) if succeeded else previous.get("last_success"),
            "events": [
                {"status": e.status.value, "reason": e.reason or None}
                for e in self.events
            ],
            "lines": list(self.lines),
            **extra,
        }
        text = json.dumps(status, indent=2, sort_keys=False) + "\n"
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        atomic_write(self.state_dir / STATUS_JSON, text.encode())


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The last run's ``status.json``, or None when absent or unreadable."""
    try:
        value = json.loads((state_dir / STATUS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def tail_log(state_dir: Path, count: int) -> Iterable[str]:
    """The last ``count`` lines of ``sync.log``, oldest first."""
    try:
        with open(state_dir / SYNC_LOG, encoding="utf-8", errors="replace") as handle:
            lines = handle.readlines()
    except OSError:
        return []
    return [line.rstrip("\n") for line in lines[-count:]]
