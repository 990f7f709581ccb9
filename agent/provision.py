"""The root provisioner: get every roster user on this host ready for renewal.

``claude-auth-provision`` runs as root: once in the foreground with an admin
Vault token when a workstation is set up (it then mints each user's scoped
token), and hourly from its timer without one (it then mints nothing and says
who still needs a token). For each roster user with an account here it makes
the directories that the renewal unit's sandbox binds in, writes the drop-in
that names them, checks the user's scoped token and enables the user's timer;
users whom the roster turned off, dropped or lists only for other hosts get
their timer disabled. It never reads or writes anyone's Claude credentials.

Work inside a home is done under that user's effective identity, so that a
symlink the user planted can never make root write, chown or read anything
the user could not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import re
import socket
import stat
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent import layout
from agent.errors import (
    AgentError,
    ConfigError,
    TokenDrift,
    TokenFileError,
    TokenInvalid,
    VaultUnavailable,
)
from agent.files import atomic_write, ensure_private_dir, read_private
from agent.roster import Roster, RosterError, User, load_roster
from agent.settings import Settings, SettingsError
from agent.systemd import Systemctl, SystemctlError

if TYPE_CHECKING:
    from agent.vault_http import VaultTransport

log = logging.getLogger(__name__)

ADMIN_RERUN = (
    "export VAULT_ADDR={addr}; export VAULT_TOKEN=<an admin token>; "
    "sudo --preserve-env=VAULT_ADDR,VAULT_TOKEN claude-auth-provision"
)
_INSTANCE = re.compile(rf"^{re.escape(layout.SYNC_UNIT)}([a-z_][a-z0-9_-]*)\.")
# Drop-in values are space-separated; a home with other characters than these
# could not be named in one safely.
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


def this_host_names() -> frozenset[str]:
    """The names the roster's ``hosts`` may give this host: short and FQDN.

    Lowercase, as the roster requires; the FQDN is what the resolver makes of
    the host name, and is only asked for when some user lists hosts.
    """
    name = socket.gethostname().lower()
    return frozenset({name, name.split(".")[0], socket.getfqdn(name).lower()})


class ProvisionError(AgentError):
    """One user could not be provisioned; the message says why, ``action`` how."""

    reason = "provision"


@dataclass(frozen=True)
class Account:
    """A user's account on this host, as the user database has it."""

    name: str
    uid: int
    gid: int
    home: Path


