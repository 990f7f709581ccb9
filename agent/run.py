"""One sync pass for one user: what ``claude-auth-sync@<user>.service`` runs.

The order matters. The local files are checked before anything is sent; the
scoped token is proved to be this user's before it is used for anything
else; the login is proved by a real inference before it is backed up; and a
restore happens only when the login was rejected, only from the latest Vault
copy, and only when that copy is newer than what is on disk (or the disk
holds nothing usable), because replaying a spent refresh token can make the
provider revoke the whole login. An outage, of Vault or of the API, is a
warning and never a claim that the person must log in again.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent import credentials as creds
from agent.credentials import Credentials, LoginState
from agent.errors import (
    REMINT_ACTION,
    AgentError,
    BackupConflict,
    ConfigError,
    CredentialsChanged,
    CredentialsFileError,
    ExitCode,
    TokenFileError,
    TokenNotRenewed,
    VaultError,
    VaultUnavailable,
)
from agent.files import ensure_private_dir, read_private
from agent.probe import ProbeResult, Verdict, claude_version, find_claude, run_probe
from agent.report import Event, Report, Status, format_line, iso
from agent.settings import Settings, SettingsError, state_dir, token_file

if TYPE_CHECKING:
    from agent.vault import UserVault

log = logging.getLogger(__name__)

DEFAULT_ROSTER = "/etc/claude-auth-sync/roster.yaml"
UNKNOWN_EMAIL = "<your-enterprise-email>"
#: How often a restore starts over because Claude rewrote the file meanwhile.
MAX_RESTARTS = 3
MAX_TOKEN_BYTES = 4096
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Context:
    """Who runs, where their files are, and the clock; nothing else is global."""

    user: str
    uid: int
    home: Path
    host: str
    environ: Mapping[str, str]
    clock: Callable[[], float]
    out: TextIO

    @property
    def state_dir(self) -> Path:
        return Path(state_dir(self.home))

    @property
    def token_path(self) -> Path:
        return Path(token_file(self.home))

    @property
    def credentials_path(self) -> Path:
        return creds.credentials_path(self.home, self.environ)

    def rerun_command(self) -> str:
        return f"systemctl start claude-auth-sync@{self.user}.service"


def run(ctx: Context) -> int:
    """One pass: lock, check, probe, back up or restore; returns the exit code."""
    try:
        ensure_private_dir(ctx.state_dir)
        lock = _try_lock(ctx.state_dir / "lock")
    except OSError as err:
        # Without its state directory the run cannot log to sync.log either;
        # the line still reaches the journal through stdout.
        event = Event(
            Status.FAIL,
            "state_dir",
            f"Cannot use the state directory {ctx.state_dir} ({err.strerror}).",
            f"Make it a directory owned by {ctx.user} with mode 700: "
            f"sudo install -d -m 700 -o {ctx.user} {ctx.state_dir}",
            exit_code=ExitCode.CONFIG,
        )
        print(format_line(event, ctx.user, ctx.host), file=ctx.out)
        return int(ExitCode.CONFIG)
    report = Report(ctx.user, ctx.host, ctx.state_dir, ctx.clock, ctx.out)

    if lock is None:
        report.emit(
            Event(Status.SKIP, "locked", "another run for this user is in progress")
        )
        return int(ExitCode.OK)

    try:
        facts: dict[str, Any] = {}
        _run_locked(ctx, report, facts)
        report.write_status(facts)
    finally:
        os.close(lock)
    return int(report.exit_code())


def _try_lock(path: Path) -> int | None:
    """A non-blocking exclusive lock, held until the descriptor is closed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _run_locked(ctx: Context, report: Report, facts: dict[str, Any]) -> None:
    """Run the pass; every expected failure becomes one line, never a traceback."""
    try:
        Sync(ctx, report, facts).run()
    except (VaultUnavailable, BackupConflict) as err:
        # Transient: the next run retries, and nobody needs to act yet.
        report.emit(Event.from_error(err, Status.WARN))
    except AgentError as err:
        report.emit(Event.from_error(err))
    except Exception as err:  # the line is the contract; the traceback is DEBUG
        log.debug("unexpected failure", exc_info=True)
        report.emit(
            Event(
                Status.FAIL,
                "internal",
                f"The agent failed unexpectedly ({type(err).__name__}).",
                "Run claude-auth-sync --debug run to see the traceback, and report it.",
                exit_code=ExitCode.INTERNAL,
            )
        )


