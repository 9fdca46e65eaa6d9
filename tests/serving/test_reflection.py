"""Reflection answers on grpc.reflection.v1 (what grpcurl and Postman try first) as on v1alpha (with API keys set,
to callers with a key: tests/serving/test_auth.py covers who may call what)."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from acestep_client.proto.acestep.v1 import dit_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_serving.server import GrpcServer, ServerOptions

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
DIT = "acestep.v1.DiffusionService"


def _ask(address: str, path: str, request: reflection_pb2.ServerReflectionRequest):
    """One reflection exchange on ``path`` over a raw channel (v1 and v1alpha messages are wire-identical)."""
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(path, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        (response,) = list(call(iter([request]), metadata=(("x-api-key", "secret"),), timeout=10))
    return response


async def _with_server(scenario):
    server = GrpcServer([DIT], ServerOptions(port=0, api_keys=("secret",)))
    server.add(dit_pb2_grpc.add_DiffusionServiceServicer_to_server, dit_pb2_grpc.DiffusionServiceServicer())
    port = await server.start()
    try:
        return await asyncio.get_running_loop().run_in_executor(None, scenario, f"127.0.0.1:{port}")
    finally:
        await server.drain_and_stop(0)


async def test_v1_reflection_lists_and_describes_services():
    def scenario(address):
        listed = {path: {s.name for s in _ask(address, path, reflection_pb2.ServerReflectionRequest(
            list_services="")).list_services_response.service} for path in (V1, V1ALPHA)}
        described = _ask(address, V1, reflection_pb2.ServerReflectionRequest(file_containing_symbol=DIT))
        v1_itself = _ask(address, V1, reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"))
        with grpc.insecure_channel(address) as channel:  # the services need the key too
            try:
                dit_pb2_grpc.DiffusionServiceStub(channel).ListModels(gen_pb2.ListModelsRequest(), timeout=10)
                denied = None
            except grpc.RpcError as exc:
                denied = exc.code()
        return listed, described, v1_itself, denied

    listed, described, v1_itself, denied = await _with_server(scenario)
    assert listed[V1] == listed[V1ALPHA]
    assert {DIT, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= listed[V1]
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    dit_file = next(f for f in files if any(s.name == "DiffusionService" for s in f.service))
    assert {m.name for m in dit_file.service[0].method} >= {"Synthesize", "EncodeAudio", "ListModels"}
    (reflection_file,) = [descriptor_pb2.FileDescriptorProto.FromString(b)
                          for b in v1_itself.file_descriptor_response.file_descriptor_proto]
    assert reflection_file.package == "grpc.reflection.v1"
    assert reflection_file.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert denied == grpc.StatusCode.UNAUTHENTICATED
