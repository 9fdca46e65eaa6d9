"""API keys on a real server: with keys set, a caller without one reaches health only; reflection needs a key
unless --reflection-without-key; every other method, an unknown one too, is UNAUTHENTICATED. Whitespace around a
key is ignored, a key no gRPC client can send is refused where it is given, and whatever bytes reach the server
as a key end UNAUTHENTICATED, never INTERNAL."""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from acestep_client import AceStepClient
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_serving.admission import Admission
from acestep_serving.flags import add_server_flags
from acestep_serving.preflight import StartupError
from acestep_serving.server import GrpcServer, ServerOptions
from dit_service.server import SERVICE_NAME, DiffusionServicer, DiTMetrics
from orchestrator.server import backend_metadata

KEY = "secret-key"
REFLECTION_PATHS = ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
UNKNOWN_PATHS = ("/acestep.v1.DiffusionService/NoSuchMethod", "/no.such.Service/Call")


@asynccontextmanager
async def _server(api_keys: tuple[str, ...] = (KEY,), reflection_without_key: bool = False) -> AsyncIterator[str]:
    """A DiT service (model not loaded: ListModels answers, Synthesize says UNAVAILABLE) behind ``api_keys``."""
    server = GrpcServer([SERVICE_NAME], ServerOptions(port=0, api_keys=api_keys,
                                                      reflection_without_key=reflection_without_key))
    server.add(dit_pb2_grpc.add_DiffusionServiceServicer_to_server, DiffusionServicer(Admission(1, 0), DiTMetrics(),
                                                                                      model_name="tiny"))
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.drain_and_stop(0)


async def _code(call) -> grpc.StatusCode:
    """The status a call ends with (OK when it answered)."""
    try:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _codes(address: str, metadata: tuple = ()) -> dict[str, grpc.StatusCode]:
    """The status of each kind of call a caller with ``metadata`` can make."""
    async with grpc.aio.insecure_channel(address) as channel:
        dit = dit_pb2_grpc.DiffusionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def encode_requests():
            yield dit_pb2.EncodeAudioRequest(data=b"RIFF")

        codes = {
            "health": await _code(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10)),
            "list_models": await _code(lambda: dit.ListModels(gen_pb2.ListModelsRequest(), metadata=metadata,
                                                              timeout=10)),
            "synthesize": await _code(lambda: dit.Synthesize(dit_pb2.SynthesizeRequest(), metadata=metadata,
                                                             timeout=10)),
            "encode_audio": await _code(lambda: dit.EncodeAudio(encode_requests(), metadata=metadata, timeout=10)),
        }
        for path in REFLECTION_PATHS:
            reflect = channel.stream_stream(
                path, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            codes[path] = await _code(lambda r=reflect, q=request: r(iter([q]), metadata=metadata, timeout=10))
        for path in UNKNOWN_PATHS:
            unknown = channel.unary_unary(path)
            codes[path] = await _code(lambda u=unknown: u(b"", metadata=metadata, timeout=10))
        return codes


async def test_without_a_key_only_health_answers_and_unknown_methods_are_unauthenticated():
    async with _server() as address:
        codes = await _codes(address)
    assert codes.pop("health") == grpc.StatusCode.OK
    assert codes == dict.fromkeys(codes, grpc.StatusCode.UNAUTHENTICATED)
    assert set(codes) >= {*REFLECTION_PATHS, *UNKNOWN_PATHS, "list_models", "synthesize", "encode_audio"}


async def test_with_a_key_every_method_is_served_and_unknown_ones_are_unimplemented():
    async with _server(api_keys=("other", KEY)) as address:
        codes = await _codes(address, (("x-api-key", KEY),))
        spaced = await _codes(address, (("x-api-key", f"  {KEY} "),))  # spaces around it: the same key
    assert codes == spaced
    assert codes["list_models"] == codes["health"] == grpc.StatusCode.OK
    assert [codes[p] for p in REFLECTION_PATHS] == [grpc.StatusCode.OK] * 2
    assert codes["synthesize"] == grpc.StatusCode.UNAVAILABLE  # the servicer itself answered: no model loaded
    assert codes["encode_audio"] == grpc.StatusCode.UNAVAILABLE
    assert [codes[p] for p in UNKNOWN_PATHS] == [grpc.StatusCode.UNIMPLEMENTED] * 2


async def test_reflection_without_key_opens_reflection_only():
    async with _server(reflection_without_key=True) as address:
        codes = await _codes(address)
    assert [codes[p] for p in REFLECTION_PATHS] == [grpc.StatusCode.OK] * 2
    assert codes["list_models"] == codes["synthesize"] == grpc.StatusCode.UNAUTHENTICATED
    assert [codes[p] for p in UNKNOWN_PATHS] == [grpc.StatusCode.UNAUTHENTICATED] * 2


async def test_without_keys_configured_everything_is_open():
    async with _server(api_keys=()) as address:
        codes = await _codes(address)
    assert codes["list_models"] == codes["health"] == grpc.StatusCode.OK
    assert [codes[p] for p in REFLECTION_PATHS] == [grpc.StatusCode.OK] * 2
    assert [codes[p] for p in UNKNOWN_PATHS] == [grpc.StatusCode.UNIMPLEMENTED] * 2


def test_the_flag_and_its_environment_variable_reach_the_server_options(monkeypatch):
    import argparse

    def options(argv: list[str]) -> ServerOptions:
        parser = argparse.ArgumentParser()
        add_server_flags(parser, default_port=0)
        return ServerOptions.from_args(parser.parse_args(argv))

    assert not options([]).reflection_without_key
    assert options(["--reflection-without-key"]).reflection_without_key
    monkeypatch.setenv("ACESTEP_REFLECTION_WITHOUT_KEY", "true")
    assert options([]).reflection_without_key
    assert not options(["--no-reflection-without-key"]).reflection_without_key


async def test_the_sdk_drops_whitespace_around_its_key_and_refuses_one_grpc_cannot_send():
    """A key read from a file or variable often ends in a tab or newline: gRPC refused it (INTERNAL) at every call."""
    async with _server() as address:
        accepted = AceStepClient(address, api_key=f"{KEY}\t")._opts.metadata
        unknown = AceStepClient(address, api_key="wrong\n")._opts.metadata
        assert accepted == (("x-api-key", KEY),)
        codes = [(await _codes(address, metadata))["list_models"] for metadata in (accepted, unknown)]
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED]
    with pytest.raises(InvalidArgument, match=r"api_key: allowed printable ASCII .*'\\t' at position 3"):
        AceStepClient("127.0.0.1:1", api_key="sec\tret")


