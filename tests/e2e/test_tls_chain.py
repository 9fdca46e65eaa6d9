"""mTLS on every hop: client -> orchestrator -> LM and DiT, all real servers on 127.0.0.1.

The model servers accept only clients whose certificate the test CA signed; the orchestrator dials
them with --backend-root-cert/--backend-client-cert/--backend-client-key.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from acestep_client import AceStepClient, GenerationConfig, GenerationParams
from orchestrator.server import build_parser, start_orchestrator
from orchestrator.stack import start_stack

FAST = GenerationParams(caption="x", thinking=False, use_cot_metas=False, duration=10, bpm=100, keyscale="D minor",
                        timesignature="4")  # fmt: skip


def _server_tls(pki) -> list[str]:
    return ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
            "--tls-client-ca", str(pki / "ca.pem")]  # fmt: skip


def _backend_tls(pki, client_cert: bool = True) -> list[str]:
    flags = ["--backend-root-cert", str(pki / "ca.pem")]
    if client_cert:
        flags += ["--backend-client-cert", str(pki / "client.pem"), "--backend-client-key", str(pki / "client.key")]
    return flags


@pytest.fixture(scope="module")
def tls_stack(tiny_root, pki):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(300)

    stack = run(start_stack(
        tiny_root, device="cpu", dtype="float32", announce=lambda line: None,
        extra_model_flags=[*_server_tls(pki), "--health-port", "0"],
        extra_orchestrator_flags=[*_server_tls(pki), *_backend_tls(pki), "--health-port", "0"],
    ))  # fmt: skip
    try:
        yield stack, run
    finally:
        run(stack.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _client(address: str, pki) -> AceStepClient:
    return AceStepClient(address, root_certificates=pki / "ca.pem", private_key=pki / "client.key",
                         certificate_chain=pki / "client.pem", timeout=60)  # fmt: skip


def test_every_hop_is_mutual_tls(tls_stack, pki):
    stack, _ = tls_stack
    with _client(stack.address, pki) as client:
        audio = client.generate(FAST, GenerationConfig(batch_size=1))
        text = client.understand_music("<|audio_code_1|>", seed=1, max_new_tokens=24)
    assert audio.success, audio.error  # orchestrator -> DiT over mTLS
    assert text.success, text.error  # orchestrator -> LM over mTLS


@pytest.mark.parametrize("client_cert", [False, True])
def test_an_orchestrator_without_the_backend_certificates_is_refused(tls_stack, pki, client_cert):
    stack, run = tls_stack
    flags = ["--port", "0", "--dit", stack.dit.address, "--lm", stack.lm.address]
    if client_cert:  # TLS with the right CA but no client certificate: the model servers demand one
        flags += _backend_tls(pki, client_cert=False)
    orchestrator = run(start_orchestrator(build_parser().parse_args(flags), announce=lambda line: None))
    try:
        with AceStepClient(f"127.0.0.1:{orchestrator.port}", timeout=20) as client:
            result = client.generate(FAST, GenerationConfig(batch_size=1))
        assert not result.success
        assert result.error.startswith("UNAVAILABLE")
    finally:
        run(orchestrator.stop())


def test_half_configured_backend_mtls_is_a_startup_error():
    args = build_parser().parse_args(["--port", "0", "--backend-client-cert", "c.pem"])
    with pytest.raises(ValueError, match="go together"):
        asyncio.run(start_orchestrator(args, announce=lambda line: None))


def test_probes_reach_a_plaintext_health_port_while_the_api_needs_mtls(tls_stack):
    """Kubelet gRPC probes cannot speak TLS: each server also answers health, and only health, in plaintext."""
    stack, _ = tls_stack
    for running in (stack.lm, stack.dit, stack.orchestrator):
        health_address = f"127.0.0.1:{running.server.health_port}"
        with grpc.insecure_channel(health_address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/acestep.v1.LanguageModelService/Describe")(b"", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel, pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
