"""The roster: who should have a Claude login kept valid, parsed and validated.

The same model serves the Vault stack, the provisioner and the review tools,
so it imports neither cdktf nor hvac. Loading reports every problem at once,
each with the user and the line it concerns and what to do about it, because a
roster change is reviewed as a whole and fixing one error per CI run is slow.

A user name becomes part of Vault policy paths, where ``*`` and ``+`` are globs
and ``/`` or ``..`` would reach other users' paths; this is why the name rule
is strict rather than whatever the host's ``useradd`` would accept.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.settings import NAME_PREFIX, PROVISIONER_POLICY

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

# Kept to what an enterprise SSO address looks like, because the address is
# shown inside a shell command that people paste: no quotes, spaces or "$".
EMAIL = re.compile(
    r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)

#: A workstation's name as ``hostname`` prints it, short or fully qualified,
#: in lowercase so that one host cannot be listed under two spellings.
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)

#: System accounts that must never get a Claude login, and "provisioner",
#: whose policy name would be the provisioner's own policy.
RESERVED_NAMES = frozenset(
    {
        "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail",
        "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats",
        "nobody", "_apt", "messagebus", "sshd", "polkitd", "systemd-network",
        "systemd-resolve", "systemd-timesync", "systemd-journal",
        "systemd-coredump", "adm", "operator", "halt", "shutdown", "admin",
        PROVISIONER_POLICY.removeprefix(NAME_PREFIX),
    }
)  # fmt: skip

# libyaml's loader when PyYAML was built with it: ten times faster on a roster
# of thousands, and as safe as the pure-Python SafeLoader.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

TOP_KEYS = frozenset({"users", "token_bound_cidrs"})
USER_KEYS = frozenset({"email", "claude_auth", "token_bound_cidrs", "hosts"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a roster, phrased for the person who edits it."""

    message: str
    user: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        who = f"user {self.user!r}: " if self.user is not None else ""
        return f"{where}{who}{self.message}"


