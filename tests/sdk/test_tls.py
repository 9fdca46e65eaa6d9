"""TLS and mTLS: the clients connect with certificates, and without the client's they are refused."""

from __future__ import annotations

import shutil
from concurrent import futures

import grpc
import pytest

from acestep_client import AceStepClient, AsyncAceStepClient, GenerationConfig, GenerationParams
from acestep_client.proto.acestep.v1 import orchestrator_pb2_grpc as orch_grpc

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
PARAMS = GenerationParams(caption="ambient piano")


@pytest.fixture
def mtls_server(kit, pki):
    service = kit.FakeMusicService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    orch_grpc.add_MusicGenerationServiceServicer_to_server(service, server)
    credentials = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield kit.Server(f"127.0.0.1:{port}", service)
    server.stop(grace=None)


def test_mtls_with_paths_and_api_key(mtls_server, pki):
    with AceStepClient(mtls_server.address, root_certificates=pki / "ca.pem", private_key=pki / "client.key",
                       certificate_chain=pki / "client.pem", api_key="k") as client:
        result = client.generate(PARAMS, GenerationConfig())
    assert result.success, result.error
    assert mtls_server.service.calls[0].metadata["x-api-key"] == "k"


async def test_async_mtls_with_pem_bytes(mtls_server, pki):
    async with AsyncAceStepClient(mtls_server.address, root_certificates=(pki / "ca.pem").read_bytes(),
                                  private_key=(pki / "client.key").read_bytes(),
                                  certificate_chain=(pki / "client.pem").read_bytes()) as client:
        result = await client.generate(PARAMS, GenerationConfig())
    assert result.success, result.error


def test_without_a_client_certificate_the_call_fails(mtls_server, pki):
    with AceStepClient(mtls_server.address, root_certificates=pki / "ca.pem", timeout=10) as client:
        result = client.generate(PARAMS, GenerationConfig())
    assert not result.success and result.error.startswith("UNAVAILABLE")
    assert mtls_server.service.calls == []


def test_plaintext_client_cannot_talk_to_a_tls_server(mtls_server):
    with AceStepClient(mtls_server.address, timeout=10) as client:
        result = client.generate(PARAMS, GenerationConfig())
    assert not result.success and mtls_server.service.calls == []
