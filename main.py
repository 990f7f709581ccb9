"""Synthesize the Vault stack for the roster into plain Terraform JSON.

Run by ``make synth`` or ``cdktf synth``/``cdktf deploy`` (``cdktf.json`` names
this file as the app). ``ROSTER`` picks the roster file (default
``roster.yaml``); ``CDKTF_OUTDIR`` the output directory (default
``cdktf.out``). The result is ``<outdir>/stacks/vault/cdk.tf.json``.

A bad roster or setting is reported as one message per problem and exit
status 2, with no traceback, before any of cdktf is loaded.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from agent.roster import RosterError, load_roster
from agent.settings import Settings, SettingsError
from stacks.alerts import AlertSettings, DeliveryError, DeliverySettings

log = logging.getLogger("claude-auth-sync.synth")


def main() -> int:
    """Validate the roster and settings, then write the stack's JSON."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    roster_path = Path(os.environ.get("ROSTER", "").strip() or "roster.yaml")
    outdir = os.environ.get("CDKTF_OUTDIR", "").strip() or "cdktf.out"

    try:
        roster = load_roster(roster_path)
        settings = Settings.from_env()
        alerts = AlertSettings.from_env()
        delivery = DeliverySettings.from_env()
    except (RosterError, SettingsError, DeliveryError) as err:
        log.error("%s", err)
        log.debug("Validation failed.", exc_info=True)
        return 2

    # Imported only now: loading jsii starts Node, which a bad roster never needs.
    # Node 20 works; jsii's end-of-life banner would only bury the result.
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from cdktf import App  # noqa: PLC0415

    from stacks.vault import VaultStack  # noqa: PLC0415

    app = App(outdir=outdir)
    stack = VaultStack(app, roster, settings, alerts=alerts, delivery=delivery)
    app.synth()
    log.info(
        "Wrote %s/stacks/%s/cdk.tf.json: %d users from %s.",
        outdir,
        stack.node.id,
        len(roster),
        roster_path,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
