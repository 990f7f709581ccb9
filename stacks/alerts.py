"""The Loki alert rules, rendered from the roster as a ruler rule group.

This module builds plain data (what a Loki ruler reads as YAML) and imports
neither cdktf nor a provider, so the rules can be reviewed, tested and parsed
on their own; ``stacks.alert_delivery`` hands the group to Loki.

Three rules per roster user with ``claude_auth`` on:

* ``WorkstationClaudeAuthInvalid``: the user's latest verdict on a host is
  ``FAIL``. The window spans more than one timer period, so a standing failure
  is one continuous alert rather than one per run; and because the rule looks
  at the latest verdict rather than counting failures, it resolves at the
  first ``OK`` instead of hours later.
* ``WorkstationClaudeAuthStale``: no ``OK`` or ``RECOVERED`` from the user for
  more than two periods. Counting failures never notices an agent that stopped
  running; only the roster knows who should be reporting.
* ``WorkstationClaudeLoginExpiring``: the latest verdict carried the agent's
  ``login_expiring`` warning, so the person logs in days before the hard
  deadline instead of after it.

The rules select on the journal's syslog identifier, which the log shipper
turns into the ``identifier`` label, and on the fields of the agent's logfmt
line (``agent.report``): ``status``, ``user`` and ``reason``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.roster import Roster, User
from agent.settings import DEFAULT_TIMER_PERIOD_HOURS, LOG_IDENTIFIER

GROUP_NAME = "claude-auth-sync"
DEFAULT_RUNBOOK_URL = "docs/runbook.md"

# A run can start up to the timer's randomized delay late, and a persistent
# timer catches up after downtime: one extra hour keeps two consecutive runs
# inside one window.
_SLACK_HOURS = 1

STREAM = f'{{identifier="{LOG_IDENTIFIER}"}}'


@dataclass(frozen=True)
class AlertSettings:
    """How often the agent runs and where an alert's runbook link points."""

    timer_period_hours: int = DEFAULT_TIMER_PERIOD_HOURS
    runbook_url: str = DEFAULT_RUNBOOK_URL
    evaluation_interval: str = "5m"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertSettings:
        env = os.environ if environ is None else environ
        from agent.settings import Settings  # noqa: PLC0415  # validates the period

        period = Settings.from_env(env).timer_period_hours
        url = env.get("CLAUDE_AUTH_SYNC_RUNBOOK_URL", "").strip()
        return cls(timer_period_hours=period, runbook_url=url or DEFAULT_RUNBOOK_URL)

    @property
    def verdict_window(self) -> str:
        return f"{self.timer_period_hours + _SLACK_HOURS}h"

    @property
    def stale_window(self) -> str:
        return f"{2 * self.timer_period_hours + _SLACK_HOURS}h"


DELIVERIES = ("file", "configmap", "none")


class DeliveryError(ValueError):
    """The alert delivery settings cannot be used; the message says which."""


@dataclass(frozen=True)
class DeliverySettings:
    """Where the rules go; every field has an environment variable."""

    mode: str = "file"
    rules_file: str = f"loki-rules/fake/{GROUP_NAME}.yaml"
    namespace: str = "loki"
    sidecar_label: str = "loki_rule"
    sidecar_label_value: str = "true"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliverySettings:
        """Read the settings; raises ``DeliveryError`` for an unknown mode."""
        env = os.environ if environ is None else environ
        mode = env.get("CLAUDE_AUTH_SYNC_ALERTS", "").strip() or cls.mode
        if mode not in DELIVERIES:
            raise DeliveryError(
                f"CLAUDE_AUTH_SYNC_ALERTS={mode!r} is not one of "
                f"{', '.join(DELIVERIES)}; set it to 'file' for a file-based Loki "
                "ruler or 'configmap' for a ruler with a ConfigMap sidecar."
            )

        def get(name: str, default: str) -> str:
            return env.get(f"CLAUDE_AUTH_SYNC_{name}", "").strip() or default

        return cls(
            mode=mode,
            rules_file=get("RULES_FILE", cls.rules_file),
            namespace=get("RULES_NAMESPACE", cls.namespace),
            sidecar_label=get("RULES_LABEL", cls.sidecar_label),
            sidecar_label_value=get("RULES_LABEL_VALUE", cls.sidecar_label_value),
        )


def _quote(value: str) -> str:
    """A LogQL string literal; roster names and emails never need escaping."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _latest_flag(
    user: str, selection: str, name: str, condition: str, settings: AlertSettings
) -> str:
    """1 while the latest of the user's ``selection`` lines meets ``condition``.

    Reading the latest line, rather than counting matches, is what makes an
    alert resolve at the first line that no longer meets the condition.
    """
    flag = f"`{{{{ if {condition} }}}}1{{{{ else }}}}0{{{{ end }}}}`"
    return (
        f"max by (host, user) (last_over_time({STREAM} | logfmt"
        f" | user={_quote(user)} | {selection}"
        f" | label_format {name}={flag} | unwrap {name}"
        f" [{settings.verdict_window}])) > 0"
    )


def invalid_expr(user: str, settings: AlertSettings) -> str:
    """1 while the user's latest verdict on a host is FAIL, else 0."""
    return _latest_flag(
        user,
        'status=~"OK|RECOVERED|FAIL"',
        "failed",
        'eq .status "FAIL"',
        settings,
    )


