"""Parse LogQL with Grafana's own grammar, run under the machine's Node.

No Loki server can run here, so the alert rules are checked against the
grammar that Grafana's query editor uses (``@grafana/lezer-logql``). A parse
with no error node means Loki's ruler will accept the expression's syntax.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

# Reads a JSON list of expressions on stdin and prints, for each, the offsets
# of error nodes in the parse tree and the names of the nodes it built.
_SCRIPT = r"""
const { parser } = require('@grafana/lezer-logql');
let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const out = JSON.parse(input).map((expr) => {
    const errors = [];
    const nodes = new Set();
    parser.parse(expr).iterate({
      enter: (node) => {
        nodes.add(node.type.name);
        if (node.type.isError) errors.push(node.from);
      },
    });
    return { errors, nodes: [...nodes] };
  });
  process.stdout.write(JSON.stringify(out));
});
"""


def parse_logql(expressions: list[str], grammar: Path) -> list[dict[str, list]]:
    """Parse each expression; return its error offsets and node type names."""
    done = subprocess.run(
        ["node", "-e", _SCRIPT],
        input=json.dumps(expressions),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"NODE_PATH": str(grammar.parent.parent), "PATH": "/usr/bin:/bin"},
    )
    result: list[dict[str, list]] = json.loads(done.stdout)
    return result
