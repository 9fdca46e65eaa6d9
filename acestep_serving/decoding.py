"""Requests that do not parse: INVALID_ARGUMENT naming the message, not grpc's UNKNOWN.

grpc runs a method's request deserializer before the handler; when protobuf refuses the bytes (corrupt wire format,
a string field that is not UTF-8, as a client in another language can send) the exception escapes every handler and
the caller gets UNKNOWN "Unexpected DecodeError". This interceptor wraps the project's methods so such a request is
answered INVALID_ARGUMENT ``request: ...`` like any other bad input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from acestep_client.errors import InvalidArgument

GUARDED_PREFIX = "/acestep."  # our services only: health and reflection keep grpc's own handlers


class Undecodable:
    """What a guarded deserializer returns for bytes protobuf refuses: the message that says why."""

    def __init__(self, message_name: str, error: Exception):
        reason = str(error).rsplit(": ", 1)[-1]  # protobuf repeats the type name before the reason
        self.message = f"is not a valid {message_name} message: {reason}"


def _guarded(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    message_name = name.full_name if name is not None else "request"

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(message_name, exc)

    return parse


def _refuse(request: Undecodable) -> InvalidArgument:
    return InvalidArgument("request", request.message)


def _unary(behaviour):
    async def handle(request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(_refuse(request)))
        return await behaviour(request, context)

    return handle


def _unary_stream(behaviour):
    async def handle(request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(_refuse(request)))
        async for response in behaviour(request, context):
            yield response

    return handle


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that raises InvalidArgument at an undecodable message (the handlers map it)."""
    async for request in requests:
        if isinstance(request, Undecodable):
            raise _refuse(request)
        yield request


def _stream_unary(behaviour):
    async def handle(requests, context):
        return await behaviour(_checked(requests), context)

    return handle


def _stream_stream(behaviour):
    async def handle(requests, context):
        async for response in behaviour(_checked(requests), context):
            yield response

    return handle


_WRAPPERS = {
    "unary_unary": _unary,
    "unary_stream": _unary_stream,
    "stream_unary": _stream_unary,
    "stream_stream": _stream_stream,
}


def guard_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """``handler`` with a deserializer that never raises and a behaviour that refuses what it could not parse."""
    if handler is None:
        return None
    kind = f"{'stream' if handler.request_streaming else 'unary'}_{'stream' if handler.response_streaming else 'unary'}"
    behaviour = getattr(handler, kind)
    if behaviour is None:
        return handler
    return handler._replace(request_deserializer=_guarded(handler.request_deserializer),
                            **{kind: _WRAPPERS[kind](behaviour)})


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Guards the project's methods (see the module docstring); other services pass through untouched."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if not details.method.startswith(GUARDED_PREFIX):
            return handler
        return guard_handler(handler)
