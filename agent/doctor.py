"""``claude-auth-sync doctor``: check this user's setup and say what to fix.

Every check is read-only: the token is looked up, never renewed; the login is
read from disk, never probed. Each finding is one line with the exact fix.
Secrets are never shown: a credential found in a shell start-up file is
reported by file and line, not by value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent import credentials as creds
from agent.errors import AgentError, ConfigError, VaultTLSError, VaultUnavailable
from agent.probe import (
    FORBIDDEN_ENV,
    MINIMUM_VERSION,
    claude_version,
    find_claude,
    parse_version,
)
from agent.report import iso
from agent.run import Context, read_token
from agent.settings import Settings, SettingsError

#: What a login shell or a user's session may read before Claude starts.
START_UP_FILES = (
    ".profile", ".bash_profile", ".bash_login", ".bashrc", ".zshenv", ".zprofile",
    ".zshrc", ".config/fish/config.fish", ".config/environment.d",
)  # fmt: skip
SYSTEM_START_UP = (
    "/etc/environment", "/etc/profile", "/etc/bash.bashrc", "/etc/profile.d",
    "/etc/zsh/zshenv", "/etc/zsh/zprofile",
)  # fmt: skip
#: Credentials that outrank the login (the Vault token is the agent's own).
CLAUDE_CREDENTIAL_VARS = tuple(v for v in FORBIDDEN_ENV if v != "VAULT_TOKEN")
_ASSIGNMENT = re.compile(
    r"^\s*(?:export\s+|set\s+-gx\s+|set\s+-x\s+|setenv\s+)?("
    + "|".join(CLAUDE_CREDENTIAL_VARS)
    + r")\b\s*[= ]"
)


@dataclass(frozen=True)
class Finding:
    """One check: passed or not, what was seen, and the fix when it failed."""

    ok: bool
    check: str
    detail: str
    fix: str = ""


def diagnose(ctx: Context) -> list[Finding]:
    """Run every check; later checks still run when an earlier one fails."""
    findings = [*_check_environment(ctx.environ), *_check_start_up(ctx.home)]
    settings = _settings(ctx, findings)
    token = _check_token_file(ctx, findings)
    if settings is not None and token is not None:
        findings.append(_check_vault(ctx, settings, token))
    findings.extend(_check_claude(ctx))
    findings.append(_check_login(ctx))
    return findings


def _settings(ctx: Context, findings: list[Finding]) -> Settings | None:
    try:
        settings = Settings.from_env(ctx.environ)
    except SettingsError as err:
        findings.append(Finding(False, "settings", str(err), "Fix it in agent.env."))
        return None
    if not settings.vault_addr:
        findings.append(
            Finding(
                False, "settings", "VAULT_ADDR is not set.",
                "Set VAULT_ADDR in /etc/claude-auth-sync/agent.env.",
            )
        )  # fmt: skip
        return None
    findings.append(Finding(True, "settings", f"Vault at {settings.vault_addr}"))
    return settings


def _check_environment(environ: Mapping[str, str]) -> Iterator[Finding]:
    found = [name for name in CLAUDE_CREDENTIAL_VARS if environ.get(name)]
    if not found:
        yield Finding(True, "environment", "no Claude credential variables set")
        return
    for name in found:
        yield Finding(
            False, "environment",
            f"{name} is set in this environment; it outranks your own login in "
            "Claude and would use another identity.",
            f"Remove it from where it is set, then: unset {name}",
        )  # fmt: skip


def _check_start_up(home: Path) -> Iterator[Finding]:
    places = [home / name for name in START_UP_FILES] + [
        Path(p) for p in SYSTEM_START_UP
    ]
    hits = [hit for place in places for hit in _assignments(place)]
    if not hits:
        yield Finding(True, "start-up files", "no Claude credential variables set")
    for path, line, name in hits:
        yield Finding(
            False, "start-up files",
            f"{path}:{line} sets {name}, which outranks your own login in Claude.",
            f"Delete that line from {path} and start a new shell.",
        )  # fmt: skip


def _assignments(place: Path) -> Iterator[tuple[Path, int, str]]:
    files = sorted(place.iterdir()) if place.is_dir() else [place]
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            match = _ASSIGNMENT.match(line)
            if match:
                yield path, number, match.group(1)


def _check_token_file(ctx: Context, findings: list[Finding]) -> str | None:
    try:
        token = read_token(ctx.token_path, ctx.uid)
    except AgentError as err:
        findings.append(Finding(False, "token file", err.message, err.action))
        return None
    findings.append(Finding(True, "token file", f"{ctx.token_path}, mode 600"))
    return token


def _check_vault(ctx: Context, settings: Settings, token: str) -> Finding:
    """Look the token up (without renewing it) and show how long it has left."""
    from agent.vault import UserVault, make_transport  # noqa: PLC0415  # only here

    try:
        transport = make_transport(settings, token, ctx.environ)
        info = UserVault(transport, settings, ctx.user).check_token()
    except (VaultUnavailable, VaultTLSError, ConfigError) as err:
        return Finding(False, "vault", err.message, err.action)
    except AgentError as err:
        return Finding(False, "vault token", err.message, err.action)
    days = info.ttl // 86400
    if info.ttl < 7 * 86400:
        return Finding(
            False, "vault token",
            f"this user's token expires in {days} days",
            "Let the timer run (each run renews it), or: "
            f"systemctl start claude-auth-sync@{ctx.user}.service",
        )  # fmt: skip
    return Finding(True, "vault token", f"this user's own, {days} days left")


def _check_claude(ctx: Context) -> Iterator[Finding]:
    try:
        claude = find_claude(ctx.environ, ctx.home)
    except AgentError as err:
        yield Finding(False, "claude", err.message, err.action)
        return
    version = claude_version(claude, ctx.environ)
    parsed = parse_version(version or "")
    if parsed is None:
        yield Finding(False, "claude", f"{claude} --version gave no version",
                      "Reinstall Claude Code.")  # fmt: skip
    elif parsed < MINIMUM_VERSION:
        yield Finding(
            False, "claude",
            f"{claude} is version {version}, which does not refresh the login in "
            "-p mode (needs 2.1.117 or later)",
            "Update Claude Code: claude update",
        )  # fmt: skip
    else:
        yield Finding(True, "claude", f"{claude} version {version}")


def _check_login(ctx: Context) -> Finding:
    try:
        local = creds.read_credentials(ctx.credentials_path, ctx.uid)
    except AgentError as err:
        return Finding(False, "login", err.message, err.action)
    if local.oauth is None or local.state is not creds.LoginState.PRESENT:
        return Finding(
            False, "login",
            f"{local.path}: {local.problem or local.state.value}",
            "Log in: claude auth login --claudeai --sso --email <your-email>",
        )  # fmt: skip
    deadline = creds.expires_at_ms(local.oauth, "refreshTokenExpiresAt")
    if not deadline:
        return Finding(True, "login", "present (its hard deadline is not recorded)")
    days = int((deadline / 1000 - ctx.clock()) // 86400)
    return Finding(
        days >= 0, "login",
        f"present; the SSO login ends {iso(deadline / 1000)} ({days} days left)",
        "" if days >= 0 else "Log in again: claude auth login --claudeai --sso",
    )  # fmt: skip
