"""gRPC server reflection under both names clients ask for: ``grpc.reflection.v1`` and ``v1alpha``.

grpcurl, Postman and newer gRPC libraries try v1 first; grpcio-reflection implements only v1alpha.
The two protocols are the same messages under another package name (identical on the wire), so one
v1alpha servicer answers both paths. v1's descriptor (v1alpha's, renamed) joins the default pool, so
reflection can describe the v1 service it lists, too.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"


def _renamed(type_name: str) -> str:
    prefix = f".{_V1ALPHA_PACKAGE}."
    return f".{_V1_PACKAGE}." + type_name.removeprefix(prefix) if type_name.startswith(prefix) else type_name


def _rename_message_types(messages) -> None:
    for message in messages:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = _renamed(field.type_name)
        _rename_message_types(message.nested_type)


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, rebuilt from v1alpha's descriptor (the messages are the same)."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = _V1_PACKAGE
    file.ClearField("options")
    _rename_message_types(file.message_type)
    for service in file.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type)
            method.output_type = _renamed(method.output_type)
    return file


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindServiceByName(V1_SERVICE)
    except KeyError:
        pool.Add(v1_file_descriptor())


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (plus both reflection services) at the v1 and v1alpha paths."""
    _register_v1_descriptor(descriptor_pool.Default())
    servicer = reflection.aio.ReflectionServicer([*service_names, V1_SERVICE, V1ALPHA_SERVICE])
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, handlers) for name in (V1_SERVICE, V1ALPHA_SERVICE)]
    )
