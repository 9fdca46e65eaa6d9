# syntax=docker/dockerfile:1.7
# ACE-Step orchestrator (CPU only). Build from the repository root:
#   docker build -f docker/orchestrator.Dockerfile -t registry.example.com/acestep/orchestrator:0.1.0-cpu .
# The orchestrator does no tensor work, but the `serve` extra (shared server code) imports torch: install the CPU wheel
# (~750 MB instead of several GB of CUDA libraries).
#
# Base image pinned by digest (the same as docker/backend.Dockerfile): python:3.12-slim-bookworm, the
# Python 3.12.14 / Debian 12 build, as public repositories pinned it in September 2026.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY requirements.txt pyproject.toml README.md ./
COPY acestep_client ./acestep_client
COPY acestep_serving ./acestep_serving
COPY lm_service ./lm_service
COPY dit_service ./dit_service
COPY orchestrator ./orchestrator
RUN pip install -c requirements.txt ".[serve,tracing]" \
 && python -c "import torch, orchestrator.server; assert torch.version.cuda is None, torch.__version__"

FROM ${PYTHON_IMAGE}
# No apt packages: nothing compiles at runtime on the CPU-only orchestrator.
RUN groupadd --gid 10001 acestep && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp acestep
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    ACESTEP_HOST=0.0.0.0 ACESTEP_PORT=50050 ACESTEP_METRICS_PORT=9090
USER 10001:10001
WORKDIR /tmp
EXPOSE 50050 9090
ENTRYPOINT ["acestep", "serve", "orchestrator"]
