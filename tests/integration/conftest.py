"""Fixtures of the integration tests that only some modules use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.agent_host import (  # noqa: F401  # fixtures, found by name
    Workstation,
    agent_users,
    homes,
    workstation_for,
)


@pytest.fixture
def station(
    workstation_for: Callable[..., Workstation],  # noqa: F811  # the fixture above
) -> Workstation:
    """Alice with her scoped token minted through her role.

    Modules that need more of her set up (a login, the real CLI) define their
    own ``station``, which takes precedence over this one.
    """
    alice = workstation_for("agent-alice")
    alice.mint_token()
    return alice
