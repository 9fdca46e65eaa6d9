"""The Kubernetes manifests: every overlay renders, validates against the 1.30 schemas, and wires up.

Rendering uses ``kubectl kustomize`` (skipped when kubectl is absent; helpers in conftest.py). Built-in
kinds are checked with ``kubernetes_validate`` in strict mode (unknown fields fail); it comes with the
``k8s`` extra, which CI installs, and without it only the two validator tests skip. The ServiceMonitor CRD
has no bundled schema, so a small hand-written check covers it. Rollout and scaling, network policy and
checkpoints have their own files (test_manifests_*.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .conftest import (
    CLUSTER_SCOPED,
    COMPONENTS,
    GPU_OVERLAYS,
    HEADLESS,
    KUBECTL,
    OVERLAYS,
    all_containers,
    component_of,
    deployment,
    docs_of,
    env_of,
    flag_env_vars,
    main_container,
    metric_names_in_code,
    pod_spec,
    pools,
    render,
    selects,
    service_name_in_code,
)

yaml = pytest.importorskip("yaml")
try:
    import kubernetes_validate
except ImportError:  # ~100 MB of schemas: kept out of `[dev]`, in the `k8s` extra that .ci/run installs
    kubernetes_validate = None
needs_validator = pytest.mark.skipif(
    kubernetes_validate is None,
    reason="kubernetes-validate is not installed: pip install -e '.[k8s]' (CI installs it)")

KUBE_VERSION = "1.30.0"
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH: cannot run `kubectl kustomize`")

IMAGES = {
    "cuda": {"lm": "registry.example.com/acestep/backend:0.1.0-cuda",
             "dit": "registry.example.com/acestep/backend:0.1.0-cuda",
             "orchestrator": "registry.example.com/acestep/orchestrator:0.1.0-cpu"},
    "cpu": {"lm": "registry.example.com/acestep/backend:0.1.0-cpu",
            "dit": "registry.example.com/acestep/backend:0.1.0-cpu",
            "orchestrator": "registry.example.com/acestep/orchestrator:0.1.0-cpu"},
}
EXPECTED_IMAGES = {o: IMAGES["cuda" if o in GPU_OVERLAYS else "cpu"] for o in OVERLAYS}
CRD_GROUPS = {"monitoring.coreos.com"}


# --- helpers ---------------------------------------------------------------------------------------------------


def check_service_monitor(doc: dict[str, Any]) -> None:
    """Required fields of monitoring.coreos.com/v1 ServiceMonitor (no schema is bundled for CRDs)."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "ServiceMonitor"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    spec = doc["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels",
                         "sampleLimit", "scrapeProtocols", "attachMetadata"}, sorted(spec)
    labels = spec["selector"]["matchLabels"]
    assert isinstance(labels, dict) and labels and all(isinstance(v, str) for v in labels.values())
    assert spec["endpoints"], "a ServiceMonitor needs at least one endpoint"
    for ep in spec["endpoints"]:
        assert set(ep) <= {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                           "relabelings", "metricRelabelings", "tlsConfig", "bearerTokenSecret"}, sorted(ep)
        assert isinstance(ep["port"], str) and ep["port"]
        assert ep.get("path", "/metrics").startswith("/")
        for key in ("interval", "scrapeTimeout"):
            if key in ep:
                assert re.fullmatch(r"\d+(ms|s|m|h)", ep[key]), f"{key}={ep[key]!r} is not a duration"