class RosterError(ValueError):
    """The roster cannot be used; ``problems`` lists every reason at once."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"{source} is not a valid roster ({count}):\n{lines}")


@dataclass(frozen=True)
class User:
    """One OS user on the workstations, with the Enterprise identity they log in as.

    ``claude_auth`` false keeps the user's policy and stored data but stops
    their timer, for someone who has an account but does not use Claude.
    ``hosts`` names the workstations they work on; empty means every host.
    """

    name: str
    email: str
    claude_auth: bool = True
    token_bound_cidrs: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    def works_on(self, host_names: Collection[str]) -> bool:
        """Whether this user works on the host known by any of ``host_names``."""
        return not self.hosts or any(host in host_names for host in self.hosts)


@dataclass(frozen=True)
class Roster:
    """The validated roster, users in the order the file lists them."""

    users: tuple[User, ...] = ()
    token_bound_cidrs: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[User]:
        return iter(self.users)

    def __len__(self) -> int:
        return len(self.users)

    def get(self, name: str) -> User | None:
        return next((u for u in self.users if u.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.users)

    def bound_cidrs_for(self, user: User) -> tuple[str, ...]:
        """The CIDRs a user's token is bound to: their own, else the roster's."""
        return user.token_bound_cidrs or self.token_bound_cidrs


@dataclass
class _Lines:
    """Line numbers of the users and their fields, and duplicate keys found."""

    users: dict[str, int] = field(default_factory=dict)
    fields: dict[tuple[str, str], int] = field(default_factory=dict)
    top: dict[str, int] = field(default_factory=dict)
    duplicates: list[Problem] = field(default_factory=list)


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<complex key>"


def _scan(node: yaml.Node, lines: _Lines, path: tuple[str, ...] = ()) -> None:
    """Walk the YAML node tree for duplicate keys and line numbers.

    PyYAML keeps the last of two equal keys without a word, which would let a
    second ``alice:`` silently replace the first in review; the node tree
    still has both, so they are found here.
    """
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _scan(item, lines, path)
        return
    if not isinstance(node, yaml.MappingNode):
        return

    # Keyed by tag too: an unquoted `yes` (a boolean) and a quoted 'yes' differ.
    seen: dict[tuple[str, str], int] = {}
    for key_node, value_node in node.value:
        key = _key_text(key_node)
        line = key_node.start_mark.line + 1
        if (key_node.tag, key) in seen:
            user = path[1] if len(path) >= 2 and path[0] == "users" else None
            if path == ("users",):
                user = key
            where = ".".join((*path, key))
            lines.duplicates.append(
                Problem(
                    f"the key {where!r} appears twice (lines "
                    f"{seen[key_node.tag, key]} and "
                    f"{line}); YAML would silently keep only the last. Merge them "
                    "into one entry.",
                    user=user,
                    line=line,
                )
            )
        else:
            seen[key_node.tag, key] = line
        if path == ():
            lines.top.setdefault(key, line)
        elif path == ("users",):
            lines.users.setdefault(key, line)
        elif len(path) == 2 and path[0] == "users":
            lines.fields.setdefault((path[1], key), line)
        _scan(value_node, lines, (*path, key))


def _check_cidrs(
    value: Any, user: str | None, line: int | None, problems: list[Problem]
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(
            Problem(
                "token_bound_cidrs must be a list of CIDR strings, such as "
                "['10.20.0.0/16'].",
                user=user,
                line=line,
            )
        )
        return ()
    cidrs = []
    for text in value:
        try:
            cidrs.append(str(ipaddress.ip_network(text, strict=True)))
        except ValueError:
            problems.append(
                Problem(
                    f"token_bound_cidrs has {text!r}, which is not a network in "
                    "CIDR form with its host bits zero (for example "
                    "'10.20.0.0/16' or '192.0.2.7/32').",
                    user=user,
                    line=line,
                )
            )
    return tuple(cidrs)


def _check_hosts(
    value: Any, user: str, line: int | None, problems: list[Problem]
) -> tuple[str, ...]:
    """The user's workstations; a bad entry is a problem, never skipped quietly."""
    if not isinstance(value, list) or not value:
        problems.append(
            Problem(
                "hosts must be a non-empty list of host names, such as "
                "[ws1, ws2.corp.example]; leave it out to mean every host.",
                user=user,
                line=line,
            )
        )
        return ()
    hosts: list[str] = []
    for entry in value:
        if isinstance(entry, str) and HOST_NAME.match(entry):
            if entry in hosts:
                problems.append(
                    Problem(f"hosts lists {entry!r} twice; keep one.", user, line)
                )
            hosts.append(entry)
            continue

        hint = ""
        if isinstance(entry, str) and HOST_NAME.match(entry.lower()):
            hint = f" (write it in lowercase: {entry.lower()!r})"
        problems.append(
            Problem(
                f"hosts has {entry!r}, which is not a lowercase host name like "
                f"'ws1' or 'ws1.corp.example'{hint}.",
                user=user,
                line=line,
            )
        )
    return tuple(hosts)


def _check_name(name: Any, line: int | None, problems: list[Problem]) -> str | None:
    if not isinstance(name, str):
        problems.append(
            Problem(
                f"the user name {name!r} is not text (YAML read it as "
                f"{type(name).__name__}); quote it if it really is a login name.",
                line=line,
            )
        )
        return None
    if not USER_NAME.match(name):
        problems.append(
            Problem(
                "is not a safe POSIX login name: it must match "
                "^[a-z_][a-z0-9_-]{0,31}$ (lowercase letters, digits, '_' and "
                "'-', starting with a letter or '_', at most 32 characters), "
                "because it becomes part of Vault policy paths.",
                user=name,
                line=line,
            )
        )
        return None
    if name in RESERVED_NAMES:
        problems.append(
            Problem(
                "is a reserved system account name and cannot have a Claude "
                "login kept for it; remove it from the roster.",
                user=name,
                line=line,
            )
        )
        return None
    return name


