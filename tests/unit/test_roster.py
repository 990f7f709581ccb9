"""The roster loader: what it accepts, and that it reports every problem at once."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.roster import (
    EMAIL,
    RESERVED_NAMES,
    USER_NAME,
    RosterError,
    load_roster,
    parse_roster,
)
from tests.support.components import REPO


def problems_of(text: str) -> list[str]:
    with pytest.raises(RosterError) as caught:
        parse_roster(text)
    return [str(p) for p in caught.value.problems]


def test_sample_roster_loads() -> None:
    """The roster shipped in the repository is valid and keeps its order."""
    roster = load_roster(REPO / "roster.yaml")
    assert roster.names[:2] == ("alice", "bob")
    assert roster.get("erin") is not None
    assert roster.get("erin").claude_auth is False  # type: ignore[union-attr]


def test_claude_auth_defaults_to_true() -> None:
    """A user without claude_auth gets a timer."""
    roster = parse_roster("users:\n  alice:\n    email: alice@corp.example\n")
    assert roster.users[0].claude_auth is True


def test_empty_roster_is_valid() -> None:
    """An empty users mapping is a roster with nobody in it, not an error."""
    assert len(parse_roster("users: {}\n")) == 0
    assert len(parse_roster("users:\n")) == 0


def test_every_problem_is_reported_at_once() -> None:
    """Three independent mistakes give three problems, each naming its user."""
    found = problems_of(
        "users:\n"
        "  Alice:\n"
        "    email: alice@corp.example\n"
        "  bob:\n"
        "    email: not-an-email\n"
        "  carol:\n"
        "    email: carol@corp.example\n"
        "    shell: /bin/zsh\n"
    )
    assert len(found) == 3
    assert found[0].startswith("line 2: user 'Alice':")
    assert "line 5: user 'bob': the email 'not-an-email'" in found[1]
    assert "line 8: user 'carol': unknown key 'shell'" in found[2]


def test_duplicate_yaml_key_is_detected() -> None:
    """A user listed twice is an error, not a silent overwrite."""
    found = problems_of(
        "users:\n"
        "  alice:\n    email: alice@corp.example\n"
        "  alice:\n    email: alice2@corp.example\n"
    )
    assert found == [
        "line 4: user 'alice': the key 'users.alice' appears twice (lines 2 and 4); "
        "YAML would silently keep only the last. Merge them into one entry."
    ]


def test_duplicate_field_inside_a_user_is_detected() -> None:
    """A repeated field within one user is caught too."""
    found = problems_of(
        "users:\n  alice:\n    email: a@corp.example\n    email: b@corp.example\n"
    )
    assert "'users.alice.email' appears twice" in found[0]


def test_one_email_on_two_users_is_rejected() -> None:
    """Two OS users may not share an identity, whatever the letter case."""
    found = problems_of(
        "users:\n  alice:\n    email: a@corp.example\n"
        "  bob:\n    email: A@Corp.Example\n"
    )
    assert found == [
        "line 5: user 'bob': has the email 'A@Corp.Example', which 'alice' already "
        "has; each person logs in as themselves, so give each user their own "
        "address."
    ]


@pytest.mark.parametrize("name", ["root", "nobody", "www-data", "provisioner"])
def test_reserved_names_are_rejected(name: str) -> None:
    """System accounts, and the name of the provisioner's policy, are refused."""
    found = problems_of(f"users:\n  {name}:\n    email: x@corp.example\n")
    assert "reserved system account name" in found[0]


@pytest.mark.parametrize(
    "name", ["*", "a+b", "../bob", "a/b", "Alice", "1abc", "a" * 33, "a b", "é"]
)
def test_unsafe_names_are_rejected(name: str) -> None:
    """Globs, path separators and anything outside the POSIX rule are refused."""
    found = problems_of(f"users:\n  '{name}':\n    email: x@corp.example\n")
    assert "is not a safe POSIX login name" in found[0]


def test_unquoted_boolean_name_says_to_quote_it() -> None:
    """YAML reads `yes:` as true; the message says what happened."""
    found = problems_of("users:\n  yes:\n    email: x@corp.example\n")
    assert "YAML read it as bool" in found[0]


def test_unknown_top_level_key_is_rejected() -> None:
    """A misspelt top-level key is not ignored."""
    found = problems_of("users: {}\nuser:\n  alice: {}\n")
    assert found == [
        "line 2: unknown top-level key 'user'; the roster may have "
        "token_bound_cidrs, users."
    ]


def test_claude_auth_must_be_a_boolean() -> None:
    """A string such as "no" would otherwise be truthy."""
    found = problems_of(
        "users:\n  alice:\n    email: a@corp.example\n    claude_auth: 'no'\n"
    )
    assert "claude_auth is 'no'; write true or false." in found[0]