def lookup_account(name: str) -> Account | None:
    """The user's account on this host, or None when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


@dataclass
class Outcome:
    """What provisioning did for one user; ``error`` set means it failed."""

    user: str
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: AgentError | None = None

    def line(self) -> str:
        if self.error is not None:
            action = f" Fix: {self.error.action}" if self.error.action else ""
            return f"{self.user}: FAILED: {self.error.message}{action}"
        done = self.changes or ["unchanged"]
        return f"{self.user}: {'; '.join(done + self.notes)}"


@contextmanager
def acting_as(account: Account) -> Iterator[None]:
    """Take the user's effective identity for the block, and give it back.

    A no-op when this process already is that user (tests run so). Raises
    ``ProvisionError`` when the identity cannot be taken (not root).
    """
    if os.geteuid() == account.uid:
        yield
        return
    saved = (os.getegid(), os.getgroups())
    try:
        os.setgroups([account.gid])
        os.setegid(account.gid)
        os.seteuid(account.uid)
    except PermissionError:
        raise ProvisionError(
            f"Cannot act as {account.name} to prepare their home: not root.",
            "Run claude-auth-provision as root (sudo).",
        ) from None
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(saved[0])
        os.setgroups(saved[1])


def home_dropin(account: Account) -> str:
    """The drop-in that binds the user's own paths into the unit's sandbox.

    Homes appear as an empty tmpfs in the sandbox; these are the only paths
    below the user's home that the agent and the Claude CLI see.
    """
    home = account.home
    if not _PLAIN_PATH.match(str(home)):
        raise ProvisionError(
            f"The home directory {str(home)!r} of {account.name} holds characters "
            "that a systemd drop-in cannot name safely.",
            f"Give {account.name} a home path of letters, digits, '.', '_', '-'.",
        )
    user_install = " ".join(f"-{home / p}" for p in layout.CLAUDE_USER_INSTALL)
    return (
        f"# Written by claude-auth-provision for {account.name}: the paths below\n"
        "# their home that the renewal unit's sandbox binds in. Rewritten hourly.\n"
        "[Service]\n"
        f"BindPaths={home / layout.STATE_DIR}\n"
        f"BindPaths={home / layout.CLAUDE_DIR} {home / layout.CLAUDE_JSON}\n"
        f"BindReadOnlyPaths={home / layout.TOKEN_DIR}\n"
        f"BindReadOnlyPaths={user_install}\n"
    )


class Provisioner:
    """Provisions every roster user of this host; see the module's docstring.

    ``accounts`` looks users up (the user database by default) and
    ``systemctl`` runs systemd's steps; both are parameters so that the steps
    that need neither a real user nor a booted systemd run in any test.
    """

    def __init__(
        self,
        settings: Settings,
        roster: Roster,
        environ: Mapping[str, str],
        *,
        admin_token: str = "",
        systemctl: Systemctl | None = None,
        unit_dir: Path = layout.UNIT_DIR,
        accounts: Callable[[str], Account | None] = lookup_account,
        dry_run: bool = False,
        host_names: Collection[str] | None = None,
        accessors_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.roster = roster
        self.environ = environ
        self.admin_token = admin_token
        self.systemctl = systemctl or Systemctl()
        self.unit_dir = unit_dir
        self.accounts = accounts
        self.dry_run = dry_run
        self.host = socket.gethostname()
        self.host_names = None if host_names is None else frozenset(host_names)
        self.reload_needed = False
        self._said_offline = False
        self._transport: VaultTransport | None = None
        self.accessors = AccessorRegistry(accessors_file)

    def run(self) -> list[Outcome]:
        """Provision everyone: prepare homes, reload systemd, then set timers.

        The drop-ins must be loaded before a timer is started, since a timer
        whose boot delay has passed starts its service at once.
        """
        known = self._instances() | set(self.accessors.users())
        leavers = sorted(known - set(self.roster.names))
        outcomes = [Outcome(name) for name in (*self.roster.names, *leavers)]
        for outcome in outcomes:
            step = self._prepare if self._wanted(outcome.user) else self._remove_dropin
            self._each(outcome, step)

        if self.reload_needed and self._systemd_up() and not self.dry_run:
            self.systemctl.run("daemon-reload")
            log.info("reloaded systemd for the changed drop-ins")
        for outcome in outcomes:
            if outcome.error is None:
                self._each(outcome, self._set_timer)
        for outcome in outcomes:
            if outcome.user not in self.roster.names and outcome.error is None:
                self._each(outcome, self._retire_token)
        return outcomes

    def _wanted(self, name: str) -> bool:
        """Whether the user should have a running timer on this host."""
        user = self.roster.get(name)
        return (
            user is not None
            and user.claude_auth
            and self._works_here(user)
            and self.accounts(name) is not None
        )

    def _works_here(self, user: User) -> bool:
        """Whether the roster's ``hosts`` of the user name this host (or none)."""
        if user.hosts and self.host_names is None:
            self.host_names = this_host_names()
        return user.works_on(self.host_names or ())

    # -- one user ----------------------------------------------------------------

    def _each(self, outcome: Outcome, step: Callable[[Outcome], None]) -> None:
        """Run one user's step in its own try, so one user cannot stop the rest."""
        try:
            step(outcome)
        except AgentError as err:
            log.error("%s: %s %s", outcome.user, err.message, err.action)
            outcome.error = err
        except (OSError, SystemctlError) as err:
            log.debug("provisioning %s failed", outcome.user, exc_info=True)
            log.error("%s: %s", outcome.user, err)
            outcome.error = ProvisionError(str(err), "Fix the cause above and rerun.")

    def _prepare(self, outcome: Outcome) -> None:
        """Prepare the home, the drop-in and the token of a user who is wanted."""
        account = self.accounts(outcome.user)
        if account is None:  # removed since _wanted looked
            return
        self._prepare_home(account, outcome)
        self._write_dropin(account, outcome)
        self._check_token(account, outcome)

    def _prepare_home(self, account: Account, outcome: Outcome) -> None:
        """Create the directories and ``~/.claude.json`` the sandbox binds in.

        They must exist before the unit starts: a missing path cannot be
        bound, nor created under the read-only home the sandbox shows.
        """
        home = account.home
        with acting_as(account):
            for relative in (layout.TOKEN_DIR, layout.STATE_DIR, layout.CLAUDE_DIR):
                path = home / relative
                # lexists, not exists: a symlink into a home the user cannot
                # enter must be refused below, not raise EACCES here.
                if not os.path.lexists(path):
                    self._change(
                        outcome, f"create ~/{relative}", ensure_private_dir, path
                    )
                self._check_private(account, path, stat.S_ISDIR)
            claude_json = home / layout.CLAUDE_JSON
            if not os.path.lexists(claude_json):
                self._change(
                    outcome,
                    f"create ~/{layout.CLAUDE_JSON}",
                    _create_empty_json,
                    claude_json,
                )
            self._check_private(account, claude_json, stat.S_ISREG)

    def _check_private(
        self,
        account: Account,
        path: Path,
        kind: Callable[[int], bool],
    ) -> None:
        """Refuse a path that is a symlink, of the wrong kind or someone else's."""
        if self.dry_run and not os.path.lexists(path):
            return
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or not kind(info.st_mode):
            wanted = "directory" if kind is stat.S_ISDIR else "file"
            raise ProvisionError(
                f"{path} is not a plain {wanted} (a symlink or something else); "
                "the renewal unit will not bind it.",
                f"Move it aside as {account.name} (mv {path} {path}.bad) and rerun.",
            )
        if info.st_uid != account.uid:
            raise ProvisionError(
                f"{path} is not owned by {account.name}.",
                f"Check who made it, then: chown {account.name}: {path}",
            )

    def _write_dropin(self, account: Account, outcome: Outcome) -> None:
        directory = layout.dropin_dir(self.unit_dir, account.name)
        path = directory / layout.HOME_DROPIN
        text = home_dropin(account)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return

        def write() -> None:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            atomic_write(path, text.encode(), 0o644)

        self._change(outcome, "write the sandbox drop-in", write)
        self.reload_needed = True

    # -- the scoped token --------------------------------------------------------

    def _check_token(self, account: Account, outcome: Outcome) -> None:
        """Check the user's scoped token, or mint one when an admin token is given.

        A dead or foreign token is replaced when an admin token is given and
        is otherwise an error naming the fix; an outage is only a note.
        """
        from agent.vault import UserVault  # noqa: PLC0415  # only when checking

        path = account.home / layout.TOKEN_FILE
        with acting_as(account):
            found = read_private(
                path, account.uid, "scoped Vault token", TokenFileError
            )
        if found is None:
            self._mint_or_warn(account, outcome)
            return
        if found.mode & 0o077:
            raise TokenFileError(
                f"The scoped Vault token {path} can be read by others than "
                f"{account.name} (mode {found.mode:o}); treat it as leaked.",
                "Revoke it (vault token revoke -self, with that token), remove "
                f"it (rm {path}), then rerun with an admin token: {self._rerun()}",
            )

        token = found.content.decode("utf-8", errors="replace").strip()
        user_vault = UserVault(self._vault(token), self.settings, account.name)
        try:
            info = user_vault.check_token()
            if info.accessor and not self.dry_run:
                self.accessors.record(account.name, info.accessor)
        except (TokenInvalid, TokenDrift) as err:
            if not self.admin_token:
                raise TokenFileError(err.message, self._rerun()) from None
            log.warning("%s: %s", account.name, err.message)
            self._change(outcome, "replace the unusable token", self._mint, account)
            return
        except VaultUnavailable as err:
            log.warning("%s: %s", account.name, err.message)
            outcome.notes.append("token not checked (Vault unavailable)")
            return
        outcome.notes.append(f"token valid for {info.ttl // 86400} more days")

    def _mint_or_warn(self, account: Account, outcome: Outcome) -> None:
        if self.admin_token:
            self._change(outcome, "mint the scoped token", self._mint, account)
            return
        log.warning(
            "%s has no scoped Vault token yet; mint it with: %s",
            account.name,
            self._rerun(),
        )
        outcome.notes.append("needs a token (rerun with an admin token)")

    def _mint(self, account: Account) -> None:
        """Mint the user's token through their role and write it, as the user.

        The token goes from Vault's answer straight into the file: never into
        an argument, a log line or an exception.
        """
        from agent.vault import mint_token  # noqa: PLC0415  # only when minting

        try:
            minted = mint_token(self._vault(self.admin_token), account.name, self.host)
        except VaultUnavailable as err:
            raise ProvisionError(
                err.message,
                "Check that Vault is reachable, up and unsealed, then: "
                + self._rerun(),
            ) from None

        with acting_as(account):
            ensure_private_dir(account.home / layout.TOKEN_DIR)
            atomic_write(account.home / layout.TOKEN_FILE, minted.token.encode(), 0o600)
        if minted.accessor:
            self.accessors.record(account.name, minted.accessor)

    def _retire_token(self, outcome: Outcome) -> None:
        """Revoke the token of a user who left the roster, and remove its file.

        Their policy is gone once the stack is deployed, so the token already
        grants nothing; revoking it by accessor (which needs no copy of the
        token) ends it now rather than at the end of its period. Without an
        admin token the accessor is kept, and a later run with one revokes it.
        """
        from agent.vault import revoke_accessor  # noqa: PLC0415  # only with Vault

        accessor = self.accessors.get(outcome.user)
        if accessor is None:
            return
        if not self.admin_token:
            log.warning(
                "%s left the roster; their old token is not revoked yet: %s",
                outcome.user,
                self._rerun(),
            )
            outcome.notes.append("old token not revoked (needs an admin token)")
            return

        def retire() -> None:
            revoked = revoke_accessor(
                self._vault(self.admin_token), outcome.user, accessor
            )
            if not revoked:
                outcome.notes.append("old token had already expired")
            account = self.accounts(outcome.user)
            if account is not None:
                with acting_as(account):
                    (account.home / layout.TOKEN_FILE).unlink(missing_ok=True)
            self.accessors.forget(outcome.user)

        self._change(outcome, "revoke the old token and remove its file", retire)

    def _vault(self, token: str) -> VaultTransport:
        """A transport to Vault speaking with ``token``.

        Built once from the environment and copied per token, so a bad
        setting or ``VAULT_SKIP_VERIFY``'s warning is said once, not per user.
        Raises ``ConfigError`` for an unusable Vault setting.
        """
        from agent.vault import make_transport  # noqa: PLC0415  # only with Vault

        if self._transport is None:
            self._transport = make_transport(self.settings, "", self.environ)
        return self._transport.with_token(token)

    def _rerun(self) -> str:
        return ADMIN_RERUN.format(addr=self.settings.vault_addr)

    # -- timers -------------------------------------------------------------------

    def _set_timer(self, outcome: Outcome) -> None:
        """Enable the timer of a prepared user; disable everyone else's."""
        wanted = self._wanted(outcome.user)
        if not self._systemd_up():
            return

        timer = layout.sync_timer(outcome.user)
        enabled = self.systemctl.is_enabled(timer)
        active = self.systemctl.is_active(timer)
        if wanted and not (enabled and active):
            self._change(outcome, "enable the timer", self._enable, outcome.user)
        elif not wanted and (enabled or active):
            self._change(outcome, "disable the timer", self._disable, outcome.user)

    def _enable(self, user: str) -> None:
        self.systemctl.run("enable", "--now", layout.sync_timer(user))

    def _disable(self, user: str) -> None:
        """Stop the user's timer and service for good, and forget any failure."""
        self.systemctl.run("disable", "--now", layout.sync_timer(user))
        self.systemctl.run("stop", layout.sync_service(user), check=False)
        self.systemctl.run(
            "reset-failed",
            layout.sync_service(user),
            layout.sync_timer(user),
            check=False,
        )

    def _remove_dropin(self, outcome: Outcome) -> None:
        """Remove the drop-in of a user who is not wanted, and say why not."""
        user = self.roster.get(outcome.user)
        if user is None:
            outcome.notes.append("not in the roster")
        elif not user.claude_auth:
            outcome.notes.append("claude_auth is false")
        elif not self._works_here(user):
            outcome.notes.append(f"listed for other hosts ({', '.join(user.hosts)})")
        else:
            outcome.notes.append("no account on this host")

        path = layout.dropin_dir(self.unit_dir, outcome.user) / layout.HOME_DROPIN
        if path.is_file():
            self._change(outcome, "remove the sandbox drop-in", path.unlink)
            self.reload_needed = True

    def _instances(self) -> set[str]:
        """Users who have a timer or drop-in here, whatever the roster says now."""
        names = {d.name for d in layout.dropin_dirs(self.unit_dir)}
        names |= {p.name for p in self.unit_dir.glob(f"*.wants/{layout.SYNC_UNIT}*")}
        if self.systemctl.running:
            names |= self.systemctl.instances(layout.SYNC_UNIT)
        return {m.group(1) for n in names if (m := _INSTANCE.match(n))}

    def _systemd_up(self) -> bool:
        if not self.systemctl.running and not self._said_offline:
            log.warning("systemd is not running here: skipping the systemctl steps")
            self._said_offline = True
        return self.systemctl.running

    # -- changes, or a plan of them ----------------------------------------------

    def _change(
        self, outcome: Outcome, what: str, action: Callable[..., object], *args: object
    ) -> None:
        """Make one change, or under ``--dry-run`` only say that it would."""
        if self.dry_run:
            outcome.changes.append(f"would {what}")
            return
        action(*args)
        outcome.changes.append(what)
        log.info("%s: %s", outcome.user, what)


