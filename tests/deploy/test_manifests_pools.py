"""overlays/gpu-h100-two-dit-pools: two DiT pools (turbo and XL SFT) behind one orchestrator, each a Deployment
with its own headless Service, HPA and PDB, the orchestrator dialling both with each pinned to its model, and an
adapters claim every DiT pod reads its own model's folder from. The general checks (every overlay, every pool)
are in test_manifests*.py.
"""

from __future__ import annotations

import pytest

from orchestrator.replicas import parse_pools

from .conftest import (
    KUBECTL,
    OVERLAYS,
    all_containers,
    docs_of,
    env_of,
    main_container,
    pod_labels,
    pod_spec,
    pools,
    selects,
)

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH: cannot run `kubectl kustomize`")

OVERLAY = "gpu-h100-two-dit-pools"
MODELS = {"dit": "acestep-v15-turbo", "dit-xl-sft": "acestep-v15-xl-sft"}


def _only(objects: dict, pool: str, selector_of) -> list[str]:
    """The objects whose selector picks ``pool``'s pods, failing if one also picks another pool's."""
    chosen = []
    for name, doc in objects.items():
        picked = [p for p in MODELS if selects(selector_of(doc), pod_labels(OVERLAY, p))]
        if pool in picked:
            assert picked == [pool], f"{name} selects the pods of {picked}"
            chosen.append(name)
    return chosen


def test_each_dit_pool_serves_its_model_with_its_own_service_autoscaler_and_budget():
    assert pools(OVERLAY, ("dit",)) == list(MODELS)
    services = {n: s for n, s in docs_of(OVERLAY, "Service").items() if s["spec"].get("clusterIP") == "None"}
    for pool, model in MODELS.items():
        env = env_of(main_container(OVERLAY, pool))
        assert env["ACESTEP_MODEL"] == model
        (init,) = pod_spec(OVERLAY, pool)["initContainers"]
        assert model in init["command"], "the pod downloads the model it serves"
        deployment = docs_of(OVERLAY, "Deployment")[f"acestep-{pool}"]
        assert _only({pool: deployment}, pool, lambda d: d["spec"]["selector"]["matchLabels"]) == [pool]
        assert len(_only(services, pool, lambda s: s["spec"]["selector"])) == 1
        budgets = _only(docs_of(OVERLAY, "PodDisruptionBudget"), pool, lambda b: b["spec"]["selector"]["matchLabels"])
        assert budgets == [f"acestep-{pool}"]
        (hpa,) = [h for h in docs_of(OVERLAY, "HorizontalPodAutoscaler").values()
                  if h["spec"]["scaleTargetRef"]["name"] == f"acestep-{pool}"]
        assert hpa["spec"]["minReplicas"] >= 2
    monitor = docs_of(OVERLAY, "ServiceMonitor")["acestep-dit"]
    scraped = {n for n, s in services.items() if selects(monitor["spec"]["selector"]["matchLabels"],
                                                          s["metadata"]["labels"])}
    assert scraped == {"acestep-dit-headless", "acestep-dit-headless-xl-sft"}, "both pools feed their HPAs"


def test_the_orchestrator_dials_both_pools_pinned_to_their_models_turbo_first():
    namespace = OVERLAYS[OVERLAY]
    value = env_of(main_container(OVERLAY, "orchestrator"))["ACESTEP_DIT"].replace("$(POD_NAMESPACE)", namespace)
    assert parse_pools(value) == [
        ("acestep-v15-turbo", f"dns:///acestep-dit-headless.{namespace}.svc.cluster.local:50052"),
        ("acestep-v15-xl-sft", f"dns:///acestep-dit-headless-xl-sft.{namespace}.svc.cluster.local:50052"),
    ]


def test_every_dit_pod_reads_its_models_adapters_from_one_read_only_claim():
    claim = docs_of(OVERLAY, "PersistentVolumeClaim")["acestep-adapters"]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"], "pods of both pools, on any node"
    for pool, model in MODELS.items():
        spec = pod_spec(OVERLAY, pool)
        (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v
                     and v["persistentVolumeClaim"]["claimName"] == "acestep-adapters"]
        assert volume["persistentVolumeClaim"]["readOnly"] is True
        container = main_container(OVERLAY, pool)
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount == {"name": volume["name"], "mountPath": "/adapters", "readOnly": True}
        assert env_of(container)["ACESTEP_ADAPTERS"] == f"/adapters/{model}"
    for component in ("lm", "orchestrator"):
        for container in all_containers(pod_spec(OVERLAY, component)):
            assert not any(m["mountPath"] == "/adapters" for m in container["volumeMounts"]), component
