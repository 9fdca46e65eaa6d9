# syntax=docker/dockerfile:1.7
# ACE-Step model backend: ONE image for the LM planner and the DiT synthesis services (GPU). Both need the
# same things (torch, transformers, diffusers, the package with its `serve` extra), so two images would
# be the same bytes built, pushed and pulled twice; the Deployment picks the server
# (`acestep serve lm` / `acestep serve dit`), and init containers run `acestep fetch-checkpoints`.
# (The vLLM LM backend, ACESTEP_BACKEND=vllm, would be a reason for a separate LM image: vLLM pins its
# own torch. It is not built here.) Build from the repository root:
#   docker build -f docker/backend.Dockerfile -t registry.example.com/acestep/backend:0.1.0-cuda .
# CPU variant (cpu-demo overlay):
#   docker build -f docker/backend.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#     -t registry.example.com/acestep/backend:0.1.0-cpu .
# TORCH_INDEX_URL picks the torch build: PyPI's Linux torch wheel is a CUDA build; use
# https://download.pytorch.org/whl/cu1XX for another CUDA version that matches your node drivers.
#
# Base image pinned by digest: python:3.12-slim-bookworm, the Python 3.12.14 / Debian 12 build (its
# multi-platform index digest, as public repositories pinned it in September 2026). To update:
# `docker buildx imagetools inspect python:3.12-slim-bookworm`, then bump the apt versions below.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# 1. torch first, from the chosen index, so the package install keeps it (requirements pin 2.13.0 matches 2.13.0+cuXXX).
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY requirements.txt pyproject.toml README.md ./
COPY acestep_client ./acestep_client
COPY acestep_serving ./acestep_serving
COPY lm_service ./lm_service
COPY dit_service ./dit_service
COPY orchestrator ./orchestrator
# 2. the package (and OpenTelemetry, for ACESTEP_OTLP_ENDPOINT), with the measured pins as constraints (no dev
# tools in the image); both servers and the weights downloader (huggingface_hub, a dependency of transformers)
# must import.
RUN pip install -c requirements.txt ".[serve,tracing]" \
 && python -c "import torch, huggingface_hub, lm_service.server, dit_service.server; print(torch.__version__, torch.version.cuda)" \
 && acestep fetch-checkpoints --help > /dev/null

FROM ${PYTHON_IMAGE}
# gcc + libc headers: torch.compile / Triton build small launcher modules at runtime on CUDA.
# Versions pinned (Debian 12 bookworm). When a point release supersedes one, the build fails here:
# `apt-cache policy gcc gcc-12 libc6-dev` in the base image shows the current ones (or build against
# snapshot.debian.org for the date of the base image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc=4:12.2.0-3 gcc-12=12.2.0-14+deb12u1 libc6-dev=2.36-9+deb12u14 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 acestep && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp acestep
COPY --from=build /opt/venv /opt/venv
# The port (ACESTEP_PORT) is the Deployment's: 50051 for lm, 50052 for dit.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp HF_HOME=/tmp/huggingface HF_HUB_OFFLINE=1 \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor TRITON_CACHE_DIR=/tmp/triton \
    ACESTEP_HOST=0.0.0.0 ACESTEP_METRICS_PORT=9090 ACESTEP_CHECKPOINTS=/checkpoints
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 50052 9090
# `docker run IMAGE serve lm`, `docker run IMAGE serve dit`, `docker run IMAGE fetch-checkpoints ...`
ENTRYPOINT ["acestep"]
CMD ["serve", "lm"]
