"""The images: one backend image for LM and DiT, one orchestrator image, reproducible inputs.

Base images are pinned by digest (a tag moves under a rebuild) and apt packages by version; torch goes in
before the package so the chosen CUDA/CPU build is kept. Read as text: building needs Docker and a network.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
IMAGES = {"backend": ("lm_service.server", "dit_service.server"), "orchestrator": ("orchestrator.server",)}


def dockerfile(name: str) -> str:
    return (DOCKER / f"{name}.Dockerfile").read_text()


def instructions(text: str) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def from_images(text: str) -> list[str]:
    """FROM references with global ARG defaults substituted (ARGs before the first FROM)."""
    args: dict[str, str] = {}
    images = []
    for line in instructions(text):
        if line.startswith("ARG ") and not images and "=" in line:
            key, value = line[4:].split("=", 1)
            args[key.strip()] = value.strip()
        elif line.startswith("FROM "):
            ref = line.split()[1]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref))
    return images


def test_one_backend_image_and_one_orchestrator_image():
    assert {p.name for p in DOCKER.iterdir()} == {f"{n}.Dockerfile{s}" for n in IMAGES for s in ("", ".dockerignore")}


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned_by_digest(name):
    images = from_images(dockerfile(name))
    assert len(images) == 2, "a build stage and a runtime stage"
    for image in images:
        assert re.fullmatch(r"python:3\.12-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    assert len(set(images)) == 1, "both stages on the same base (the venv is copied across)"
    assert from_images(dockerfile("backend")) == from_images(dockerfile("orchestrator")), "one base for all images"


@pytest.mark.parametrize("name", IMAGES)
def test_apt_packages_are_pinned_to_versions(name):
    installs = [line for line in instructions(dockerfile(name)) if "apt-get install" in line]
    assert installs or name == "orchestrator", "the backend installs gcc for torch.compile"
    for line in installs:
        packages = [w for w in line.split("apt-get install", 1)[1].split("&&")[0].split() if not w.startswith("-")]
        assert packages, line
        for package in packages:
            assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]*=[0-9][\w.:+~-]*", package), f"{package} is not pinned (=version)"


def test_the_backend_image_serves_lm_and_dit_and_fetches_weights():
    text = dockerfile("backend")
    assert 'ENTRYPOINT ["acestep"]' in text, "the Deployment picks `serve lm` or `serve dit`"
    for module in IMAGES["backend"]:
        assert module in text, f"the build must import {module}"
    assert "huggingface_hub" in text and "acestep fetch-checkpoints --help" in text
    assert "ACESTEP_PORT" not in " ".join(instructions(text)), "the port differs per server: the Deployment's"
    assert "HF_HUB_OFFLINE=1" in text, "servers never download; the init container opts back in"


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfiles_install_torch_before_the_package(name):
    text = dockerfile(name)
    torch_at = text.index('pip install "torch==')
    # The images serve: the package with its `serve` extra (a plain install is only the client SDK), and
    # `tracing` so that ACESTEP_OTLP_ENDPOINT can export spans.
    assert torch_at < text.index('pip install -c requirements.txt ".[serve,tracing]"')
    assert "USER 10001" in text
    assert (DOCKER / f"{name}.Dockerfile.dockerignore").is_file()
    pinned = re.search(r"^torch==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert f"ARG TORCH_VERSION={pinned}" in text
    if name == "orchestrator":
        assert 'ENTRYPOINT ["acestep", "serve", "orchestrator"]' in text
        assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
