"""gRPC clients of MusicGenerationService: a blocking one and a grpc.aio one with the same options.

Both validate and read uploads locally (``InvalidArgument`` before any network call), then either
hand back the raw event stream (:meth:`stream`) or assemble it into a GenerationResult
(:meth:`generate`), exactly as the in-process API returns it.

``stream_encoding`` (constructor default, overridable per call) is how audio travels back: one of
``STREAM_ENCODINGS`` = pcm_f32le (default, exact), pcm_s16le, flac, opus (lossy). The result's tensors
are float32 whatever it is; files on disk follow ``config.audio_format``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc

from acestep_client import tracing
from acestep_client.assemble import CALL_FAILURES, ProgressCallback, assemble, assemble_async, error_text
from acestep_client.convert import model_info_from_proto
from acestep_client.describe import (
    DescribeProgress,
    build_task,
    failed_result,
    read_description,
    read_description_async,
    result_from_description,
    sampling_args,
)
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from acestep_client.request import build_request, caller_paths, output_frames_limit, request_file_format
from acestep_client.types import (
    CreateSampleResult,
    FormatSampleResult,
    GenerationConfig,
    GenerationParams,
    GenerationResult,
    ModelInfo,
    UnderstandResult,
)
from acestep_client.wire_audio import DEFAULT_STREAM_ENCODING, stream_encoding_name

Pem = bytes | str | os.PathLike | None
API_KEY_HEADER = "x-api-key"
GENERATE_METHOD = "acestep.v1.MusicGenerationService/GenerateMusic"
DESCRIBE_METHOD = "acestep.v1.MusicGenerationService/DescribeMusic"


def clean_api_key(key: str, field: str = "api_key") -> str:
    """``key`` without the whitespace around it (a key read from a file or a variable often ends in a newline or
    tab; the servers ignore it too). Any other character gRPC metadata cannot carry raises InvalidArgument
    naming it: the gRPC library would refuse it at every call with a bare INTERNAL."""
    key = key.strip()
    for i, char in enumerate(key):
        if not " " <= char <= "~":
            raise InvalidArgument(field, f"allowed printable ASCII (0x20-0x7E), the only characters gRPC metadata "
                                         f"carries; got {char!r} at position {i}")
    return key


def read_pem(value: Pem) -> bytes | None:
    """PEM bytes as given, or read from a file path (a str holding PEM text is taken as is)."""
    if value is None or isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    return Path(text).expanduser().read_bytes()


class _Options:
    """What both clients share: channel options, credentials, per-call metadata and deadline."""

    def __init__(
        self,
        target: str,
        api_key: str | None,
        root_certificates: Pem,
        private_key: Pem,
        certificate_chain: Pem,
        timeout: float | None,
        max_message_mb: int,
    ):
        if (private_key is None) != (certificate_chain is None):
            raise ValueError("mTLS needs both private_key and certificate_chain")
        self.target = target
        self.timeout = timeout
        self.max_upload_bytes = max_message_mb * 1024 * 1024
        api_key = clean_api_key(api_key) if api_key else api_key
        self.metadata: tuple[tuple[str, str], ...] = ((API_KEY_HEADER, api_key),) if api_key else ()
        self.channel_options = [
            ("grpc.max_receive_message_length", self.max_upload_bytes),
            ("grpc.max_send_message_length", self.max_upload_bytes),
        ]
        self.credentials: grpc.ChannelCredentials | None = None
        if root_certificates is not None or private_key is not None:
            self.credentials = grpc.ssl_channel_credentials(
                root_certificates=read_pem(root_certificates),
                private_key=read_pem(private_key),
                certificate_chain=read_pem(certificate_chain),
            )

    def deadline(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout


class _ClientBase:
    """What the blocking and asyncio clients share: options, channel, stub, request building."""

    _channels: Any = grpc  # grpc or grpc.aio: where the channel constructors come from

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        root_certificates: Pem = None,
        private_key: Pem = None,
        certificate_chain: Pem = None,
        timeout: float | None = None,
        max_message_mb: int = 64,
        stream_encoding: str = DEFAULT_STREAM_ENCODING,
    ):
        self.stream_encoding = stream_encoding_name(stream_encoding)  # InvalidArgument names stream_encoding
        self._opts = _Options(
            target, api_key, root_certificates, private_key, certificate_chain, timeout, max_message_mb
        )
        if self._opts.credentials is not None:
            self._channel = self._channels.secure_channel(
                target, self._opts.credentials, options=self._opts.channel_options
            )
        else:
            self._channel = self._channels.insecure_channel(target, options=self._opts.channel_options)
        self._stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(self._channel)

    @property
    def target(self) -> str:
        return self._opts.target

    def build_request(
        self, params: GenerationParams, config: GenerationConfig, *, stream_encoding: str | None = None
    ) -> orchestrator_pb2.GenerateMusicRequest:
        """Validate and read uploads (raises InvalidArgument); no network. ``stream_encoding`` None: the client's."""
        return build_request(
            params,
            config,
            max_upload_bytes=self._opts.max_upload_bytes,
            stream_encoding=self.stream_encoding if stream_encoding is None else stream_encoding,
        )

    def stream(
        self,
        params: GenerationParams,
        config: GenerationConfig,
        *,
        timeout: float | None = None,
        stream_encoding: str | None = None,
    ):
        """The raw event stream (chunks as encoded); validates eagerly. gRPC errors surface while iterating."""
        request = self.build_request(params, config, stream_encoding=stream_encoding)
        return self.stream_request(request, timeout=timeout)

    def stream_request(self, request: orchestrator_pb2.GenerateMusicRequest, *, timeout: float | None = None):
        raise NotImplementedError

    # The LM's text modes, with the reference's arguments plus ``seed`` (reproducible runs),
    # ``max_new_tokens`` (caps CoT + lyrics), ``timeout`` and ``progress(fraction, message)``.
    # On the asyncio client each returns an awaitable.
    def understand_music(
        self, audio_codes: str | list[int], temperature: float = 0.85, top_k: int | None = None,
        top_p: float | None = None, repetition_penalty: float = 1.0, use_constrained_decoding: bool = True,
        constrained_decoding_debug: bool = False, *, seed: int | None = None, max_new_tokens: int | None = None,
        timeout: float | None = None, progress: DescribeProgress | None = None,
    ) -> UnderstandResult:  # fmt: skip
        """Describe the song behind ``audio_codes`` (metadata, caption, lyrics)."""
        sampling = sampling_args(locals())
        return self.describe("understand", {"audio_codes": audio_codes}, sampling, timeout, progress)

    def create_sample(
        self, query: str, instrumental: bool = False, vocal_language: str | None = None, temperature: float = 0.85,
        top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
        use_constrained_decoding: bool = True, constrained_decoding_debug: bool = False, *, seed: int | None = None,
        max_new_tokens: int | None = None, timeout: float | None = None, progress: DescribeProgress | None = None,
    ) -> CreateSampleResult:  # fmt: skip
        """Write a complete sample (caption, lyrics, metadata) from a free-text query."""
        sampling = sampling_args(locals())
        inputs = {"query": query, "instrumental": instrumental, "vocal_language": vocal_language}
        return self.describe("create_sample", inputs, sampling, timeout, progress)

    def format_sample(
        self, caption: str, lyrics: str, user_metadata: dict[str, Any] | None = None, temperature: float = 0.85,
        top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
        use_constrained_decoding: bool = True, constrained_decoding_debug: bool = False, *, seed: int | None = None,
        max_new_tokens: int | None = None, timeout: float | None = None, progress: DescribeProgress | None = None,
    ) -> FormatSampleResult:  # fmt: skip
        """Enhance the user's caption and lyrics and add metadata; ``user_metadata`` values are kept."""
        sampling = sampling_args(locals())
        inputs = {"caption": caption, "lyrics": lyrics, "user_metadata": user_metadata}
        return self.describe("format_sample", inputs, sampling, timeout, progress)

    def describe(self, mode: str, inputs: dict[str, Any], sampling: dict[str, Any], timeout: float | None,
                  progress: DescribeProgress | None) -> Any:  # fmt: skip
        """One text-mode call from the reference functions' arguments; the three methods above wrap it."""
        raise NotImplementedError

    def _describe_call(self, task: Any, timeout: float | None) -> tuple[Any, Any]:
        """The DescribeMusic call and its trace span (None without OpenTelemetry)."""
        request = orchestrator_pb2.DescribeMusicRequest(task=task)
        span = tracing.start_client_span(DESCRIBE_METHOD, self.target)
        call = self._stub.DescribeMusic(request, timeout=self._opts.deadline(timeout),
                                        metadata=tracing.inject(self._opts.metadata, span))
        return call, span

    def _list_models_call(self, timeout: float | None) -> Any:
        return self._stub.ListModels(generation_pb2.ListModelsRequest(), timeout=self._opts.deadline(timeout),
                                     metadata=self._opts.metadata)


