"""Where LM and DiT pods get their weights, per overlay: a per-pod volume filled by `acestep fetch-checkpoints`
(default), one ReadWriteMany claim filled by a Job (components/shared-checkpoints), or tiny random checkpoints
(cpu-demo). Nothing may wait on a volume that nobody fills.
"""

from __future__ import annotations

from typing import Any

import pytest

from acestep_serving.fetch import plan

from .conftest import (
    BACKENDS,
    KUBECTL,
    ROOT,
    all_containers,
    dit_support_folders,
    docs_of,
    env_of,
    fetched_models,
    main_container,
    pod_labels,
    pod_spec,
    pools,
)

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH: cannot run `kubectl kustomize`")

PER_POD = ("gpu-h100", "gpu-h100-mtls", "gpu-h200", "gpu-h100-two-dit-pools")
SHARED = "gpu-h100-shared-checkpoints"


def needed_folders(overlay: str, component: str) -> set[str]:
    """What the server loads: its ACESTEP_MODEL folder, plus the VAE and text encoder for a DiT."""
    model = env_of(main_container(overlay, component))["ACESTEP_MODEL"]
    return {model} | (set(dit_support_folders()) if component.startswith("dit") else set())


def checkpoint_mount(container: dict[str, Any]) -> dict[str, Any]:
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/checkpoints"]
    return mount


def assert_restricted(spec: dict[str, Any]) -> None:
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in all_containers(spec):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("overlay", PER_POD)
def test_each_model_pod_fetches_what_it_serves_into_its_own_volume(overlay):
    # No checkpoint claim that something else must fill (the adapters claim is the operator's: its README).
    assert set(docs_of(overlay, "PersistentVolumeClaim")) <= {"acestep-adapters"}
    for component in pools(overlay, BACKENDS):
        spec = pod_spec(overlay, component)
        volumes = {v["name"]: v for v in spec["volumes"]}
        (init,) = spec["initContainers"]
        assert init["name"] == "fetch-checkpoints"
        assert init["image"] == main_container(overlay, component)["image"], "the fetcher ships in the serve image"
        models = fetched_models(init)
        assert set(models) == needed_folders(overlay, component), (component, models)
        assert plan(models), "the names are ones `acestep fetch-checkpoints` knows"
        init_env = env_of(init)
        assert init_env["HF_HUB_OFFLINE"] == "0", "the image sets 1 for the servers; the fetcher must go online"
        assert init_env["HF_HOME"].startswith("/tmp/")
        mount = checkpoint_mount(init)
        assert not mount.get("readOnly", False)
        server_mount = checkpoint_mount(main_container(overlay, component))
        assert server_mount["readOnly"] is True and server_mount["name"] == mount["name"]
        assert env_of(main_container(overlay, component))["ACESTEP_CHECKPOINTS"] == "/checkpoints"
        claim = volumes[mount["name"]]["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert claim["accessModes"] == ["ReadWriteOnce"]
        assert "storageClassName" not in claim, "the cluster's default StorageClass: binds on any cloud"
        assert claim["resources"]["requests"]["storage"].endswith("Gi")
        assert pod_labels(overlay, component)["acestep.io/fetches-weights"] == "true"
    assert not any(m["mountPath"] == "/checkpoints" for m in main_container(overlay, "orchestrator")["volumeMounts"])


def test_shared_checkpoints_fill_one_read_write_many_claim_with_a_job():
    claims = docs_of(SHARED, "PersistentVolumeClaim")
    claim = claims["acestep-checkpoints"]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in claim, "left to the overlay: an RWX class (k8s/README.md)"
    (job,) = docs_of(SHARED, "Job").values()
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "OnFailure"
    assert_restricted(spec)
    (container,) = spec["containers"]
    assert container["image"] == main_container(SHARED, "lm")["image"]
    assert env_of(container)["HF_HUB_OFFLINE"] == "0"
    assert set(fetched_models(container)) == needed_folders(SHARED, "lm") | needed_folders(SHARED, "dit")
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = checkpoint_mount(container)
    assert not mount.get("readOnly", False)
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "acestep-checkpoints"
    assert job["spec"]["template"]["metadata"]["labels"]["acestep.io/fetches-weights"] == "true"
    for component in BACKENDS:
        pod = pod_spec(SHARED, component)
        assert not pod.get("initContainers"), "no download in the serving pods"
        assert "acestep.io/fetches-weights" not in pod_labels(SHARED, component), "so no internet egress"
        volumes = {v["name"]: v for v in pod["volumes"]}
        mount = checkpoint_mount(main_container(SHARED, component))
        assert mount["readOnly"] is True
        assert volumes[mount["name"]] == {"name": mount["name"], "persistentVolumeClaim": {
            "claimName": "acestep-checkpoints", "readOnly": True}}


def test_cpu_demo_writes_tiny_checkpoints_instead_of_downloading():
    assert not docs_of("cpu-demo", "PersistentVolumeClaim") and not docs_of("cpu-demo", "Job")
    for component, module in (("lm", "lm_service"), ("dit", "dit_service")):
        spec = pod_spec("cpu-demo", component)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert set(volumes["checkpoints"]) == {"name", "emptyDir"}
        (init,) = spec["initContainers"]
        assert init["command"] == ["python", "-m", f"{module}.tiny_checkpoint", "/checkpoints"]
        assert (ROOT / module / "tiny_checkpoint.py").is_file()
        assert init["image"] == main_container("cpu-demo", component)["image"]
        assert "acestep.io/fetches-weights" not in pod_labels("cpu-demo", component)
