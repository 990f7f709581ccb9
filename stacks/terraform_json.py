"""Read the synthesized Terraform JSON the way Terraform would, instance by instance.

The Vault stack declares each kind of per-user resource once, with
``for_each`` over a local map keyed by user name. Whoever reviews, checks or
applies the JSON without Terraform (the roster review, the tests' translation
into Vault API calls) needs the instances Terraform would make of it:
``vault_policy.user["alice"]`` with its arguments filled in.

Only the expressions the stack writes are understood (``${local.NAME}`` as
the ``for_each`` source, ``${each.key}`` and ``${each.value.NAME}`` in
arguments); anything else raises ``UnsupportedExpression``, so that a change
to the stack cannot be misread silently. Imports neither cdktf nor jsii.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_EACH = re.compile(r"^\$\{each\.(?:key|value\.([A-Za-z_][A-Za-z0-9_]*))\}$")
_LOCAL = re.compile(r"^\$\{local\.([A-Za-z_][A-Za-z0-9_]*)\}$")


class UnsupportedExpression(ValueError):
    """The JSON holds a Terraform expression that this reader does not evaluate."""


def _substitute(value: Any, key: str | None, entry: Mapping[str, Any]) -> Any:
    """Fill in ``each`` references; ``key`` is None outside a ``for_each``."""
    if isinstance(value, list):
        return [_substitute(v, key, entry) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, key, entry) for k, v in value.items()}
    if not isinstance(value, str) or ("${" not in value and "%{" not in value):
        return value
    match = _EACH.match(value)
    if match is None or key is None:
        raise UnsupportedExpression(f"the expression {value!r} is not understood")
    return key if match.group(1) is None else entry[match.group(1)]


def _expand(
    name: str, body: Mapping[str, Any], locals_: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    arguments = {k: v for k, v in body.items() if k not in ("//", "for_each")}
    if "for_each" not in body:
        return {name: _substitute(arguments, None, {})}

    source = _LOCAL.match(str(body["for_each"]))
    if source is None or source.group(1) not in locals_:
        raise UnsupportedExpression(
            f"the for_each {body['for_each']!r} of {name!r} is not a local map"
        )
    return {
        f'{name}["{key}"]': _substitute(arguments, key, entry)
        for key, entry in locals_[source.group(1)].items()
    }


def instances(document: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every resource instance: type -> address -> arguments (without ``//``).

    The address is the resource's name, followed by ``["key"]`` for each
    ``for_each`` instance, as ``terraform plan`` shows it.
    """
    locals_ = document.get("locals", {})
    return {
        kind: {
            address: arguments
            for name, body in named.items()
            for address, arguments in _expand(name, body, locals_).items()
        }
        for kind, named in document.get("resource", {}).items()
    }


def instances_by_address(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every resource instance by its full address, ``vault_policy.user["alice"]``."""
    return {
        f"{kind}.{address}": arguments
        for kind, named in instances(document).items()
        for address, arguments in named.items()
    }
