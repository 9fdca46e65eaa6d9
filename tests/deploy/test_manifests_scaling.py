"""Rollout, scaling and disruption: what keeps a GPU fleet at its size through applies, rollouts and drains.

Each test pins one finding of the SRE review (k8s/README.md "Lifecycle", "What scales on what"), so that it
cannot come back: replicas owned by the HPA, progress deadlines longer than a model start, surge-free
GPU rollouts, drain-safe PDBs, DiT drain budget, priority, spread, memory QoS, the GPU model as an overlay
choice, and HPAs on rates instead of instantaneous gauges.
"""

from __future__ import annotations

import re

import pytest

from .conftest import (
    BACKENDS,
    COMPONENTS,
    GPU_OVERLAYS,
    K8S,
    KUBECTL,
    OVERLAYS,
    component_of,
    deployment,
    docs_of,
    env_of,
    main_container,
    metric_names_in_code,
    pod_labels,
    pod_spec,
    pools,
    render,
    render_composed,
    selects,
    startup_budget,
)

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH: cannot run `kubectl kustomize`")

GPU_PRODUCTS = {  # components/gpu-product/<name> -> the GPU Feature Discovery label values it must admit
    "h100": {"NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-NVL", "NVIDIA-H100-PCIe"},
    "h200": {"NVIDIA-H200", "NVIDIA-H200-NVL"},
    "a100": {"NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe", "NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"},
    "l4": {"NVIDIA-L4"},
}
OVERLAY_PRODUCT = {"gpu-h100": "h100", "gpu-h100-mtls": "h100", "gpu-h100-shared-checkpoints": "h100",
                   "gpu-h100-two-dit-pools": "h100", "gpu-h200": "h200"}
ADAPTER_VALUES = K8S / "monitoring" / "prometheus-adapter-values.yaml"


def hpa_of(overlay: str, component: str) -> dict:
    return docs_of(overlay, "HorizontalPodAutoscaler")[f"acestep-{component}"]


def gpu_products(docs: tuple[dict, ...], component: str) -> set[str]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"acestep-{component}"]
    affinity = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    expressions = [e for t in terms for e in t["matchExpressions"] if e["key"] == "nvidia.com/gpu.product"]
    assert len(expressions) == 1 and len(terms) == 1, "one product term: two gpu-product components were merged"
    assert expressions[0]["operator"] == "In"
    return set(expressions[0]["values"])


# --- 1. the HPA owns the replica count -------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_no_replicas_on_deployments_an_hpa_scales(target):
    """`kubectl apply -k` would reset a DiT the HPA scaled to 8 back to the manifest's count."""
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in docs_of(target, "HorizontalPodAutoscaler").values()}
    deployments = docs_of(target, "Deployment")
    assert {f"acestep-{c}" for c in COMPONENTS} <= set(deployments) <= hpas  # every pool has its HPA
    assert {component_of(d) for d in deployments.values()} == set(COMPONENTS)
    for name in deployments:
        assert "replicas" not in deployments[name]["spec"], f"{target}: {name} sets replicas; its HPA owns them"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers(overlay):
    for pool in pools(overlay):
        component = component_of(deployment(overlay, pool))
        hpa = hpa_of(overlay, pool)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": f"acestep-{pool}"}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        if component == "orchestrator":
            metrics = hpa["spec"]["metrics"]
            assert [m["resource"]["name"] for m in metrics if m["type"] == "Resource"] == ["cpu"]
            assert "cpu" in main_container(overlay, component)["resources"]["requests"], "utilisation needs a request"


# --- 2. progress deadlines ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_progress_deadline_outlasts_a_pod_start(overlay):
    """A rollout is marked failed after progressDeadlineSeconds without progress: it must exceed the startup
    probe's budget plus image pull and weight download (the 600 s default is less than the 900 s probe)."""
    for component in pools(overlay):
        spec = deployment(overlay, component)["spec"]
        assert "progressDeadlineSeconds" in spec, f"{component}: explicit, not the default"
        budget = startup_budget(main_container(overlay, component))
        margin = 600 if component != "orchestrator" else 300  # pull + download + compile; pull only
        assert spec["progressDeadlineSeconds"] >= budget + margin, (component, spec["progressDeadlineSeconds"])