def check_prometheus_rule(doc: dict[str, Any]) -> None:
    """Required fields of monitoring.coreos.com/v1 PrometheusRule (tests/deploy/test_alert_rules.py checks the
    rules themselves, with promtool)."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"} and set(doc["spec"]) == {"groups"}
    for group in doc["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"], group.get("name")
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule) and isinstance(rule["expr"], str), rule
            assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations", "keep_firing_for"}


def validate(doc: dict[str, Any]) -> None:
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    if group in CRD_GROUPS:
        {"ServiceMonitor": check_service_monitor, "PrometheusRule": check_prometheus_rule}[doc["kind"]](doc)
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


# --- every document ---------------------------------------------------------------------------------------------


@needs_validator
@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_every_document_validates_strictly(target):
    docs = render(target)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "ConfigMap", "ServiceAccount", "PriorityClass"} <= kinds
    assert ("ServiceMonitor" in kinds) == (target in GPU_OVERLAYS)  # components/prometheus-operator
    assert ("PrometheusRule" in kinds) == (target in GPU_OVERLAYS)
    for doc in docs:
        try:
            validate(doc)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {doc['kind']}/{doc['metadata']['name']}: {exc}")


@needs_validator
def test_validator_rejects_unknown_fields():
    """Guard against a silently permissive validator: a typo'd field must fail in strict mode."""
    doc = json.loads(json.dumps(deployment("gpu-h100", "lm")))
    doc["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_set_on_everything(overlay):
    namespace = OVERLAYS[overlay]
    for doc in render(overlay):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == namespace
        elif doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], f"{doc['kind']} is cluster-scoped"
        else:
            assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']}/{doc['metadata']['name']}"


# --- GPUs -------------------------------------------------------------------------------------------------------


def test_gpu_limits_only_on_lm_and_dit():
    for component in COMPONENTS:
        spec = pod_spec("gpu-h100", component)
        container = main_container("gpu-h100", component)
        limits = container["resources"]["limits"]
        tolerated = {t.get("key") for t in spec.get("tolerations", [])}
        if component == "orchestrator":
            assert not any(k.startswith("nvidia.com/") for k in limits)
            assert "nvidia.com/gpu" not in tolerated
            assert "ACESTEP_DEVICE" not in env_of(container)
        else:
            assert limits["nvidia.com/gpu"] == 1
            assert "nvidia.com/gpu" not in container["resources"]["requests"] or \
                container["resources"]["requests"]["nvidia.com/gpu"] == 1
            assert "nvidia.com/gpu" in tolerated
            assert env_of(container)["ACESTEP_DEVICE"] == "cuda"
            shm = {v["name"]: v for v in spec["volumes"]}["dshm"]
            assert shm["emptyDir"]["medium"] == "Memory"
            assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        for c in spec.get("initContainers", []):
            assert not any(k.startswith("nvidia.com/") for k in c.get("resources", {}).get("limits", {}))


def test_cpu_demo_has_no_gpu_anywhere():
    text = json.dumps(render("cpu-demo"))
    assert "nvidia.com/gpu" not in text
    for component in ("lm", "dit"):
        assert env_of(main_container("cpu-demo", component))["ACESTEP_DEVICE"] == "cpu"


