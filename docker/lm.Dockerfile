# syntax=docker/dockerfile:1.7
# ACE-Step LM planner service (GPU). Build from the repository root:
#   docker build -f docker/lm.Dockerfile -t registry.example.com/acestep/lm:0.1.0-cuda .
# CPU variant (cpu-demo overlay):
#   docker build -f docker/lm.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#     -t registry.example.com/acestep/lm:0.1.0-cpu .
# TORCH_INDEX_URL picks the torch build: PyPI's Linux torch wheel is a CUDA build; use
# https://download.pytorch.org/whl/cu1XX for another CUDA version that matches your node drivers.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
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
# 2. the package, with the measured pins as constraints (no dev tools in the image).
RUN pip install -c requirements.txt ".[serve]" && python -c "import torch, lm_service.server; print(torch.__version__, torch.version.cuda)"

FROM python:${PYTHON_VERSION}-slim-bookworm
# gcc + libc headers: torch.compile / Triton build small launcher modules at runtime on CUDA.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 acestep && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp acestep
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp HF_HOME=/tmp/huggingface HF_HUB_OFFLINE=1 \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor TRITON_CACHE_DIR=/tmp/triton \
    ACESTEP_HOST=0.0.0.0 ACESTEP_PORT=50051 ACESTEP_METRICS_PORT=9090 ACESTEP_CHECKPOINTS=/checkpoints
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9090
ENTRYPOINT ["acestep", "serve", "lm"]