# --- 3. GPU rollouts, drains, priority, spread, memory, GPU model --------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_pools_roll_without_surge(overlay):
    """maxSurge 1 needs a spare GPU: on a full pool the surge pod stays Pending and the rollout stalls."""
    for component in pools(overlay):
        rolling = deployment(overlay, component)["spec"]["strategy"]["rollingUpdate"]
        if overlay in GPU_OVERLAYS and component != "orchestrator":
            assert rolling == {"maxSurge": 0, "maxUnavailable": 1}, (overlay, component)
        else:  # CPU pods: surge, never below the current count
            assert rolling == {"maxSurge": 1, "maxUnavailable": 0}, (overlay, component)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_drain_never_takes_the_last_pod_and_never_blocks_forever(overlay):
    budgets = docs_of(overlay, "PodDisruptionBudget").values()
    for component in pools(overlay):  # each pool its own budget, selecting none of another pool's pods
        (pdb,) = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], pod_labels(overlay, component))]
        spec = pdb["spec"]
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow", "pods still loading may always go"
        floor = hpa_of(overlay, component)["spec"]["minReplicas"]
        if overlay in GPU_OVERLAYS:
            assert spec.get("minAvailable") == 1 and "maxUnavailable" not in spec, (component, spec)
            assert floor >= 2, f"{component}: minAvailable 1 at {floor} replica(s) blocks every drain"
        else:  # cpu-demo runs one replica: minAvailable 1 would block drains, so one may go
            assert spec == {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                            "selector": spec["selector"]}, (component, spec)
        assert spec.get("minAvailable", 0) < floor


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dit_drains_as_long_as_the_orchestrator_waits(overlay):
    """The orchestrator drains for a long song's synthesis; a DiT pod cut off sooner breaks that stream."""
    grace = {c: float(env_of(main_container(overlay, c))["ACESTEP_GRACE_SECONDS"]) for c in pools(overlay)}
    for dit in pools(overlay, ("dit",)):
        assert grace[dit] >= grace["orchestrator"], grace
        if overlay in GPU_OVERLAYS:
            assert grace[dit] >= 300
            assert pod_spec(overlay, dit)["terminationGracePeriodSeconds"] >= 300 + 10 + 10  # + preStop + margin


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_pods_share_one_cluster_scoped_priority_class(overlay):
    (priority,) = docs_of(overlay, "PriorityClass").values()
    assert priority["metadata"]["name"] == "acestep-serving" and "namespace" not in priority["metadata"]
    assert 0 < priority["value"] < 1_000_000_000, "below the system-* classes"
    assert priority["globalDefault"] is False
    for component in pools(overlay):
        assert pod_spec(overlay, component)["priorityClassName"] == "acestep-serving", component


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_pods_spread_over_nodes_and_zones(overlay):
    for component in pools(overlay, BACKENDS):
        constraints = pod_spec(overlay, component)["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for c in constraints:
            assert c["whenUnsatisfiable"] == "ScheduleAnyway", "a spread rule must never leave a GPU pod Pending"
            assert c["maxSkew"] == 1
            assert selects(c["labelSelector"]["matchLabels"], pod_labels(overlay, component))


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_gpu_pods_request_the_memory_they_may_use(overlay):
    """request = limit: under node memory pressure the kubelet evicts pods above their request first."""
    for component in pools(overlay, BACKENDS):
        resources = main_container(overlay, component)["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"], component


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_gpu_pools_are_separate_and_pinned_to_the_overlays_gpu_model(overlay):
    node_pools = {c: pod_spec(overlay, c)["nodeSelector"]["acestep.io/pool"] for c in pools(overlay, BACKENDS)}
    assert node_pools["lm"] != node_pools["dit"]
    assert {node_pools[c] for c in pools(overlay, ("dit",))} == {node_pools["dit"]}, "every DiT pool on DiT nodes"
    for component in pools(overlay, BACKENDS):
        assert gpu_products(render(overlay), component) == GPU_PRODUCTS[OVERLAY_PRODUCT[overlay]]
    orchestrator = pod_spec(overlay, "orchestrator")
    assert "nodeSelector" not in orchestrator and "nodeAffinity" not in orchestrator.get("affinity", {})


@pytest.mark.parametrize("product", GPU_PRODUCTS)
def test_each_gpu_product_component_replaces_the_choice(product):
    """Every components/gpu-product/<name> composed onto the production overlay admits exactly its GPUs."""
    assert {p.name for p in (K8S / "components" / "gpu-product").iterdir()} == set(GPU_PRODUCTS)
    docs = render_composed("overlays/gpu-h100", [f"components/gpu-product/{product}"])
    for component in BACKENDS:
        assert gpu_products(docs, component) == GPU_PRODUCTS[product]


def test_cpu_demo_has_no_gpu_affinity():
    for component in COMPONENTS:
        assert "affinity" not in pod_spec("cpu-demo", component) or \
            "nodeAffinity" not in pod_spec("cpu-demo", component)["affinity"]


# --- 8. HPAs on rates -------------------------------------------------------------------------------------------


def adapter_rules() -> dict[str, dict]:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    assert values["rules"]["default"] is False
    return {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}


def exported_names(promql: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"acestep_[a-z0-9_]+", promql)}


