"""Review a roster change before ``cdktf deploy`` runs it: ``check`` and ``plan``.

``check`` validates the roster and then the invariants that keep users apart,
on the Terraform JSON the stack really synthesizes (not on what the code means
to synthesize): one policy and one token role per user, no policy path outside
the user's own, no glob in a user's path, and alert rules for everyone whose
timer runs.

``plan`` compares the roster at a git ref with the working tree and says, for
a person or (with ``--json``) for a bot, what deploying the change will do.
It needs neither Vault nor Terraform: both sides are synthesized here and
diffed resource by resource.

Usage: ``python -m stacks.review check [--roster PATH]`` and
``python -m stacks.review plan --base REF [--roster PATH] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.roster import Roster, RosterError, User, load_roster, parse_roster
from agent.settings import (
    PROVISIONER_POLICY,
    Settings,
    SettingsError,
    policy_name,
)
from stacks.alerts import AlertSettings, rule_group
from stacks.terraform_json import instances_by_address

log = logging.getLogger("claude-auth-sync.review")

POLICY = "vault_policy"
ROLE = "vault_token_auth_backend_role"
_PATH_STANZA = re.compile(r'path\s+"([^"]*)"\s*\{')


class ReviewError(RuntimeError):
    """The review cannot be made (a ref that is not fetched, a broken roster)."""


def synthesize(roster: Roster, settings: Settings) -> dict[str, Any]:
    """The stack's Terraform JSON for a roster, synthesized in a scratch folder."""
    # Node 20 works; jsii's end-of-life banner would only bury the review.
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from cdktf import App  # noqa: PLC0415  # jsii starts Node: only when needed

    from stacks.vault import STACK_NAME, VaultStack  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="claude-auth-sync-review-") as outdir:
        app = App(outdir=outdir)
        VaultStack(app, roster, settings)
        app.synth()
        path = Path(outdir) / "stacks" / STACK_NAME / "cdk.tf.json"
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _resources(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Vault resource instances by Terraform address, ``for_each`` expanded.

    The alert rules' file or ConfigMap is left out: it changes with every
    roster change, and the plan lists the rules themselves one by one.
    """
    return {
        address: arguments
        for address, arguments in instances_by_address(document).items()
        if address.startswith("vault_")
    }


def policy_paths(policy_text: str) -> list[str]:
    """The paths a policy document grants, in the order it lists them."""
    return _PATH_STANZA.findall(policy_text)


def _check_user(
    user: User,
    policies: dict[str, list[dict[str, Any]]],
    roles: dict[str, list[dict[str, Any]]],
    settings: Settings,
) -> list[str]:
    name = policy_name(user.name)
    own = {
        settings.data_path(user.name),
        settings.metadata_path(user.name),
        "auth/token/lookup-self",
        "auth/token/renew-self",
    }
    if len(policies.get(name, [])) != 1 or len(roles.get(name, [])) != 1:
        return [
            f"user {user.name!r}: expected one policy and one token role named "
            f"{name!r}, found {len(policies.get(name, []))} and "
            f"{len(roles.get(name, []))}."
        ]

    problems = []
    for path in policy_paths(policies[name][0]["policy"]):
        if "*" in path or "+" in path:
            problems.append(f"user {user.name!r}: policy path {path!r} is a glob.")
        elif path not in own:
            problems.append(
                f"user {user.name!r}: policy grants {path!r}, outside their own path."
            )
    role = roles[name][0]
    if role.get("allowed_policies") != [name] or not role.get(
        "token_no_default_policy"
    ):
        problems.append(
            f"user {user.name!r}: the token role must grant exactly {name!r} and "
            "not the default policy."
        )
    return problems


def check_stack(
    roster: Roster, settings: Settings, document: dict[str, Any]
) -> list[str]:
    """Every invariant the synthesized stack breaks; empty when it is sound."""
    policies: dict[str, list[dict[str, Any]]] = {}
    roles: dict[str, list[dict[str, Any]]] = {}
    for address, attributes in _resources(document).items():
        if address.startswith(POLICY + "."):
            policies.setdefault(attributes["name"], []).append(attributes)
        elif address.startswith(ROLE + "."):
            roles.setdefault(attributes["role_name"], []).append(attributes)

    problems = []
    for user in roster:
        problems.extend(_check_user(user, policies, roles, settings))

    expected = {policy_name(u.name) for u in roster} | {PROVISIONER_POLICY}
    for extra in sorted((set(policies) | set(roles)) - expected):
        problems.append(f"{extra!r} is declared but belongs to no roster user.")
    for path in policy_paths(
        policies.get(PROVISIONER_POLICY, [{}])[0].get("policy", "")
    ):
        if path.startswith(("sys/", settings.kv_mount + "/")):
            problems.append(f"the provisioner policy reaches {path!r}; it must not.")

    alerted = {r["labels"]["user"] for r in _delivered_rules(document, roster)}
    for user in roster:
        if user.claude_auth and user.name not in alerted:
            problems.append(
                f"user {user.name!r} has claude_auth on but no alert rules."
            )
    return problems


def _delivered_rules(document: dict[str, Any], roster: Roster) -> list[dict[str, Any]]:
    """The rules the stack hands to Loki, read back from its file or ConfigMap.

    With delivery ``none`` the stack carries no rules, and the ones the roster
    would get are checked instead.
    """
    import yaml  # noqa: PLC0415  # only the check reads the rules back

    for address, arguments in instances_by_address(document).items():
        if address.startswith("local_file."):
            text = arguments["content"]
        elif address.startswith("kubernetes_config_map_v1."):
            text = next(iter(arguments["data"].values()))
        else:
            continue
        rules: list[dict[str, Any]] = yaml.safe_load(text)["groups"][0]["rules"]
        return rules
    return _rules(roster)


def _rules(roster: Roster) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = rule_group(roster, AlertSettings.from_env())[
        "groups"
    ][0]["rules"]
    return rules


@dataclass
class Plan:
    """What deploying a roster change does, in the words a reviewer needs."""

    base: str
    users: dict[str, list[str]] = field(default_factory=dict)
    resources: dict[str, list[str]] = field(default_factory=dict)
    alert_rules: dict[str, list[str]] = field(default_factory=dict)
    removed: list[dict[str, str]] = field(default_factory=list)
    #: Users whose workstations changed: ``before`` and ``after`` host lists,
    #: where an empty list means every host.
    hosts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    added_hosts: dict[str, list[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "users": self.users,
            "hosts": self.hosts,
            "added_users_hosts": self.added_hosts,
            "resources": self.resources,
            "alert_rules": self.alert_rules,
            "removed_users": self.removed,
        }


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "create": sorted(set(after) - set(before)),
        "change": sorted(k for k in set(after) & set(before) if after[k] != before[k]),
        "destroy": sorted(set(before) - set(after)),
    }


def plan_change(
    base: Roster,
    head: Roster,
    settings: Settings,
    base_name: str,
    documents: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Plan:
    """Compare two rosters; ``documents`` passes already synthesized stacks."""
    before = {u.name: u for u in base}
    after = {u.name: u for u in head}
    plan = Plan(base=base_name)
    plan.users = {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "enabled": sorted(
            n for n in set(after) & set(before)
            if after[n].claude_auth and not before[n].claude_auth
        ),
        "disabled": sorted(
            n for n in set(after) & set(before)
            if before[n].claude_auth and not after[n].claude_auth
        ),
        "email_changed": sorted(
            n for n in set(after) & set(before) if after[n].email != before[n].email
        ),
    }  # fmt: skip

    plan.hosts = {
        n: {"before": list(before[n].hosts), "after": list(after[n].hosts)}
        for n in sorted(set(after) & set(before))
        if before[n].hosts != after[n].hosts
    }
    plan.added_hosts = {
        n: list(after[n].hosts) for n in plan.users["added"] if after[n].hosts
    }

    if documents is None:
        documents = (synthesize(base, settings), synthesize(head, settings))
    plan.resources = _diff(_resources(documents[0]), _resources(documents[1]))

    def keyed(roster: Roster) -> dict[str, Any]:
        return {f"{r['alert']} {r['labels']['user']}": r for r in _rules(roster)}

    plan.alert_rules = _diff(keyed(base), keyed(head))
    plan.removed = [
        {
            "user": name,
            "token": "stops working once the stack is deployed: its policy and "
            "token role are destroyed",
            "timer": "disabled at the next provisioner run on each host",
            "data": f"kept for audit at {settings.data_path(name)}",
        }
        for name in plan.users["removed"]
    ]
    return plan


def _on_hosts(hosts: list[str] | None) -> str:
    return f" (on {', '.join(hosts)})" if hosts else ""


def _host_change(user: str, change: dict[str, list[str]]) -> str:
    """One user's move between workstations, and what the provisioners do."""
    before, after = change["before"], change["after"]
    if not after:
        effect = "timer enabled on every host where they have an account"
    elif not before:
        effect = "timer disabled on every other host"
    else:
        started = [h for h in after if h not in before]
        stopped = [h for h in before if h not in after]
        parts = []
        if started:
            parts.append(f"timer enabled on {', '.join(started)}")
        if stopped:
            parts.append(f"timer disabled on {', '.join(stopped)}")
        effect = "; ".join(parts) or "the same hosts in another order"
    shown = [", ".join(hosts) or "every host" for hosts in (before, after)]
    return (
        f"  ~ {user}: {shown[0]} -> {shown[1]} ({effect}, at the next provisioner run)"
    )


def render_plan(plan: Plan, roster_path: str) -> str:
    """The plan as a reviewer reads it in a pull request."""
    lines = [f"Roster change: {roster_path} at {plan.base} -> working tree", ""]
    marks = {"added": "+", "removed": "-", "enabled": "~", "disabled": "~"}
    marks["email_changed"] = "~"
    users = [
        f"  {marks[kind]} {name}: {kind.replace('_', ' ')}"
        + _on_hosts(plan.added_hosts.get(name) if kind == "added" else None)
        for kind, names in plan.users.items()
        for name in names
    ]
    lines += ["Users:", *(users or ["  (no change)"]), ""]
    if plan.hosts:
        lines += ["Hosts:", *(_host_change(n, c) for n, c in plan.hosts.items()), ""]

    for title, diff in (
        ("Vault resources", plan.resources),
        ("Alert rules", plan.alert_rules),
    ):
        rows = [
            f"  {mark} {item}"
            for mark, kind in (("+", "create"), ("~", "change"), ("-", "destroy"))
            for item in diff[kind]
        ]
        lines += [f"{title}:", *(rows or ["  (no change)"]), ""]

    for gone in plan.removed:
        lines += [
            f"What happens to {gone['user']}:",
            f"  token: {gone['token']}",
            f"  timer: {gone['timer']}",
            f"  data:  {gone['data']}",
            "",
        ]

    r, a = plan.resources, plan.alert_rules
    lines.append(
        f"Summary: {len(plan.users['added'])} added, {len(plan.users['removed'])} "
        f"removed, {len(plan.users['enabled'])} enabled, "
        f"{len(plan.users['disabled'])} disabled; Vault: {len(r['create'])} to "
        f"create, {len(r['change'])} to change, {len(r['destroy'])} to destroy; "
        f"alert rules: {len(a['create'])} to create, {len(a['change'])} to change, "
        f"{len(a['destroy'])} to destroy."
    )
    return "\n".join(lines)


def roster_at(ref: str, path: str) -> Roster:
    """The roster as it was at a git ref; an absent file is an empty roster.

    Raises ``ReviewError`` when the ref is not known to this clone, with the
    command that fetches it (a shallow clone in CI often lacks the base).
    """
    known = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if known.returncode != 0:
        raise ReviewError(
            f"The git ref {ref!r} is not in this clone. Fetch it first, for "
            f"example: git fetch --depth=1 origin {ref}"
        )
    shown = subprocess.run(
        ["git", "show", f"{ref}:./{path}"], capture_output=True, text=True, check=False
    )
    if shown.returncode != 0:
        return Roster()
    return parse_roster(shown.stdout, source=f"{path} at {ref}")


def main(argv: list[str] | None = None) -> int:
    """Run ``check`` or ``plan``; exit 0 when sound, 1 when not, 2 on bad input."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m stacks.review")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate the roster and the stack")
    check.add_argument("--roster", default="roster.yaml")
    plan = commands.add_parser("plan", help="what a roster change will do")
    plan.add_argument("--roster", default="roster.yaml")
    plan.add_argument("--base", required=True, help="git ref to compare against")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
        head = load_roster(args.roster)
        if args.command == "check":
            return _run_check(head, settings, args.roster)
        base = roster_at(args.base, args.roster)
    except (RosterError, SettingsError, ReviewError) as err:
        log.error("%s", err)
        return 2

    result = plan_change(base, head, settings, args.base)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(render_plan(result, args.roster))
    return 0


def _run_check(roster: Roster, settings: Settings, path: str) -> int:
    problems = check_stack(roster, settings, synthesize(roster, settings))
    for problem in problems:
        log.error("%s: %s", path, problem)
    if problems:
        return 1
    enabled = sum(1 for u in roster if u.claude_auth)
    log.info(
        "%s: %d users (%d with a timer); the stack keeps each to their own path.",
        path,
        len(roster),
        enabled,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
