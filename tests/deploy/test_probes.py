"""Probes that survive a slow start: found on the local cluster, where the dashboard was
restarted by its liveness probe while Streamlit was still importing on a busy node."""

from __future__ import annotations

from tests.support.deploy import Rendered, pod_specs


def test_every_sfmlops_server_with_a_liveness_probe_has_a_startup_probe(
    rendered: Rendered,
) -> None:
    # Python servers (API, dashboard, MLflow) import for tens of seconds before they listen:
    # liveness alone (three failures 20 s apart) restarts them before they ever answer.
    checked = []
    for item in rendered.objects:
        for label, spec in pod_specs(item):
            for container in spec["containers"]:
                if "sfmlops-" not in container["image"] or "livenessProbe" not in container:
                    continue
                checked.append(f"{label}/{container['name']}")
                startup = container.get("startupProbe")
                assert startup, f"{label}/{container['name']}: liveness probe without startup probe"
                budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
                assert budget >= 180, f"{label}/{container['name']}: {budget} s to start"
    assert any("dashboard" in name for name in checked), checked