def series_of(rule: dict) -> set[str]:
    """The exported metric names a rule reads (histogram series folded onto the histogram's name)."""
    return exported_names(rule["seriesQuery"] + " " + rule["metricsQuery"]) - {rule["name"]["as"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_hpas_scale_on_windowed_rates_the_adapter_serves(overlay):
    rules = adapter_rules()
    for component in pools(overlay, BACKENDS):
        metrics = hpa_of(overlay, component)["spec"]["metrics"]
        assert {m["type"] for m in metrics} == {"Pods"}
        names = {m["pods"]["metric"]["name"] for m in metrics}
        assert names <= set(rules), f"{component}: no adapter rule serves {names - set(rules)}"
        assert "acestep_queue_wait_seconds_2m" in names, "the queue-time rate must drive scale-up"
        for m in metrics:
            assert m["pods"]["target"]["type"] == "AverageValue"


def test_adapter_rules_are_windowed_and_read_exported_metrics():
    rules = adapter_rules()
    for name, rule in rules.items():
        query = rule["metricsQuery"]
        assert re.search(r"\b(rate|avg_over_time)\(", query), f"{name}: an instantaneous gauge, not a rate/average"
        assert re.findall(r"\[(\w+)\]", query) and set(re.findall(r"\[(\w+)\]", query)) == {"2m"}, name
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query, f"{name}: not per pod"
        exported = series_of(rule)
        assert exported and exported <= metric_names_in_code(), f"{name} reads {exported - metric_names_in_code()}"
    wait = rules["acestep_queue_wait_seconds_2m"]["metricsQuery"]
    # mean wait = rate(_sum) / rate(_count), never NaN for an idle pod
    assert "rate(acestep_queue_time_seconds_sum" in wait and "rate(acestep_queue_time_seconds_count" in wait
    assert "clamp_min(" in wait


def test_readme_keeps_the_keda_scale_to_zero_example_valid():
    """The commented ScaledObject in k8s/README.md parses and points at real objects and metrics."""
    readme = (K8S / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    (keda,) = [b for b in blocks if "kind: ScaledObject" in b]
    scaled = yaml.safe_load(keda)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] in {f"acestep-{c}" for c in BACKENDS}
    assert scaled["spec"]["minReplicaCount"] == 0
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    used = exported_names(trigger["metadata"]["query"])
    assert used and used <= metric_names_in_code(), used

