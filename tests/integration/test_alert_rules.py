"""The rendered alert rules, parsed by Grafana's own LogQL grammar."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.roster import load_roster
from stacks.alerts import AlertSettings, rule_group
from tests.support.components import REPO, logql_grammar, require
from tests.support.logql import parse_logql


@pytest.fixture(scope="module")
def grammar() -> Path:
    return require(
        "Node with @grafana/lezer-logql", logql_grammar(), "make node (npm ci)"
    )


def test_grammar_rejects_a_broken_expression(grammar: Path) -> None:
    """The check can fail: an unclosed expression has error nodes."""
    (result,) = parse_logql(['sum(count_over_time({a="b"} |= [5m]'], grammar)
    assert result["errors"]


def test_every_rule_expression_parses(grammar: Path) -> None:
    """Every rule for the sample roster is valid LogQL, with a logfmt stage."""
    rules = rule_group(load_roster(REPO / "roster.yaml"), AlertSettings())
    expressions = [rule["expr"] for rule in rules["groups"][0]["rules"]]
    assert expressions
    for expr, result in zip(
        expressions, parse_logql(expressions, grammar), strict=True
    ):
        assert result["errors"] == [], expr
        assert "LogfmtParser" in result["nodes"], expr