# --- probes, ports, services ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_are_grpc_health_checks_with_the_service_names(overlay):
    for pool in pools(overlay):
        component = component_of(deployment(overlay, pool))
        container = main_container(overlay, pool)
        env = env_of(container)
        # With TLS on, kubelet (plaintext only) probes the health-only port instead of the API port.
        port = int(env["ACESTEP_HEALTH_PORT"] if "ACESTEP_TLS_CERT" in env else env["ACESTEP_PORT"])
        ports = {p["containerPort"] for p in container["ports"]}
        name = service_name_in_code(component)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{component} {kind}"
            assert probe["grpc"]["port"] == port and port in ports, f"{component} {kind} probes a port it does not open"
            expected = {name} if kind != "livenessProbe" else {name, ""}
            assert probe["grpc"].get("service", "") in expected, f"{component} {kind}: {probe['grpc']}"
        # loading (and compiling) a model takes minutes: the startup probe must allow it on model servers
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= (600 if component != "orchestrator" else 60), f"{component} startup budget {budget}s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_ports_exist_on_the_selected_pods(overlay):
    deployments = docs_of(overlay, "Deployment")
    services = docs_of(overlay, "Service")
    for svc in services.values():
        selected = [d for d in deployments.values()
                    if selects(svc["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert len(selected) == 1, f"Service {svc['metadata']['name']} selects {len(selected)} Deployments"
        container_ports = [p for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
        by_name = {p["name"]: p["containerPort"] for p in container_ports}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            resolved = by_name.get(target) if isinstance(target, str) else target
            assert resolved in by_name.values(), f"{svc['metadata']['name']}:{port['name']} -> {target} missing"
            assert resolved == port["port"], "Service port and pod port differ: dns:/// targets dial the pod port"
    # ServiceMonitors scrape a named Service port that exists
    for monitor in docs_of(overlay, "ServiceMonitor").values():
        matched = [s for s in services.values()
                   if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        assert matched, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for svc in matched:
            names = {p["name"] for p in svc["spec"]["ports"]}
            assert all(ep["port"] in names for ep in monitor["spec"]["endpoints"])


def dialled(overlay: str, component: str) -> list[tuple[str, str]]:
    """The orchestrator's ACESTEP_LM / ACESTEP_DIT as (pinned model or "", target), as orchestrator/replicas.py
    reads the flag: comma-separated, each ``[MODEL=]ADDRESS``."""
    value = env_of(main_container(overlay, "orchestrator"))[f"ACESTEP_{component.upper()}"]
    value = value.replace("$(POD_NAMESPACE)", OVERLAYS[overlay])
    return [(name, target) if target else ("", name) for name, _, target in
            (item.strip().partition("=") for item in value.split(","))]


def headless_service_of(overlay: str, pool: str) -> dict[str, Any]:
    """The headless Service selecting a pool's pods (exactly one)."""
    labels = deployment(overlay, pool)["spec"]["template"]["metadata"]["labels"]
    (svc,) = [s for s in docs_of(overlay, "Service").values()
              if s["spec"].get("clusterIP") == "None" and selects(s["spec"]["selector"], labels)]
    return svc


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_orchestrator_dials_the_headless_services(overlay):
    """Every LM and DiT pool once, through its own headless Service (the first one is the default model's);
    with several pools of a component each target is pinned to the model its pods serve."""
    namespace = OVERLAYS[overlay]
    container = main_container(overlay, "orchestrator")
    env = env_of(container)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert not any(a.startswith(("--lm", "--dit")) for a in container.get("args", []) + container["command"])
    for component, (name, port) in HEADLESS.items():
        targets = dialled(overlay, component)
        assert targets[0][1] == f"dns:///{name}.{namespace}.svc.cluster.local:{port}", "the first pool: the default"
        expected = {}
        for pool in pools(overlay, (component,)):
            svc = headless_service_of(overlay, pool)
            assert not svc["spec"].get("publishNotReadyAddresses", False)
            assert port in {p["port"] for p in svc["spec"]["ports"]}
            expected[f"dns:///{svc['metadata']['name']}.{namespace}.svc.cluster.local:{port}"] = env_of(
                main_container(overlay, pool))["ACESTEP_MODEL"]
        assert sorted(t for _, t in targets) == sorted(expected), f"{component}: {targets}"
        if len(expected) > 1:
            assert {t: pin for pin, t in targets} == expected, "each pool pinned to the model its pods serve"
    orchestrator_svc = docs_of(overlay, "Service")["acestep-orchestrator"]
    assert orchestrator_svc["spec"].get("clusterIP") != "None"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_vars_are_flags_the_servers_read(overlay):
    for pool in pools(overlay):
        component = component_of(deployment(overlay, pool))
        for container in all_containers(pod_spec(overlay, pool)):
            unknown = {k for k in env_of(container) if k.startswith("ACESTEP_")} - flag_env_vars(component)
            assert not unknown, f"{pool}/{container['name']}: no such flag: {sorted(unknown)}"
        env = env_of(main_container(overlay, pool))
        assert env["ACESTEP_HOST"] == "0.0.0.0"
        assert env["ACESTEP_METRICS_PORT"] == "9090"


# --- lifecycle, security, resources, storage --------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_pre_stop_and_drain(overlay):
    for component in pools(overlay):
        spec = pod_spec(overlay, component)
        container = main_container(overlay, component)
        grace = float(env_of(container)["ACESTEP_GRACE_SECONDS"])
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = float(command[1])
        assert pre_stop >= 5, "endpoints need a few seconds to drop the pod before it drains"
        assert spec["terminationGracePeriodSeconds"] > grace + pre_stop, component


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_context_and_resources(overlay):
    for component in pools(overlay):
        spec = pod_spec(overlay, component)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}  # Pod Security "restricted"
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in all_containers(spec):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{container['name']} needs a writable /tmp"
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


# --- images -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_tagged_per_overlay(overlay):
    for pool in pools(overlay):
        component = component_of(deployment(overlay, pool))
        for container in all_containers(pod_spec(overlay, pool)):
            assert container["image"] == EXPECTED_IMAGES[overlay][component], (pool, container["name"])


# --- monitoring --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors_only_where_the_prometheus_operator_component_is(overlay):
    """cpu-demo must apply on a bare cluster (no ServiceMonitor CRD); the GPU overlays scrape every component."""
    monitors = docs_of(overlay, "ServiceMonitor")
    expected = {f"acestep-{c}" for c in COMPONENTS} if overlay in GPU_OVERLAYS else set()
    assert set(monitors) == expected
    assert not [d for d in render(overlay) if d["apiVersion"].startswith("monitoring.coreos.com/")
                and overlay not in GPU_OVERLAYS]
    assert "ServiceMonitor" not in {d["kind"] for d in render("base")}


def test_grafana_dashboard_plots_the_exported_metrics():
    config_map = docs_of("gpu-h100", "ConfigMap")["acestep-grafana-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (raw,) = config_map["data"].values()
    dashboard = json.loads(raw)
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"acestep_[a-z0-9_]+", e)}
    assert used <= metric_names_in_code(), f"dashboard plots metrics nothing exports: {used - metric_names_in_code()}"
    for required in ("acestep_queue_depth", "acestep_in_flight_requests", "acestep_request_duration_seconds",
                     "acestep_time_to_first_audio_seconds", "acestep_real_time_factor_ratio",
                     "acestep_queue_time_seconds",
                     "acestep_lm_generated_tokens_total", "acestep_lm_time_per_output_token_seconds",
                     "acestep_backend_request_duration_seconds", "acestep_backend_retries_total",
                     "acestep_accelerator_memory_allocated_bytes", "acestep_requests_total"):
        assert required in used, required
    joined = "\n".join(exprs)
    assert "histogram_quantile(0.5," in joined and "histogram_quantile(0.95," in joined
    assert 'code!="OK"' in joined
    # The metrics' own label is `component`: `service` is the Prometheus Operator's (the Kubernetes Service).
    legends = [t["legendFormat"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert not [e for e in exprs if re.search(r"\bservice\b", e)], "the service label is the operator's"
    assert not [legend for legend in legends if "{{service}}" in legend]


def test_mtls_overlay_encrypts_every_hop_from_mounted_secrets():
    overlay = "gpu-h100-mtls"
    for component in COMPONENTS:
        spec = pod_spec(overlay, component)
        container = main_container(overlay, component)
        env = env_of(container)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"acestep-{component}-tls"
        assert mounts["tls"]["readOnly"] and mounts["tls"]["mountPath"] == "/etc/acestep/tls"
        files = {"ACESTEP_TLS_CERT": "tls.crt", "ACESTEP_TLS_KEY": "tls.key"}
        if component == "orchestrator":  # serves clients over TLS, dials LM/DiT with its own certificate
            files |= {"ACESTEP_BACKEND_ROOT_CERT": "ca.crt", "ACESTEP_BACKEND_CLIENT_CERT": "tls.crt",
                      "ACESTEP_BACKEND_CLIENT_KEY": "tls.key"}
        else:  # only clients the CA signed (the orchestrator) get in
            files |= {"ACESTEP_TLS_CLIENT_CA": "ca.crt"}
        for name, file in files.items():
            assert env[name] == f"/etc/acestep/tls/{file}", f"{component}: {name}={env.get(name)}"
        health = int(env["ACESTEP_HEALTH_PORT"])
        assert health != int(env["ACESTEP_PORT"])
        assert {"name": "health", "containerPort": health, "protocol": "TCP"} in container["ports"]
    # the plain overlay stays plaintext
    assert "ACESTEP_TLS_CERT" not in env_of(main_container("gpu-h100", "lm"))