def read_token(path: Path, uid: int) -> str:
    """The scoped token, refused unless only its owner, the user, can read it.

    Raises ``TokenFileError`` with the fix for each way the file can be wrong.
    """
    found = read_private(path, uid, "scoped Vault token file", TokenFileError)
    if found is None:
        raise TokenFileError(
            f"There is no scoped Vault token at {path}.", REMINT_ACTION
        )
    if found.mode & 0o077:
        raise TokenFileError(
            f"The scoped Vault token file {path} has mode {found.mode:o}, so "
            "other users may read it; refusing to use it.",
            f"Run: chmod 600 {path}; if someone else may have read it, have an "
            "administrator revoke it and mint a new one.",
        )

    lines = found.content.decode("ascii", "replace").strip().splitlines()
    if len(lines) != 1 or len(found.content) > MAX_TOKEN_BYTES:
        what = "is empty" if not lines else "is not a single line"
        raise TokenFileError(
            f"The scoped Vault token file {path} {what}.", REMINT_ACTION
        )
    token = lines[0].strip()
    if not token.isprintable() or " " in token or "\ufffd" in token:
        raise TokenFileError(
            f"The scoped Vault token file {path} holds something that is not a token.",
            REMINT_ACTION,
        )
    return token


@dataclass
class Sync:
    """The steps of one pass, sharing what earlier steps found."""

    ctx: Context
    report: Report
    facts: dict[str, Any]
    settings: Settings = field(init=False)
    claude: Path = field(init=False)
    outage: VaultUnavailable | None = None

    def run(self) -> None:
        try:
            self.settings = Settings.from_env(self.ctx.environ)
        except SettingsError as err:
            raise ConfigError(
                str(err), "Fix it in /etc/claude-auth-sync/agent.env."
            ) from None
        if not self.settings.vault_addr:
            raise ConfigError(
                "VAULT_ADDR is not set; the agent has no Vault to talk to.",
                "Set VAULT_ADDR in /etc/claude-auth-sync/agent.env, e.g. "
                "VAULT_ADDR=https://vault.example.com",
            )

        token = read_token(self.ctx.token_path, self.ctx.uid)
        self.report.forbid(token)
        creds.remove_stale_temporaries(self.ctx.credentials_path, self.ctx.uid)
        self.read_local()
        vault = self.open_vault(token)

        self.claude = find_claude(self.ctx.environ, self.ctx.home)
        result = self.probe()
        if result.verdict is Verdict.REJECTED and vault is not None:
            self.recover(vault)
        else:
            self.conclude(vault, result, Status.OK)

    # --- local files -------------------------------------------------------

    def read_local(self) -> Credentials:
        """Read Claude's credentials; tell the report never to print its tokens."""
        local = creds.read_credentials(self.ctx.credentials_path, self.ctx.uid)
        if local.oauth is not None:
            self.report.forbid(local.oauth["accessToken"], local.oauth["refreshToken"])
        return local

    # --- Vault ---------------------------------------------------------------

    def open_vault(self, token: str) -> UserVault | None:
        """Prove the token is this user's and renew it; None during an outage.

        Drift and a dead token raise: nothing more is asked with that token.
        """
        from agent.vault import UserVault, make_transport  # noqa: PLC0415  # see below

        # Imported here, not at the top: the HTTP client is a good part of a
        # run's start-up time, and a run that fails on local files needs none.
        transport = make_transport(self.settings, token, self.ctx.environ)
        vault = UserVault(transport, self.settings, self.ctx.user)
        try:
            info = vault.check_token()
            self._token_expiry(info.ttl)
            self._token_expiry(vault.renew())
        except VaultUnavailable as err:
            self.outage = err
            return None
        except TokenNotRenewed as err:
            self.report.emit(Event.from_error(err, Status.WARN))
        return vault

    def _token_expiry(self, ttl: int) -> None:
        self.facts["vault_token_expires_at"] = iso(self.ctx.clock() + ttl)

    # --- the probe and what follows ------------------------------------------

    def probe(self) -> ProbeResult:
        result = run_probe(
            self.claude,
            self.ctx.environ,
            cwd=self.ctx.home,
            timeout=self.settings.probe_timeout_seconds,
        )
        log.info("probe: %s (%s)", result.verdict.value, result.detail)
        return result

    def conclude(
        self, vault: UserVault | None, result: ProbeResult, success: Status
    ) -> None:
        """Report a probe that needs no restore: success, outage, or oddity."""
        if self.outage is not None:
            self.report.emit(
                Event(
                    Status.WARN,
                    self.outage.reason,
                    self.outage.message,
                    "The login was not backed up or restored this time. "
                    + self.outage.action,
                    (("login", result.verdict.value),),
                    self.outage.exit_code,
                )
            )
            vault = None
        if result.verdict is Verdict.VALID:
            self.succeed(vault, success, result)
        elif result.verdict is Verdict.UNREACHABLE:
            self.unreachable(result)
        elif result.verdict is Verdict.OTHER:
            self.report.emit(
                Event(
                    Status.FAIL,
                    "probe_failed",
                    f"Claude answered the probe in a way the agent does not "
                    f"understand: {result.detail}.",
                    f"Run: claude-auth-sync doctor (as {self.ctx.user})",
                    exit_code=ExitCode.PROBE_FAILED,
                )
            )

    def unreachable(self, result: ProbeResult) -> None:
        if self.outage is not None:
            return  # the outage line already said the login was not checked
        self.report.emit(
            Event(
                Status.WARN,
                "claude_unreachable",
                f"The Claude API did not answer the probe ({result.detail}); the "
                "login was neither confirmed nor changed.",
                "Nothing to do if it passes: the next run retries. If it "
                "persists, check this host's access to the Claude API.",
                exit_code=ExitCode.CLAUDE_UNREACHABLE,
            )
        )

    def succeed(
        self, vault: UserVault | None, status: Status, result: ProbeResult
    ) -> None:
        """Back up what Claude holds now (it may have rotated) and report it."""
        local = self.read_local()
        if local.oauth is None or local.state is not LoginState.PRESENT:
            raise CredentialsFileError(
                f"Claude answered, but {local.path} holds no usable login to back "
                f"up ({local.problem or local.state.value}).",
                "Check whether Claude is given credentials some other way "
                "(claude-auth-sync doctor).",
            )
        oauth = local.oauth
        self._login_facts(oauth)

        facts: list[tuple[str, str]] = []
        if vault is not None:
            facts.append(("backup", self.backup(vault, oauth)))
        if result.rate_limited:
            facts.append(("probe", "rate_limited"))
        if status is Status.OK and vault is not None:
            self.report.emit(Event(status, facts=tuple(facts)))
        elif status is Status.RECOVERED:
            self.report.emit(
                Event(status, "restored_from_vault",
                      f"The rejected login of {self.ctx.user} was restored from "
                      "the latest Vault copy and proved by a new probe.",
                      facts=tuple(facts))
            )  # fmt: skip
        self.warn_if_expiring(oauth)

    def backup(self, vault: UserVault, oauth: dict[str, Any]) -> str:
        """Store ``oauth`` unless Vault already has it, or a newer login.

        Returns what ``UserVault.store`` did: ``written``, ``unchanged`` or
        ``newer_kept``. Raises ``BackupConflict`` when concurrent writers win
        every attempt.
        """
        outcome = vault.store(oauth)
        self._record_facts(vault, oauth)
        return outcome

    def _record_facts(self, vault: UserVault, oauth: dict[str, Any]) -> None:
        """Non-secret audit facts in custom_metadata; optional, so only a warning."""
        version = claude_version(
            self.claude, self.ctx.environ, self.ctx.state_dir / "claude-version.json"
        )
        known = {
            "last_verified": iso(self.ctx.clock()),
            "expires_at": _iso_ms(_expiry(oauth)),
            "refresh_token_expires_at": _iso_ms(_deadline(oauth)),
            "refresh_token_sha256": creds.fingerprint(oauth["refreshToken"]),
            "host": self.ctx.host,
            "claude_version": version or "unknown",
        }
        # Vault refuses an empty custom_metadata value, and a login written
        # without refreshTokenExpiresAt has none to give.
        facts = {key: value for key, value in known.items() if value}
        self.facts["claude_version"] = version
        try:
            vault.update_facts(facts)
        except VaultError as err:
            log.warning("The audit metadata was not updated: %s", err.message)

    def recover(self, vault: UserVault) -> None:
        """Restore from the latest Vault copy when that can help, and re-probe."""
        stored = vault.read_latest()
        copy = stored.usable if stored is not None else None
        if stored is not None and copy is None:
            log.warning("The Vault copy cannot be restored: %s", stored.problem)

        for _ in range(MAX_RESTARTS):
            local = self.read_local()
            if not _should_restore(local, copy):
                self.sso_required(_why_not_restored(copy))
                return
            try:
                creds.write_merged(local, copy or {})
            except CredentialsChanged as err:
                # Claude wrote the file meanwhile: its own refresh wins, and
                # the login is judged again from what it wrote.
                log.info("%s", err.message)
                result = self.probe()
                if result.verdict is not Verdict.REJECTED:
                    self.conclude(vault, result, Status.OK)
                    return
                continue

            log.info("Restored the login from Vault into %s", local.path)
            result = self.probe()
            if result.verdict is Verdict.REJECTED:
                self.sso_required("and the copy restored from Vault was rejected too")
            else:
                self.conclude(vault, result, Status.RECOVERED)
            return
        raise CredentialsChanged(
            f"Claude kept rewriting {self.ctx.credentials_path} during the restore.",
            f"Nothing to do if it passes; rerun: {self.ctx.rerun_command()}",
        )

    def sso_required(self, why: str) -> None:
        """Nothing on disk or in Vault works: only the person can log in again."""
        command = self.login_command()
        self.facts.update(needs_login=True, login_command=command)
        self.report.emit(
            Event(
                Status.FAIL,
                "sso_required",
                f"Claude's login for {self.ctx.user} was rejected {why}.",
                f"As {self.ctx.user}, run: {command} && {self.ctx.rerun_command()}",
                exit_code=ExitCode.SSO_REQUIRED,
            )
        )

    def warn_if_expiring(self, oauth: dict[str, Any]) -> None:
        """The hard deadline of the SSO login: warn days ahead, not after."""
        deadline = _deadline(oauth)
        left_ms = deadline - self.ctx.clock() * 1000
        if not deadline or left_ms >= self.settings.login_warn_days * DAY_MS:
            return
        days = max(0, int(left_ms // DAY_MS))
        command = self.login_command()
        self.facts.update(login_expiring=True, login_command=command)
        self.report.emit(
            Event(
                Status.WARN,
                "login_expiring",
                f"The Enterprise login of {self.ctx.user} ends on "
                f"{iso(deadline / 1000)}; no backup can extend it.",
                f"Before then, as {self.ctx.user}, run: {command}",
                (("days_left", str(days)),),
            )
        )

    def login_command(self) -> str:
        return f"claude auth login --claudeai --sso --email {self.email()}"

    def email(self) -> str:
        """The address to log in with: Claude's record, else the roster's."""
        from agent.roster import EMAIL, RosterError, load_roster  # noqa: PLC0415  # rare path

        recorded = creds.claude_email(self.ctx.home, self.ctx.environ)
        if recorded and EMAIL.match(recorded):
            return recorded
        path = self.ctx.environ.get("CLAUDE_AUTH_SYNC_ROSTER", "") or DEFAULT_ROSTER
        try:
            entry = load_roster(path).get(self.ctx.user)
        except RosterError as err:
            log.debug("no email from the roster: %s", err)
            entry = None
        return entry.email if entry is not None else UNKNOWN_EMAIL

    def _login_facts(self, oauth: dict[str, Any]) -> None:
        self.facts.update(
            needs_login=False,
            access_expires_at=_iso_ms(_expiry(oauth)),
            login_expires_at=_iso_ms(_deadline(oauth)),
        )


def _should_restore(local: Credentials, copy: dict[str, Any] | None) -> bool:
    """Restore only a newer copy, or over a login that holds nothing usable."""
    if copy is None:
        return False
    if local.state is not LoginState.PRESENT or local.oauth is None:
        return True
    return _expiry(copy) > _expiry(local.oauth)


def _why_not_restored(copy: dict[str, Any] | None) -> str:
    if copy is None:
        return "and Vault holds no usable copy to restore"
    return "and the Vault copy is not newer than it, so it was not replayed"


def _iso_ms(epoch_ms: int) -> str | None:
    return iso(epoch_ms / 1000) if epoch_ms > 0 else None


def _expiry(oauth: dict[str, Any] | None) -> int:
    return creds.expires_at_ms(oauth)


def _deadline(oauth: dict[str, Any] | None) -> int:
    return creds.expires_at_ms(oauth, "refreshTokenExpiresAt")
