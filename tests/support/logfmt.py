"""Reading the agent's log lines as Loki reads them, for the contract tests.

The alert rules (``stacks/alerts.py``) parse each journal line with LogQL's
``| logfmt`` and then keep lines by label filters such as ``| user="alice"``
and ``| status=~"OK|RECOVERED|FAIL"``. These helpers apply the same two steps
in Python, so a test can say which rule selects which line the agent wrote.
"""

from __future__ import annotations

import re

_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')
_FILTER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


class LogfmtError(ValueError):
    """The line is not well-formed logfmt; Loki would mangle its fields."""


def parse_logfmt(line: str) -> dict[str, str]:
    """The line's pairs, strictly: all of it must be ``key=value`` pairs."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        if match is None:
            raise LogfmtError(f"not logfmt at column {position}: {line[position:]!r}")
        key, value = match.groups()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[key] = value
        position = match.end()
    return fields


def label_filters(expr: str) -> list[list[tuple[str, str, str]]]:
    """The label-filter stages after ``| logfmt``: each a list of ``or`` terms.

    Only what the rules use is read: ``name="v"``, ``name=~"re"`` and
    ``name!="v"`` terms joined by ``or``; other stages are skipped.
    """
    pipeline = expr.split("| logfmt", 1)[1].rsplit("[", 1)[0]
    stages = []
    for stage in _stages(pipeline):
        if stage.strip().startswith(("label_format", "unwrap")):
            continue
        terms = [_FILTER.match(term.strip()) for term in stage.split(" or ")]
        if terms and all(terms):
            stages.append([m.groups() for m in terms if m])
    return stages


def _stages(pipeline: str) -> list[str]:
    """Split a pipeline at the pipes that are not inside a string."""
    stages, current, quote = [], "", ""
    for char in pipeline:
        if quote:
            quote = "" if char == quote and not current.endswith("\\") else quote
        elif char in '"`':
            quote = char
        elif char == "|":
            stages.append(current)
            current = ""
            continue
        current += char
    return [*stages, current]


def selects(expr: str, fields: dict[str, str]) -> bool:
    """Whether the rule's label filters keep a line with these fields."""
    for stage in label_filters(expr):
        if not any(_term(fields.get(name, ""), op, value) for name, op, value in stage):
            return False
    return True


def _term(actual: str, op: str, value: str) -> bool:
    if op == "=~":  # LogQL regex matchers are anchored at both ends
        return re.fullmatch(value, actual) is not None
    return (actual == value) == (op == "=")
