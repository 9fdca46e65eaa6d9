"""A plain ``pip install acestep-grpc`` is the client SDK alone, and it talks to a real server stack.

The project is installed WITHOUT extras into a fresh venv (no system site packages, no torch) by a real
pip resolve of its declared dependencies; a server stack runs from the main venv (``acestep serve all``
on tiny random checkpoints, started while pip works), and the client venv generates against it through
both the SDK and the CLI. Slow by nature (the pip install is 30-60 s on a busy 2-core box) but part of
the default run: CI must catch a torch import creeping into the SDK.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from: pyproject's [tool.setuptools.packages.find] include, plus its readme.
SOURCES = ("pyproject.toml", "README.md", "acestep_client", "acestep_serving", "lm_service", "dit_service",
           "orchestrator")
SERVER_ONLY = ("torch", "transformers", "diffusers", "safetensors", "tokenizers", "prometheus_client")
SERVE_EXTRA_LINE = "needs the server extras: pip install 'acestep-grpc[serve]'"

pytestmark = pytest.mark.timeout(900)


@dataclass
class ClientVenv:
    python: Path
    acestep: Path
    install_seconds: float
    size_mb: float

    def run(self, *argv: str | Path, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a program of the venv from ``cwd`` (outside the repository) with nothing of ours on PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    address: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _start_server(tmp: Path) -> ServerProcess:
    """``acestep serve all`` from the main venv, on tiny random checkpoints it writes itself."""
    address = f"127.0.0.1:{_free_port()}"
    log = tmp / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "acestep_client.cli", "serve", "all", "--port", address.rsplit(":", 1)[1],
         "--checkpoints", str(tmp / "checkpoints"), "--device", "cpu", "--dtype", "float32"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    return ServerProcess(process, address, log)


def _wait_serving(server: ServerProcess, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not _serving(server.address):
        if server.process.poll() is not None:
            pytest.fail(f"acestep serve all exited with {server.process.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"acestep serve all not serving after {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.5)


def _install_client_only(tmp: Path) -> ClientVenv:
    """A fresh venv and ``pip install <copy of the project>`` with no extras: pip resolves the real deps."""
    source = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = tmp / "venv"
    # No pip inside the venv: the main venv's pip installs into it (--python), saving ensurepip's seconds.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    started = time.monotonic()
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-compile", "--quiet",
         "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    assert pip.returncode == 0, f"pip install of the client-only package failed:\n{pip.stdout}\n{pip.stderr}"
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    return ClientVenv(python, venv / "bin" / "acestep", seconds, size)


@pytest.fixture(scope="module")
def client_and_server(tmp_path_factory) -> Iterator[tuple[ClientVenv, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("client_only")
    server = _start_server(tmp)  # loads while pip installs
    try:
        client = _install_client_only(tmp)
        print(f"client-only install: {client.install_seconds:.1f} s, venv {client.size_mb:.0f} MiB")
        yield client, server
    finally:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)


@pytest.fixture
def client(client_and_server) -> ClientVenv:
    return client_and_server[0]


@pytest.fixture
def server(client_and_server) -> ServerProcess:
    _wait_serving(client_and_server[1])
    return client_and_server[1]


def test_client_only_install_has_no_server_dependencies(client, tmp_path):
    probe = textwrap.dedent(f"""
        import importlib, importlib.util, pkgutil
        import acestep_client
        missing = [name for name in {SERVER_ONLY!r} if importlib.util.find_spec(name) is not None]
        assert not missing, f"server-only packages installed: {{missing}}"
        for module in pkgutil.walk_packages(acestep_client.__path__, "acestep_client."):
            importlib.import_module(module.name)  # every SDK and CLI module imports without them
        for name in acestep_client.__all__:
            getattr(acestep_client, name)
        print(acestep_client.__file__)
    """)
    result = client.run(client.python, "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(client.python.parents[1]) in result.stdout, "imported the repository, not the installed package"


@pytest.mark.parametrize(
    "argv",
    [
        ("serve", "all", "--port", "0"),
        ("serve", "lm"),
        ("make-tiny-checkpoints", "tiny"),
        ("fetch-checkpoints", "--dest", "tiny", "--model", "acestep-v15-turbo"),
        ("generate", "--caption", "jazz", "--duration", "10"),  # no --target: the in-process stack
        ("models",),  # no --target: the in-process stack
    ],
)
def test_server_side_commands_say_which_extra_they_need(client, tmp_path, argv):
    result = client.run(client.acestep, *argv, cwd=tmp_path)
    assert result.returncode == 1
    assert SERVE_EXTRA_LINE in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback
    assert not (tmp_path / "tiny").exists()


def test_sdk_generates_against_a_running_server_and_returns_numpy(client, server, tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np
        from acestep_client import AceStepClient, GenerationConfig, GenerationParams, generate_music

        with AceStepClient({server.address!r}) as handle:
            result = generate_music(handle, None, GenerationParams(caption="calm piano", duration=10),
                                    GenerationConfig(batch_size=1, audio_format="wav"), save_dir="sdk_out")
        assert result.success, result.error
        (audio,) = result.audios
        assert isinstance(audio["tensor"], np.ndarray), type(audio["tensor"])  # numpy without torch
        assert audio["tensor"].dtype == np.float32 and audio["tensor"].shape[0] == 2, audio["tensor"].shape
        print(audio["path"])
    """)
    result = client.run(client.python, "-c", script, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, f"{result.stderr}\nserver log:\n{server.log_tail()}"
    path = Path(tmp_path / result.stdout.strip().splitlines()[-1])
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (48000, 2)
    assert info.duration == pytest.approx(10, abs=0.5)


def test_cli_generates_against_a_running_server(client, server, tmp_path):
    result = client.run(client.acestep, "generate", "--target", server.address, "--caption", "upbeat electronic",
                        "--duration", "10", "--batch-size", "1", "--audio-format", "flac", "--out", "cli_out",
                        "--quiet", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, f"{result.stderr}\nserver log:\n{server.log_tail()}"
    (path,) = (tmp_path / "cli_out").glob("*.flac")
    audio, rate = sf.read(str(path), dtype="float32")
    assert rate == 48000 and audio.shape[1] == 2
    assert audio.shape[0] == pytest.approx(10 * 48000, abs=24000)
    assert float(abs(audio).max()) > 0  # real samples, not an empty container


def test_cli_lists_the_models_of_a_running_server(client, server, tmp_path):
    result = client.run(client.acestep, "models", "--target", server.address, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, f"{result.stderr}\nserver log:\n{server.log_tail()}"
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["acestep-v15-turbo"][1] == "dit" and rows["acestep-5Hz-lm-1.7B"][1] == "lm"
