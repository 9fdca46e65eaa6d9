"""Rendering and reading the Kubernetes manifests, shared by the tests/deploy/test_manifests*.py files.

Rendering uses ``kubectl kustomize`` (the tests skip when kubectl is absent). Service names, flags and metric
names are read from the source files with regular expressions (not imported: that would pull in torch).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # the manifest tests skip through pytest.importorskip("yaml")
    yaml = None

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBECTL = shutil.which("kubectl")

# overlay -> namespace
OVERLAYS = {"gpu-h100": "acestep", "gpu-h100-mtls": "acestep", "gpu-h200": "acestep",
            "gpu-h100-two-dit-pools": "acestep",
            "gpu-h100-shared-checkpoints": "acestep", "cpu-demo": "acestep-demo"}
GPU_OVERLAYS = tuple(o for o in OVERLAYS if o.startswith("gpu-"))
COMPONENTS = ("lm", "dit", "orchestrator")
BACKENDS = ("lm", "dit")
SERVER_SOURCES = {
    "lm": ROOT / "lm_service" / "server.py",
    "dit": ROOT / "dit_service" / "server.py",
    "orchestrator": ROOT / "orchestrator" / "server.py",
}
HEADLESS = {"lm": ("acestep-lm-headless", 50051), "dit": ("acestep-dit-headless", 50052)}
CLUSTER_SCOPED = {"Namespace", "PriorityClass"}


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """``base``, an overlay name, or a path to any kustomization directory."""
    path = K8S / "base" if target == "base" else Path(target) if os.sep in target else K8S / "overlays" / target
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render_composed(resource: str, components: list[str]) -> tuple[dict[str, Any], ...]:
    """An overlay plus components, as a user's own kustomization would compose them (kustomize wants
    relative paths, so the temporary kustomization points back into k8s/)."""
    with tempfile.TemporaryDirectory() as tmp:
        rel = os.path.relpath(K8S, tmp)
        lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization",
                 "resources:", f"  - {rel}/{resource}", "components:", *(f"  - {rel}/{c}" for c in components)]
        Path(tmp, "kustomization.yaml").write_text("\n".join(lines) + "\n")
        return render.__wrapped__(tmp)


def docs_of(target: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in render(target) if d["kind"] == kind}


def component_of(doc: dict[str, Any]) -> str:
    """lm, dit or orchestrator: a Deployment's component label."""
    return doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def pools(target: str, components: tuple[str, ...] = COMPONENTS) -> list[str]:
    """Every Deployment of ``components``, named as the helpers below take it: ``acestep-<pool>``. One per
    component ("lm", "dit", "orchestrator"), and more where an overlay runs another pool of one
    (overlays/gpu-h100-two-dit-pools: "dit-xl-sft")."""
    return [name.removeprefix("acestep-") for name, doc in docs_of(target, "Deployment").items()
            if component_of(doc) in components]


def deployment(target: str, component: str) -> dict[str, Any]:
    """``component``: a component or any pool of one (:func:`pools`)."""
    return docs_of(target, "Deployment")[f"acestep-{component}"]


def pod_spec(target: str, component: str) -> dict[str, Any]:
    return deployment(target, component)["spec"]["template"]["spec"]


def pod_labels(target: str, component: str) -> dict[str, str]:
    return deployment(target, component)["spec"]["template"]["metadata"]["labels"]


def main_container(target: str, component: str) -> dict[str, Any]:
    containers = pod_spec(target, component)["containers"]
    assert [c["name"] for c in containers] == [component_of(deployment(target, component))]
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    env = container.get("env", [])
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), f"duplicate env vars in {container['name']}: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def policy_selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    """NetworkPolicy podSelector semantics: {} selects every pod of the namespace."""
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, "these tests read matchLabels only"
    match = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in match.items())


def startup_budget(container: dict[str, Any]) -> int:
    probe = container["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


def fetched_models(container: dict[str, Any]) -> list[str]:
    """The --model values of an ``acestep fetch-checkpoints`` command."""
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["acestep", "fetch-checkpoints"], command
    assert command[command.index("--dest") + 1] == "/checkpoints"
    return [command[i + 1] for i, arg in enumerate(command) if arg == "--model"]


@functools.cache
def service_name_in_code(component: str) -> str:
    match = re.search(r'^SERVICE_NAME = "([\w.]+)"', SERVER_SOURCES[component].read_text(), re.MULTILINE)
    assert match, f"SERVICE_NAME not found in {SERVER_SOURCES[component]}"
    return match.group(1)


@functools.cache
def flag_env_vars(component: str) -> frozenset[str]:
    """ACESTEP_* variables the component reads: its add_flag calls plus the shared server/model flags."""
    names = re.findall(r'add_flag\(parser, "([\w-]+)"', (ROOT / "acestep_serving" / "flags.py").read_text())
    shared_model = {"checkpoints", "model", "device", "dtype", "max-batch"}
    source = SERVER_SOURCES[component].read_text()
    own = set(re.findall(r'add_flag\(parser, "([\w-]+)"', source))
    server_flags = set(names) - shared_model
    if "add_model_flags" in source:
        server_flags |= shared_model
    return frozenset(f"ACESTEP_{n.upper().replace('-', '_')}" for n in server_flags | own)


@functools.cache
def metric_names_in_code() -> frozenset[str]:
    text = "\n".join(p.read_text() for d in ("acestep_serving", "lm_service", "dit_service", "orchestrator")
                     for p in (ROOT / d).rglob("*.py"))
    return frozenset(re.findall(r'"(acestep_[a-z0-9_]+)"', text))


@functools.cache
def dit_support_folders() -> frozenset[str]:
    """The folders next to the DiT variant that every DiT loads (dit_service/loading.py)."""
    source = (ROOT / "dit_service" / "loading.py").read_text()
    folders = re.findall(r'^(?:VAE|TEXT_ENCODER)_FOLDER = "([\w.-]+)"', source, re.MULTILINE)
    assert len(folders) == 2, folders
    return frozenset(folders)