class AccessorRegistry:
    """Each user's token accessor, in a root-only JSON file.

    An accessor names a token for lookup and revocation but cannot be used as
    the token; it is still kept private (0600), since it says who has one.
    Without a ``path`` the record lives only as long as the run (for tests and
    callers that keep their own).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._entries is None:
            try:
                if self.path is None:
                    raise FileNotFoundError
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                data = {}
            except (OSError, ValueError) as err:
                log.warning(
                    "Cannot read %s (%s); departed users' tokens will not be "
                    "revoked until it is fixed or removed.",
                    self.path,
                    err,
                )
                data = {}
            self._entries = {
                str(k): str(v) for k, v in data.items() if isinstance(v, str)
            }
        return self._entries

    def users(self) -> list[str]:
        return sorted(self._load())

    def get(self, user: str) -> str | None:
        return self._load().get(user)

    def record(self, user: str, accessor: str) -> None:
        if self._load().get(user) != accessor:
            self._load()[user] = accessor
            self._save()

    def forget(self, user: str) -> None:
        if self._load().pop(user, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = json.dumps(self._load(), indent=2, sort_keys=True) + "\n"
        atomic_write(self.path, text.encode(), 0o600)


def _create_empty_json(path: Path) -> None:
    """Create ``path`` as ``{}`` (Claude reports an empty file as corrupt).

    Exclusive creation: if Claude makes it at the same moment, theirs stays.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("{}\n")