def stale_expr(user: str, settings: AlertSettings) -> str:
    """1 when no success from the user has been logged for two periods."""
    return (
        f"absent_over_time({STREAM} | logfmt | user={_quote(user)}"
        f' | status=~"OK|RECOVERED" [{settings.stale_window}])'
    )


def expiring_expr(user: str, settings: AlertSettings) -> str:
    """1 while the user's latest verdict came with a login_expiring warning."""
    return _latest_flag(
        user,
        'status=~"OK|RECOVERED" or reason="login_expiring"',
        "expiring",
        'eq .reason "login_expiring"',
        settings,
    )


def _login_command(user: User) -> str:
    return f"claude auth login --claudeai --sso --email {user.email}"


def user_rules(user: User, settings: AlertSettings) -> list[dict[str, Any]]:
    """The three rules for one user, with the commands that fix each."""
    rerun = f"systemctl start claude-auth-sync@{user.name}.service"
    base = settings.runbook_url
    return [
        {
            "alert": "WorkstationClaudeAuthInvalid",
            "expr": invalid_expr(user.name, settings),
            "for": "0m",
            "labels": {"severity": "critical", "user": user.name},
            "annotations": {
                "summary": f"Claude login of {user.name} on {{{{ $labels.host }}}}"
                " failed its check and could not be recovered.",
                "description": (
                    f"The renewal agent logged FAIL for {user.name}. If the reason "
                    f"is sso_required, {user.name} runs: {_login_command(user)} "
                    f"and then: {rerun}. If the reason concerns the Vault token, "
                    "an operator reruns the root provisioner with an admin Vault "
                    "token. The reason is in: journalctl -t claude-auth-sync "
                    "--since today"
                ),
                "runbook_url": f"{base}#workstationclaudeauthinvalid",
            },
        },
        {
            "alert": "WorkstationClaudeAuthStale",
            "expr": stale_expr(user.name, settings),
            "for": "15m",
            "labels": {"severity": "warning", "user": user.name},
            "annotations": {
                "summary": f"No successful Claude login check for {user.name} in "
                f"{settings.stale_window}.",
                "description": (
                    f"The agent of {user.name} has not logged OK or RECOVERED for "
                    "two timer periods: the timer is stopped, the unit is broken "
                    "or the host is down. On the host: systemctl list-timers "
                    f"'claude-auth-sync@*' and systemctl status "
                    f"claude-auth-sync@{user.name}.service"
                ),
                "runbook_url": f"{base}#workstationclaudeauthstale",
            },
        },
        {
            "alert": "WorkstationClaudeLoginExpiring",
            "expr": expiring_expr(user.name, settings),
            "for": "0m",
            "labels": {"severity": "info", "user": user.name},
            "annotations": {
                "summary": f"The Claude login of {user.name} reaches its hard "
                "deadline within days.",
                "description": (
                    f"No refresh can extend it. {user.name} runs, at a time that "
                    f"suits them: {_login_command(user)} and then: {rerun}"
                ),
                "runbook_url": f"{base}#workstationclaudeloginexpiring",
            },
        },
    ]


def rule_group(roster: Roster, settings: AlertSettings) -> dict[str, Any]:
    """The Loki ruler document: one group holding every enabled user's rules."""
    rules: list[dict[str, Any]] = []
    for user in roster:
        if user.claude_auth:
            rules.extend(user_rules(user, settings))
    return {
        "groups": [
            {
                "name": GROUP_NAME,
                "interval": settings.evaluation_interval,
                "rules": rules,
            }
        ]
    }


def _yaml_lines(value: Any, indent: str) -> list[str]:
    """Block-style YAML for mappings, lists and strings, quoting every scalar.

    A JSON string is a valid YAML double-quoted scalar, so ``json.dumps`` does
    the quoting: nothing can be read back as a number, a boolean or a tag.
    PyYAML's own emitter took 25 s for the 30,000 rules of 10,000 users.
    """
    lines: list[str] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        head = f"{indent}{key}:" if isinstance(value, dict) else f"{indent}-"
        if isinstance(item, dict) and item and isinstance(value, list):
            # "- first: ..." then the other keys aligned under "first".
            nested = _yaml_lines(item, indent + "  ")
            lines.append(f"{head} {nested[0].lstrip()}")
            lines.extend(nested[1:])
        elif isinstance(item, dict | list) and item:
            lines.append(head)
            lines.extend(_yaml_lines(item, indent + "  "))
        else:
            lines.append(f"{head} {json.dumps(item, ensure_ascii=False)}")
    return lines


def render_rules_yaml(roster: Roster, settings: AlertSettings) -> str:
    """The group as the YAML a file-based ruler or a ConfigMap carries."""
    header = (
        "# Generated from the roster by the claude-auth-sync stack; edit "
        "roster.yaml, not this file.\n"
    )
    body = _yaml_lines(rule_group(roster, settings), "")
    return header + "\n".join(body) + "\n"