def test_keys_no_client_could_send_stop_the_server_and_the_orchestrator_from_starting():
    with pytest.raises(StartupError, match=r"--api-keys: .*'\\x00' at position 1"):
        GrpcServer([SERVICE_NAME], ServerOptions(port=0, api_keys=("ok", "k\x00ey")))
    with pytest.raises(StartupError, match="--api-keys: no key given"):
        GrpcServer([SERVICE_NAME], ServerOptions(port=0, api_keys=(" ",)))
    assert backend_metadata(f"{KEY}\n") == (("x-api-key", KEY),)  # a Secret file's trailing newline
    assert backend_metadata("") == ()
    with pytest.raises(StartupError, match=r"--backend-api-key: .*'é' at position 1"):
        backend_metadata("sécret")


def _raw_grpc_status(address: str, api_key: bytes) -> int:
    """One unary call over a bare HTTP/2 connection, sending ``api_key`` as is (gRPC clients refuse to send control
    or non-ASCII bytes; other clients and proxies may); the grpc-status the server answers."""
    host, port = address.rsplit(":", 1)

    def literal(name: bytes, value: bytes) -> bytes:  # HPACK literal header, new name, no Huffman coding
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    headers = b"".join(literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/acestep.v1.DiffusionService/ListModels"),
        (b":authority", address.encode()), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        (b"x-api-key", api_key)))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")  # preface + empty SETTINGS
                     + frame(1, 4, 1, headers) + frame(0, 1, 1, b"\x00" * 5))  # HEADERS, an empty message, END
        received = b""
        while (match := re.search(rb"grpc-status([\x01-\x7f])", received)) is None or \
                len(received) < match.end() + match.group(1)[0]:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection without a grpc-status: {received!r}"
            received += chunk
    return int(received[match.end(): match.end() + match.group(1)[0]])


@pytest.mark.parametrize("api_key", [f"{KEY}\t".encode(), b"s\xe9cret", b"\xff\xfe", b"secret\x00"])
async def test_any_bytes_sent_as_a_key_end_unauthenticated_not_internal(api_key):
    import asyncio

    async with _server() as address:
        status = await asyncio.get_running_loop().run_in_executor(None, _raw_grpc_status, address, api_key)
        valid = await asyncio.get_running_loop().run_in_executor(None, _raw_grpc_status, address, KEY.encode())
    assert valid == grpc.StatusCode.OK.value[0]  # the raw client itself works
    if api_key == f"{KEY}\t".encode():
        assert status == grpc.StatusCode.OK.value[0]  # whitespace around the key is ignored
    else:
        assert status == grpc.StatusCode.UNAUTHENTICATED.value[0]