def summary(outcomes: list[Outcome], dry_run: bool) -> str:
    failed = sum(o.error is not None for o in outcomes)
    changed = sum(bool(o.changes) and o.error is None for o in outcomes)
    head = (
        f"claude-auth-provision{' (dry run: nothing changed)' if dry_run else ''}: "
        f"{len(outcomes)} user(s), {changed} changed, {failed} failed"
    )
    return "\n".join([head, *(f"  {o.line()}" for o in outcomes)])


def installed_settings(path: Path = layout.ENV_FILE) -> dict[str, str]:
    """The settings ``make install-agent`` wrote, for a run from a root shell.

    The units read the file themselves; a person running the provisioner by
    hand gets the same settings, and what they export overrides them.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            found[name] = value.strip().removeprefix('"').removesuffix('"')
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="claude-auth-provision",
        description="Prepare every roster user on this host for the Claude "
        "login renewal (run as root; VAULT_TOKEN, when set, mints tokens).",
    )
    parser.add_argument(
        "--roster",
        type=Path,
        default=Path(os.environ.get("CLAUDE_AUTH_SYNC_ROSTER") or layout.ROSTER_FILE),
        help="the roster file (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and change nothing"
    )
    parser.add_argument("--debug", action="store_true", help="log the mechanics")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Provision every user; 0 when all succeeded, 1 when any failed, 2 on bad
    configuration."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(message)s",
    )
    # Taken out of the environment so that no child process (systemctl) gets it.
    admin_token = os.environ.pop("VAULT_TOKEN", "").strip()
    environ = {**installed_settings(), **os.environ}
    try:
        settings = Settings.from_env(environ)
        if settings.vault_addr is None:
            raise ConfigError(
                "VAULT_ADDR is not set.",
                f"Set it in {layout.ENV_FILE}, or export VAULT_ADDR=https://...",
            )
        roster = load_roster(args.roster)
    except (SettingsError, RosterError) as err:
        log.error("%s", err)
        return 2
    except ConfigError as err:
        log.error("%s %s", err.message, err.action)
        return 2

    provisioner = Provisioner(
        settings,
        roster,
        environ,
        admin_token=admin_token,
        dry_run=args.dry_run,
        accessors_file=layout.ACCESSORS_FILE,
    )
    try:
        outcomes = provisioner.run()
    except SystemctlError as err:
        log.error("%s", err)
        return 1
    print(summary(outcomes, args.dry_run), flush=True)
    return 1 if any(o.error is not None for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