def test_bound_cidrs_are_validated_and_inherited() -> None:
    """Bad CIDRs are refused; a user without their own takes the roster's."""
    alice = "users:\n  a:\n    email: a@corp.example\n"
    found = problems_of(alice + "    token_bound_cidrs: [10.0.0.1/8]\n")
    assert "'10.0.0.1/8', which is not a network" in found[0]
    roster = parse_roster(
        "token_bound_cidrs: [10.0.0.0/8]\n"
        "users:\n  a:\n    email: a@corp.example\n"
        "  b:\n    email: b@corp.example\n    token_bound_cidrs: [192.0.2.7/32]\n"
    )
    assert roster.bound_cidrs_for(roster.users[0]) == ("10.0.0.0/8",)
    assert roster.bound_cidrs_for(roster.users[1]) == ("192.0.2.7/32",)


HOSTS = "users:\n  a:\n    email: a@corp.example\n    hosts: "


def test_hosts_are_kept_in_order() -> None:
    """A user's hosts, short or fully qualified, are kept as the roster lists them."""
    roster = parse_roster(HOSTS + "[ws2.corp.example, ws1]\n")
    assert roster.users[0].hosts == ("ws2.corp.example", "ws1")


def test_no_hosts_means_every_host() -> None:
    """A user without hosts works on any workstation."""
    user = parse_roster("users:\n  a:\n    email: a@corp.example\n").users[0]
    assert user.works_on({"anything"})


def test_listed_user_works_only_on_listed_hosts() -> None:
    """A user with hosts works on a host known by one of them, and nowhere else."""
    user = parse_roster(HOSTS + "[ws1.corp.example]\n").users[0]
    assert user.works_on({"ws1", "ws1.corp.example"})
    assert not user.works_on({"ws2", "ws2.corp.example"})


def test_uppercase_host_says_to_write_it_in_lowercase() -> None:
    """An uppercase host name is refused with its lowercase spelling."""
    found = problems_of(HOSTS + "[WS1]\n")
    assert found == [
        "line 4: user 'a': hosts has 'WS1', which is not a lowercase host name "
        "like 'ws1' or 'ws1.corp.example' (write it in lowercase: 'ws1')."
    ]


def test_bad_hosts_are_each_reported() -> None:
    """Not a name, a duplicate and a number each give their own problem."""
    found = problems_of(HOSTS + "[ws_1, ws1, ws1, 7]\n")
    assert [p.split(": ", 2)[2] for p in found] == [
        "hosts has 'ws_1', which is not a lowercase host name like 'ws1' or "
        "'ws1.corp.example'.",
        "hosts lists 'ws1' twice; keep one.",
        "hosts has 7, which is not a lowercase host name like 'ws1' or "
        "'ws1.corp.example'.",
    ]


@pytest.mark.parametrize("value", ["[]", "ws1", "{ws1: true}"])
def test_hosts_must_be_a_non_empty_list(value: str) -> None:
    """An empty list, a bare string or a mapping is refused, not read as 'every'."""
    found = problems_of(HOSTS + value + "\n")
    assert "hosts must be a non-empty list of host names" in found[0]


def test_not_yaml_names_the_line() -> None:
    """Broken YAML gives one problem with its line, not a parser traceback."""
    found = problems_of("users:\n  alice: [\n")
    assert found[0].startswith("line 3: is not valid YAML")


def test_unreadable_file_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A missing roster file is a RosterError that names the path."""
    with pytest.raises(RosterError, match="cannot be read"):
        load_roster(tmp_path / "absent.yaml")


# Names drawn from an alphabet that mixes what is allowed with what is not, so
# that both sides of every rule are exercised.
NAME_ALPHABET = string.ascii_lowercase[:6] + "AZ09_-./*+ é"
names = st.one_of(
    st.text(NAME_ALPHABET, min_size=0, max_size=34),
    st.sampled_from(sorted(RESERVED_NAMES)),
)
emails = st.one_of(
    st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.example", fullmatch=True),
    st.text(string.printable.strip(), max_size=20),
)
entries = st.fixed_dictionaries(
    {"email": emails}, optional={"claude_auth": st.booleans()}
)
users = st.dictionaries(names, entries, max_size=6)


def expected_valid(roster: dict[str, dict[str, object]]) -> bool:
    """The roster rules, written independently of the loader."""
    seen: set[str] = set()
    for name, entry in roster.items():
        email = str(entry["email"])
        if not USER_NAME.fullmatch(name) or name in RESERVED_NAMES:
            return False
        if not EMAIL.fullmatch(email) or email.lower() in seen:
            return False
        seen.add(email.lower())
    return True


@settings(max_examples=300, deadline=None)
@given(users)
def test_generated_rosters_are_judged_by_the_rules(
    roster: dict[str, dict[str, object]],
) -> None:
    """Nothing invalid gets through, and nothing valid is rejected."""
    # JSON is YAML: every generated value survives the round trip exactly.
    text = json.dumps({"users": roster})
    if expected_valid(roster):
        loaded = parse_roster(text)
        assert loaded.names == tuple(roster)
        assert [u.email for u in loaded] == [e["email"] for e in roster.values()]
    else:
        with pytest.raises(RosterError):
            parse_roster(text)
