"""Network policy and authentication: a default-deny namespace with allow lists in and out, and API keys that
the production overlays cannot run without.

Egress is computed per pod template (Deployments and the shared-checkpoints Job) as the union of the rules of
every policy that selects it, the way a CNI enforces them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from .conftest import (
    BACKENDS,
    COMPONENTS,
    GPU_OVERLAYS,
    HEADLESS,
    KUBECTL,
    OVERLAYS,
    all_containers,
    docs_of,
    env_of,
    main_container,
    pod_labels,
    policy_selects,
    pools,
    render,
    selects,
)

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH: cannot run `kubectl kustomize`")

DNS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
DNS_PORTS = {(53, "UDP"), (53, "TCP")}
# Cloud metadata (IPv4 and AWS's IPv6), the RFC 1918 ranges, CGNAT, IPv6 unique-local: never reachable.
FORBIDDEN = ("169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "fd00:ec2::254",
             "fe80::1")


def pod_templates(overlay: str) -> dict[str, dict[str, Any]]:
    """Every pod template of the overlay (Deployments and Jobs) by object name."""
    return {d["metadata"]["name"]: d["spec"]["template"] for d in render(overlay)
            if d["kind"] in ("Deployment", "Job")}


def downloads(template: dict[str, Any]) -> bool:
    return any(c.get("command", [])[:2] == ["acestep", "fetch-checkpoints"] for c in all_containers(template["spec"]))


def selecting(overlay: str, labels: dict[str, str], policy_type: str) -> list[dict[str, Any]]:
    return [p for p in docs_of(overlay, "NetworkPolicy").values()
            if policy_selects(p, labels) and policy_type in p["spec"]["policyTypes"]]


def ports_of(rule: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}


def admits(block: dict[str, Any], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    cidr = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
    return ip.version == cidr.version and ip in cidr and not any(e.version == ip.version and ip in e for e in excepted)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_denies_ingress_and_egress_by_default(overlay):
    denies = [p for p in docs_of(overlay, "NetworkPolicy").values()
              if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}]
    assert len(denies) == 1, "one default-deny policy selecting every pod"
    assert "ingress" not in denies[0]["spec"] and "egress" not in denies[0]["spec"], "a deny policy has no rules"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_may_resolve_names_and_only_that_from_the_dns_policy(overlay):
    everyone = [p for p in docs_of(overlay, "NetworkPolicy").values() if p["spec"]["podSelector"] == {}
                and p["spec"].get("egress")]
    (dns,) = everyone
    assert dns["spec"]["policyTypes"] == ["Egress"]
    (rule,) = dns["spec"]["egress"]
    assert rule["to"] == [DNS_PEER] and ports_of(rule) == DNS_PORTS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_is_an_allow_list_per_pod(overlay):
    """Orchestrator: DNS + LM/DiT gRPC. LM/DiT: DNS, + HTTPS only while they download weights. Job: DNS + HTTPS."""
    templates = pod_templates(overlay)
    assert {f"acestep-{c}" for c in COMPONENTS} <= set(templates)
    backend_labels = {c: pod_labels(overlay, c) for c in pools(overlay, BACKENDS)}
    for name, template in templates.items():
        labels = template["metadata"]["labels"]
        internet, pods = False, set()
        for policy in selecting(overlay, labels, "Egress"):
            for rule in policy["spec"].get("egress", []):
                peers = rule.get("to", [])
                assert peers and rule.get("ports"), f"{name}: a rule without peers or ports opens everything"
                if peers == [DNS_PEER]:
                    assert ports_of(rule) == DNS_PORTS
                elif all(set(peer) == {"ipBlock"} for peer in peers):
                    assert ports_of(rule) == {(443, "TCP")}, f"{name}: internet egress beyond HTTPS"
                    internet = True
                else:
                    assert all(set(peer) == {"podSelector"} for peer in peers), f"{name}: {peers}"
                    (port,) = ports_of(rule)
                    pods |= {(c, port) for peer in peers for c in backend_labels
                             if selects(peer["podSelector"]["matchLabels"], backend_labels[c])}
        assert internet == downloads(template), f"{name}: HTTPS egress must go with (and only with) a download"
        expected = {(c, (HEADLESS[c.split("-")[0]][1], "TCP")) for c in backend_labels}  # every LM and DiT pool
        assert pods == (expected if name == "acestep-orchestrator" else set()), f"{name} reaches {pods}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_egress_reaches_the_metadata_endpoint_or_private_ranges(overlay):
    blocks = [peer["ipBlock"] for p in docs_of(overlay, "NetworkPolicy").values()
              for rule in p["spec"].get("egress", []) for peer in rule.get("to", []) if "ipBlock" in peer]
    assert blocks, "the weights-download policy ships in every overlay (it selects no pod in cpu-demo)"
    for block in blocks:
        for address in FORBIDDEN:
            assert not admits(block, address), f"{block} admits {address}"
        assert admits(block, "8.8.8.8") or admits(block, "2606:4700::1111"), "the download must reach the internet"


def test_downloading_pods_are_the_ones_the_https_policy_selects():
    """gpu-h100: every LM/DiT pod downloads; with shared-checkpoints only the Job does; cpu-demo nobody."""
    expected = {"gpu-h100": {"acestep-lm", "acestep-dit"},
                "gpu-h100-two-dit-pools": {"acestep-lm", "acestep-dit", "acestep-dit-xl-sft"},
                "gpu-h100-shared-checkpoints": {"acestep-fetch-checkpoints"},
                "cpu-demo": set()}
    for overlay, names in expected.items():
        assert {n for n, t in pod_templates(overlay).items() if downloads(t)} == names, overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_orchestrator_reaches_lm_and_dit(overlay):
    orchestrator_labels = pod_labels(overlay, "orchestrator")
    for component in pools(overlay, BACKENDS):
        grpc_port = HEADLESS[component.split("-")[0]][1]
        policies = selecting(overlay, pod_labels(overlay, component), "Ingress")
        assert any(p["spec"].get("ingress") for p in policies), f"no ingress allow list for {component}"
        for policy in policies:
            for rule in policy["spec"].get("ingress", []):
                ports = {p["port"] for p in rule.get("ports", [])}
                assert ports, "a rule without ports opens every port"
                peers = rule.get("from", [])
                assert peers, "a rule without peers admits everyone"
                if grpc_port in ports:
                    assert ports == {grpc_port}
                    for peer in peers:
                        assert set(peer) == {"podSelector"}, f"{component} gRPC open to {peer}"
                        assert selects(peer["podSelector"]["matchLabels"], orchestrator_labels)
                else:
                    assert ports == {9090}, f"{component}: unexpected ports {ports}"
                    assert all("namespaceSelector" in peer for peer in peers)  # Prometheus' namespace


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_api_keys_are_required_except_in_the_demo(target):
    """optional: true would start the services open when the Secret is missing or misnamed."""
    refs = {}
    for component in pools(target):
        env = env_of(main_container(target, component))
        for name, value in env.items():
            if isinstance(value, dict) and value.get("secretKeyRef", {}).get("name") == "acestep-api-keys":
                refs[(component, name)] = value["secretKeyRef"]
    assert set(refs) == {*((pool, "ACESTEP_API_KEYS") for pool in pools(target, BACKENDS)),
                         ("orchestrator", "ACESTEP_API_KEYS"), ("orchestrator", "ACESTEP_BACKEND_API_KEY")}
    demo = target == "cpu-demo"
    for where, ref in refs.items():
        assert ref["optional"] is demo, f"{target} {where}: optional {ref['optional']}"  # explicit, never the default
    if target in GPU_OVERLAYS:
        assert all(r["optional"] is False for r in refs.values())
