"""Real servers in their own processes (``python -m dit_service`` ...), for what only a process shows:
signals, exit codes, its log, and health checks answered while its model works."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    metrics_port: int
    log: Path
    _channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self._channel = grpc.insecure_channel(self.address)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self, timeout: float = 10.0) -> int:
        stub = health_pb2_grpc.HealthStub(self._channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=10).read().decode()

    def gauge(self, name: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not exported")

    def wait_serving(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health(timeout=1) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not serving after {timeout:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.2)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self._channel.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def start_server(module: str, tmp: Path, *flags: str) -> ServerProcess:
    """``python -m <module>`` on 127.0.0.1 with /metrics, its output (stdout and stderr) in a file."""
    port, metrics_port = free_port(), free_port()
    log = tmp / f"{module}-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
         str(metrics_port), *flags],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
    )
    return ServerProcess(process, port, metrics_port, log)


def model_flags(root: Path) -> list[str]:
    return ["--checkpoints", str(root), "--device", "cpu", "--dtype", "float32"]


def wav_bytes(seconds: float, rate: int = 44_100) -> bytes:
    """A 16-bit noise WAV, by default at 44.1 kHz: the server resamples it to 48 kHz, seconds of CPU for a long one."""
    audio = (np.random.default_rng(0).standard_normal((int(rate * seconds), 2)) * 0.1).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from orchestrator.stack import write_tiny_checkpoints

    return write_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"), seed=0)


@pytest.fixture
def servers(tmp_path) -> Iterator[list[ServerProcess]]:
    """Servers a test starts; killed after it if still running."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()
