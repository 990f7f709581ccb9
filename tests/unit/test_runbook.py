"""docs/runbook.md: its tagged commands exist, and its links land on headings.

The commands that run on a workstation are run word for word in
tests/systemd; these checks need no container: the blocks are all there, the
reviewer's make targets and the person's login flags exist, and every alert's
runbook link points at a heading of the document.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from agent.roster import User
from stacks.alerts import AlertSettings, user_rules
from tests.support.components import REPO, claude_binary, require
from tests.support.runbook import (
    RUNBOOK,
    as_script,
    block,
    fill,
    programs,
    read_blocks,
    split_results,
)

PHASES = (
    "review", "install", "provision", "person", "first-sync", "verify",
    "verify-user", "verify-vault", "offboard",
)  # fmt: skip


def anchors() -> set[str]:
    """The anchors GitHub gives the runbook's headings."""
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    return {
        re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
        for h in headings
    }


@pytest.mark.parametrize("phase", PHASES)
def test_every_phase_has_one_block_of_commands(phase: str) -> None:
    """Each phase the end-to-end test runs is one tagged block with commands."""
    assert block(phase).commands


def test_alert_links_land_on_headings() -> None:
    """Each alert's runbook_url anchor is a heading of docs/runbook.md."""
    rules = user_rules(User("alice", "alice@corp.example"), AlertSettings())
    linked = {r["annotations"]["runbook_url"].split("#", 1)[1] for r in rules}

    assert linked <= anchors()


def test_links_inside_the_runbook_land_on_headings() -> None:
    """Every #anchor the runbook links to exists in it."""
    linked = set(re.findall(r"\]\(#([a-z0-9_-]+)\)", RUNBOOK.read_text()))

    assert linked - anchors() == set()


@pytest.mark.parametrize("command", block("review").commands)
def test_review_commands_are_make_targets(command: str) -> None:
    """The reviewer's make commands name targets the Makefile has."""
    words = command.split()
    done = subprocess.run(
        [*words[:1], "-n", "-C", str(REPO), *words[1:]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr


def test_login_flags_exist_in_the_real_cli() -> None:
    """claude auth login accepts every flag the person's command gives it."""
    claude = require("Claude Code CLI", claude_binary(), "make node")
    command = block("person").commands[0].split()
    helped = subprocess.run(
        [str(claude), *command[1:3], "--help"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "PATH": "/usr/bin"},
    )  # fmt: skip
    flags = [w for w in command if w.startswith("--")]

    assert [f for f in flags if f not in helped.stdout] == []


def test_fill_replaces_the_user_and_the_vault_address() -> None:
    """Placeholders become the test's user and Vault address, nothing else."""
    filled = fill(
        "make install-agent VAULT_ADDR=https://vault.example.com <user>",
        "alice",
        "http://127.0.0.1:8200",
    )
    assert filled == "make install-agent VAULT_ADDR=http://127.0.0.1:8200 alice"


def test_each_step_keeps_its_own_output_and_code() -> None:
    """A failing command is recorded and the next still runs, in one shell."""
    commands = ("X=1", "echo got $X", "false", "echo after")
    done = subprocess.run(
        ["bash", "-c", as_script(commands)], capture_output=True, text=True, check=True
    )
    steps = split_results(commands, done.stdout)

    assert [(s.returncode, s.output) for s in steps] == [
        (0, ""), (0, "got 1"), (1, ""), (0, "after")
    ]  # fmt: skip


def test_programs_of_a_line_include_what_sudo_runs() -> None:
    """Every simple command's program is found, and sudo's target too."""
    line = "printf x; A=1 read -r V && sudo -u bob --preserve-env=V /bin/true"
    assert programs(line) == ["printf", "read", "sudo", "/bin/true"]


def test_only_tagged_blocks_are_read() -> None:
    """An untagged block (cdktf deploy) is not among the blocks the test runs."""
    commands = [c for b in read_blocks() for c in b.commands]
    assert "cdktf deploy" not in commands