def _check_user(
    name: str, entry: Any, lines: _Lines, problems: list[Problem]
) -> User | None:
    line = lines.users.get(name)
    if not isinstance(entry, dict):
        problems.append(
            Problem(
                "must be a mapping with at least 'email', such as "
                "{email: name@corp.example}.",
                user=name,
                line=line,
            )
        )
        return None

    before = len(problems)
    for key in sorted(set(map(str, entry)) - USER_KEYS):
        problems.append(
            Problem(
                f"unknown key {key!r}; the keys a user may have are "
                f"{', '.join(sorted(USER_KEYS))}.",
                user=name,
                line=lines.fields.get((name, key), line),
            )
        )

    email = entry.get("email")
    email_line = lines.fields.get((name, "email"), line)
    if email is None:
        problems.append(
            Problem(
                "has no email; add the Enterprise address they log in with, "
                "such as 'email: name@corp.example'.",
                user=name,
                line=line,
            )
        )
    elif not isinstance(email, str) or not EMAIL.match(email) or len(email) > 254:
        problems.append(
            Problem(
                f"the email {email!r} is not a plain address like "
                "name@corp.example (letters, digits and . _ % + - before the "
                "'@', a dotted domain after it).",
                user=name,
                line=email_line,
            )
        )

    claude_auth = entry.get("claude_auth", True)
    if not isinstance(claude_auth, bool):
        problems.append(
            Problem(
                f"claude_auth is {claude_auth!r}; write true or false.",
                user=name,
                line=lines.fields.get((name, "claude_auth"), line),
            )
        )

    cidrs: tuple[str, ...] = ()
    if "token_bound_cidrs" in entry:
        cidr_line = lines.fields.get((name, "token_bound_cidrs"), line)
        cidrs = _check_cidrs(entry["token_bound_cidrs"], name, cidr_line, problems)

    hosts: tuple[str, ...] = ()
    if "hosts" in entry:
        hosts_line = lines.fields.get((name, "hosts"), line)
        hosts = _check_hosts(entry["hosts"], name, hosts_line, problems)

    if len(problems) > before:
        return None
    return User(name, str(email), bool(claude_auth), cidrs, hosts)


def parse_roster(text: str, source: str = "roster.yaml") -> Roster:
    """Parse and validate roster YAML.

    Raises ``RosterError`` listing every problem found, not just the first.
    """
    try:
        node = yaml.compose(text, Loader=_LOADER)
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506  # a safe loader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(err, "problem", None) or str(err)
        raise RosterError(
            source, [Problem(f"is not valid YAML: {reason}.", line=line)]
        ) from None

    lines = _Lines()
    if node is not None:
        _scan(node, lines)
    problems = list(lines.duplicates)

    if not isinstance(data, dict) or "users" not in data:
        problems.append(
            Problem("must be a mapping with a 'users:' key (use 'users: {}' if empty).")
        )
        raise RosterError(source, problems)

    for key in sorted(set(map(str, data)) - TOP_KEYS):
        problems.append(
            Problem(
                f"unknown top-level key {key!r}; the roster may have "
                f"{', '.join(sorted(TOP_KEYS))}.",
                line=lines.top.get(key),
            )
        )

    default_cidrs: tuple[str, ...] = ()
    if "token_bound_cidrs" in data:
        default_cidrs = _check_cidrs(
            data["token_bound_cidrs"], None, lines.top.get("token_bound_cidrs"),
            problems,
        )  # fmt: skip

    entries = data["users"]
    if entries is None:
        entries = {}
    if not isinstance(entries, dict):
        problems.append(
            Problem(
                "'users' must be a mapping of login name to settings.",
                line=lines.top.get("users"),
            )
        )
        raise RosterError(source, problems)

    users: list[User] = []
    owners: dict[str, str] = {}
    for raw_name, entry in entries.items():
        line = lines.users.get(str(raw_name))
        name = _check_name(raw_name, line, problems)
        if name is None:
            continue
        user = _check_user(name, entry, lines, problems)
        if user is None:
            continue
        other = owners.setdefault(user.email.lower(), name)
        if other != name:
            problems.append(
                Problem(
                    f"has the email {user.email!r}, which {other!r} already "
                    "has; each person logs in as themselves, so give each user "
                    "their own address.",
                    user=name,
                    line=lines.fields.get((name, "email"), line),
                )
            )
            continue
        users.append(user)

    if problems:
        problems.sort(key=lambda p: p.line if p.line is not None else 1 << 30)
        raise RosterError(source, problems)
    return Roster(tuple(users), default_cidrs)


def load_roster(path: str | Path) -> Roster:
    """Read and validate the roster file at ``path``.

    Raises ``RosterError`` for an unreadable or invalid file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise RosterError(
            str(path), [Problem(f"cannot be read ({reason}); check the path.")]
        ) from None
    return parse_roster(text, source=str(path))
