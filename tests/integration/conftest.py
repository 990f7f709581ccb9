"""Fixtures of the integration tests that only some modules use."""

from tests.support.agent_host import (  # noqa: F401  # fixtures, found by name
    agent_users,
    homes,
    workstation_for,
)
