"""Hands the alert rule group to Loki, as a file or as a Kubernetes ConfigMap.

Which way is a setting, ``CLAUDE_AUTH_SYNC_ALERTS``:

* ``file`` (the default): a ``local_file`` resource writes the rules where a
  file-based ruler reads them (``<rules dir>/<tenant>/<name>.yaml``).
* ``configmap``: a ConfigMap carrying the label that the Loki ruler's sidecar
  watches, in the ruler's namespace.
* ``none``: the stack declares no rules (a site that manages Loki elsewhere).

The Kubernetes provider's bindings take seconds to load, so they are imported
only when the ConfigMap is asked for.
"""

from __future__ import annotations

from constructs import Construct

from agent.roster import Roster
from stacks.alerts import GROUP_NAME, AlertSettings, DeliverySettings, render_rules_yaml

#: The Terraform name of the rules file or ConfigMap.
RULES_RESOURCE = "alert_rules"


class AlertRules(Construct):
    """The Loki rule group for the roster, delivered as the settings say.

    ``rules_yaml`` is the document itself, so that tests and reviews can read
    exactly what Loki will be given.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        roster: Roster,
        alerts: AlertSettings,
        delivery: DeliverySettings,
    ) -> None:
        super().__init__(scope, id_)
        self.rules_yaml = render_rules_yaml(roster, alerts)
        self.delivery = delivery

        if delivery.mode == "file":
            self._as_file()
        elif delivery.mode == "configmap":
            self._as_configmap()

    def _as_file(self) -> None:
        from cdktf_cdktf_provider_local.file import File  # noqa: PLC0415
        from cdktf_cdktf_provider_local.provider import LocalProvider  # noqa: PLC0415

        LocalProvider(self, "local")
        rules = File(
            self,
            "rules_file",
            filename=self.delivery.rules_file,
            content=self.rules_yaml,
            file_permission="0644",
            directory_permission="0755",
        )
        rules.override_logical_id(RULES_RESOURCE)

    def _as_configmap(self) -> None:
        # Loading these bindings costs seconds; only this mode pays for it.
        from cdktf_cdktf_provider_kubernetes.config_map_v1 import (  # noqa: PLC0415
            ConfigMapV1,
            ConfigMapV1Metadata,
        )
        from cdktf_cdktf_provider_kubernetes.provider import (  # noqa: PLC0415
            KubernetesProvider,
        )

        KubernetesProvider(self, "kubernetes")
        rules = ConfigMapV1(
            self,
            "rules_configmap",
            metadata=ConfigMapV1Metadata(
                name=f"{GROUP_NAME}-rules",
                namespace=self.delivery.namespace,
                labels={self.delivery.sidecar_label: self.delivery.sidecar_label_value},
            ),
            data={f"{GROUP_NAME}.yaml": self.rules_yaml},
        )
        rules.override_logical_id(RULES_RESOURCE)