class AceStepClient(_ClientBase):
    """Blocking client. ``with AceStepClient("host:50051") as c: result = c.generate(params, config)``.

    Options: ``api_key`` (x-api-key metadata), ``root_certificates`` (TLS), ``private_key`` +
    ``certificate_chain`` (mTLS), ``timeout`` (default deadline, seconds), ``max_message_mb``,
    ``stream_encoding`` (how audio travels: pcm_f32le, pcm_s16le, flac or opus).
    """

    def stream_request(
        self, request: orchestrator_pb2.GenerateMusicRequest, *, timeout: float | None = None
    ) -> Iterator[orchestrator_pb2.GenerateMusicResponse]:
        """The event stream of an already built request."""
        span = tracing.start_client_span(GENERATE_METHOD, self.target)
        call = self._stub.GenerateMusic(request, timeout=self._opts.deadline(timeout),
                                        metadata=tracing.inject(self._opts.metadata, span))
        return _cancel_on_close(call, span)

    def generate(
        self,
        params: GenerationParams,
        config: GenerationConfig,
        save_dir: str | os.PathLike | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        *,
        stream_encoding: str | None = None,
    ) -> GenerationResult:
        """One generate_music call; server and transport errors give ``success=False``.

        ``stream_encoding`` overrides the client's for this call.
        """
        request = self.build_request(params, config, stream_encoding=stream_encoding)
        return self.generate_request(request, save_dir, progress, timeout)

    def generate_request(
        self,
        request: orchestrator_pb2.GenerateMusicRequest,
        save_dir: str | os.PathLike | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        events = self.stream_request(request, timeout=timeout)
        limit = output_frames_limit(request)
        return assemble(events, save_dir, request_file_format(request), progress, max_frames=limit,
                        paths=caller_paths(request))

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """The DiT and LM models and the adapters the deployment serves, each with its replicas and whether it is
        the default (what ``dit_model`` / ``lm_model`` "" gets). Errors raise ``grpc.RpcError``."""
        return [model_info_from_proto(m) for m in self._list_models_call(timeout).models]

    def describe(self, mode, inputs, sampling, timeout, progress) -> Any:
        """One DescribeMusic call; bad input and failures give ``success=False``, as the reference does."""
        try:
            task = build_task(mode, inputs, sampling)
            description = read_description(_cancel_on_close(*self._describe_call(task, timeout)), progress)
        except CALL_FAILURES as exc:
            return failed_result(mode, error_text(exc))
        return result_from_description(mode, description, inputs.get("lyrics", ""))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AceStepClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _cancel_on_close(call: Any, span: Any = None) -> Iterator[orchestrator_pb2.GenerateMusicResponse]:
    """Iterate ``call``; abandoning the iterator cancels the RPC so the server stops working. ``span``, the
    call's trace span, ends with the call's status."""
    error: BaseException | None = None
    try:
        yield from call
    except BaseException as exc:
        error = exc
        raise
    finally:
        call.cancel()
        tracing.end_span(span, *tracing.code_of(error))


class AsyncAceStepClient(_ClientBase):
    """grpc.aio client; create and use it inside one running event loop. Same options as AceStepClient."""

    _channels = grpc.aio

    def stream_request(
        self, request: orchestrator_pb2.GenerateMusicRequest, *, timeout: float | None = None
    ) -> AsyncIterator[orchestrator_pb2.GenerateMusicResponse]:
        return self._events(request, self._opts.deadline(timeout))

    async def _events(
        self, request: orchestrator_pb2.GenerateMusicRequest, timeout: float | None
    ) -> AsyncIterator[orchestrator_pb2.GenerateMusicResponse]:
        span = tracing.start_client_span(GENERATE_METHOD, self.target)
        call = self._stub.GenerateMusic(request, timeout=timeout, metadata=tracing.inject(self._opts.metadata, span))
        error: BaseException | None = None
        try:
            async for event in call:
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.cancel()
            tracing.end_span(span, *tracing.code_of(error))

    async def generate(
        self,
        params: GenerationParams,
        config: GenerationConfig,
        save_dir: str | os.PathLike | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        *,
        stream_encoding: str | None = None,
    ) -> GenerationResult:
        """One generate_music call; server and transport errors give ``success=False``.

        ``stream_encoding`` overrides the client's for this call.
        """
        request = self.build_request(params, config, stream_encoding=stream_encoding)
        return await self.generate_request(request, save_dir, progress, timeout)

    async def generate_request(
        self,
        request: orchestrator_pb2.GenerateMusicRequest,
        save_dir: str | os.PathLike | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        events = self.stream_request(request, timeout=timeout)
        return await assemble_async(
            events, save_dir, request_file_format(request), progress, max_frames=output_frames_limit(request),
            paths=caller_paths(request),
        )

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        """As :meth:`AceStepClient.list_models`."""
        return [model_info_from_proto(m) for m in (await self._list_models_call(timeout)).models]

    async def describe(self, mode, inputs, sampling, timeout, progress) -> Any:
        try:
            task = build_task(mode, inputs, sampling)
            call, span = self._describe_call(task, timeout)
            error: BaseException | None = None
            try:
                description = await read_description_async(call, progress)
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.cancel()
                tracing.end_span(span, *tracing.code_of(error))
        except CALL_FAILURES as exc:
            return failed_result(mode, error_text(exc))
        return result_from_description(mode, description, inputs.get("lyrics", ""))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncAceStepClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
