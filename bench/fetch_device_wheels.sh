#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels the GPU device image lacks, for bench/gpu_session.sh, which
# installs them there with --no-deps. The device runs CPython 3.12 on x86_64 and cannot reach an index.
# Usage (here, before the run call): bash bench/fetch_device_wheels.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .whl
pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --implementation cp --dest .whl \
    "grpcio==1.85.3" "grpcio-health-checking==1.85.1" "grpcio-reflection==1.85.1" "protobuf==7.36.2" \
    "diffusers==0.42.1" "soundfile==0.14.0" "cffi==2.1.1" "pycparser==3.12"
ls -l .whl
