"""The runbook's tagged commands, read from docs/runbook.md as a test runs them.

A fenced block whose info string carries ``runbook:<phase>`` (```` ```sh
runbook:verify ````) holds commands that the end-to-end test runs word for
word, one command per line, after filling in ``<user>`` and the example Vault
address. Reading them from the document, rather than copying them into the
test, is what keeps the runbook from drifting away from the product.

The commands of one block run in one ``bash`` (so that ``export`` and ``read``
carry over from line to line), each bracketed by markers that let the test
recover every command's own output and exit code.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.support.components import REPO

RUNBOOK = REPO / "docs" / "runbook.md"
#: The Vault address the runbook shows; the test puts its OpenBao's in place.
EXAMPLE_VAULT = "https://vault.example.com"
USER = "<user>"
_FENCE = re.compile(r"^```(?P<info>.*)$")
_PHASE = re.compile(r"\brunbook:([a-z][a-z0-9-]*)\b")
_MARK = "@@runbook-step"
_SEPARATORS = frozenset({";", "&&", "||", "|", "&"})


class RunbookError(AssertionError):
    """The runbook does not hold what the test needs; the message says what."""


@dataclass(frozen=True)
class Block:
    """One tagged block: its phase, the line it starts on, and its commands."""

    phase: str
    line: int
    commands: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """What one command of a block printed (stdout and stderr) and its exit code."""

    command: str
    returncode: int
    output: str


def read_blocks(path: Path = RUNBOOK) -> list[Block]:
    """Every tagged block of the runbook, in document order.

    Raises ``RunbookError`` for a block that is never closed.
    """
    blocks: list[Block] = []
    phase: str | None = None
    start, body = 0, []
    opened = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(line)
        if fence and not opened:
            tag = _PHASE.search(fence.group("info"))
            phase = tag.group(1) if tag else None
            start, body, opened = number, [], True
        elif fence:
            if phase is not None:
                blocks.append(Block(phase, start, _commands(body)))
            opened = False
        elif opened:
            body.append(line)
    if opened:
        raise RunbookError(f"{path}:{start}: a code block is never closed")
    return blocks


def _commands(lines: list[str]) -> tuple[str, ...]:
    """The block's commands: one per line, without blank lines or comments."""
    return tuple(
        text for text in (line.strip() for line in lines) if text and text[0] != "#"
    )


def block(phase: str, blocks: list[Block] | None = None) -> Block:
    """The one block of ``phase``; ``RunbookError`` when there is none or two."""
    found = [
        b for b in (read_blocks() if blocks is None else blocks) if b.phase == phase
    ]
    if len(found) != 1:
        raise RunbookError(
            f"docs/runbook.md has {len(found)} blocks tagged runbook:{phase}; "
            "the end-to-end test needs exactly one."
        )
    return found[0]


def fill(command: str, user: str, vault_addr: str) -> str:
    """The command with the runbook's placeholders replaced by the test's values."""
    return command.replace(USER, user).replace(EXAMPLE_VAULT, vault_addr)


def filled(phase: str, user: str, vault_addr: str) -> tuple[str, ...]:
    """The commands of the block of ``phase``, placeholders filled in."""
    return tuple(fill(c, user, vault_addr) for c in block(phase).commands)


def as_script(commands: tuple[str, ...]) -> str:
    """A bash script running ``commands`` in order, each between markers.

    Every command runs even when one before it failed, so that the test can
    say which one did; stderr is merged into stdout to keep each step's output
    in one place.
    """
    lines = ["exec 2>&1"]
    for index, command in enumerate(commands):
        lines += [
            f"printf '\\n{_MARK} {index} start\\n'",
            command,
            f"printf '\\n{_MARK} {index} end %s\\n' \"$?\"",
        ]
    return "\n".join(lines) + "\n"


def split_results(commands: tuple[str, ...], output: str) -> list[Step]:
    """Each command's output and exit code, from what ``as_script`` printed.

    Raises ``RunbookError`` when a command's end marker is missing (the shell
    stopped there).
    """
    steps = []
    for index, command in enumerate(commands):
        found = re.search(
            rf"\n{_MARK} {index} start\n(.*?)\n{_MARK} {index} end (\d+)\n",
            output,
            re.DOTALL,
        )
        if found is None:
            raise RunbookError(f"the shell stopped at {command!r}:\n{output}")
        text = found.group(1).removesuffix("\n")
        steps.append(Step(command, int(found.group(2)), text))
    return steps


def programs(command: str) -> list[str]:
    """The programs a command line runs: each simple command's first word, and
    for ``sudo`` the program it runs, so that the test can ask whether each
    exists where the command runs."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    words: list[str] = []
    found: list[str] = []
    for token in [*lexer, ";"]:
        if token not in _SEPARATORS:
            words.append(token)
            continue
        found.extend(_first_words(words))
        words = []
    return found


def _first_words(words: list[str]) -> list[str]:
    words = list(words)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)  # an environment assignment before the command
    if not words:
        return []
    if words[0] != "sudo":
        return [words[0]]
    rest = words[1:]
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-u", "-g") and rest:
            rest.pop(0)
    return ["sudo", *rest[:1]]
