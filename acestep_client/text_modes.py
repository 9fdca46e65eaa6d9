"""``understand_music``, ``create_sample`` and ``format_sample`` with the reference's signatures.

``llm_handler`` picks where the LM runs: an :class:`AceStepClient`, a :class:`RemoteOrchestrator` or
a ``"host:port"`` string (the front server relays to its LM), or a :class:`RemoteLM` (the LM service
itself, through the orchestrator package's replica pool). Like the reference they never raise
for a failed call: the result has ``success=False`` and ``error = "<CODE>: <details>"``.
Beyond the reference: keyword-only ``seed`` (reproducible runs) and ``max_new_tokens`` (a cost cap).
"""

from __future__ import annotations

from typing import Any

from acestep_client.assemble import CALL_FAILURES, CallError, error_text
from acestep_client.client import AceStepClient
from acestep_client.describe import (
    build_task,
    failed_result,
    read_description_async,
    result_from_description,
    sampling_args,
)
from acestep_client.handles import RemoteLM, RemoteOrchestrator
from acestep_client.proto.acestep.v1 import lm_pb2, lm_pb2_grpc
from acestep_client.types import CreateSampleResult, FormatSampleResult, UnderstandResult


def understand_music(
    llm_handler: Any, audio_codes: str, temperature: float = 0.85, top_k: int | None = None,
    top_p: float | None = None, repetition_penalty: float = 1.0, use_constrained_decoding: bool = True,
    constrained_decoding_debug: bool = False, *, seed: int | None = None, max_new_tokens: int | None = None,
) -> UnderstandResult:  # fmt: skip
    """Describe the song behind ``audio_codes``; empty codes make the LM invent an example."""
    sampling = sampling_args(locals())
    return _run(llm_handler, "understand", {"audio_codes": audio_codes}, sampling)


def create_sample(
    llm_handler: Any, query: str, instrumental: bool = False, vocal_language: str | None = None,
    temperature: float = 0.85, top_k: int | None = None, top_p: float | None = None,
    repetition_penalty: float = 1.0, use_constrained_decoding: bool = True, constrained_decoding_debug: bool = False,
    *, seed: int | None = None, max_new_tokens: int | None = None,
) -> CreateSampleResult:  # fmt: skip
    """A complete sample (caption, lyrics, metadata) from a free-text query ("simple mode")."""
    sampling = sampling_args(locals())
    inputs = {"query": query, "instrumental": instrumental, "vocal_language": vocal_language}
    return _run(llm_handler, "create_sample", inputs, sampling)


def format_sample(
    llm_handler: Any, caption: str, lyrics: str, user_metadata: dict[str, Any] | None = None,
    temperature: float = 0.85, top_k: int | None = None, top_p: float | None = None,
    repetition_penalty: float = 1.0, use_constrained_decoding: bool = True, constrained_decoding_debug: bool = False,
    *, seed: int | None = None, max_new_tokens: int | None = None,
) -> FormatSampleResult:  # fmt: skip
    """The user's caption and lyrics, enhanced, with metadata; ``user_metadata`` values are kept."""
    sampling = sampling_args(locals())
    inputs = {"caption": caption, "lyrics": lyrics, "user_metadata": user_metadata}
    return _run(llm_handler, "format_sample", inputs, sampling)


def _run(llm_handler: Any, mode: str, inputs: dict[str, Any], sampling: dict[str, Any]) -> Any:
    if isinstance(llm_handler, str):
        llm_handler = RemoteOrchestrator(llm_handler)
    if isinstance(llm_handler, AceStepClient):
        return llm_handler.describe(mode, inputs, sampling, None, None)
    if isinstance(llm_handler, RemoteOrchestrator):
        with llm_handler.client() as client:
            return client.describe(mode, inputs, sampling, None, None)
    if isinstance(llm_handler, RemoteLM):
        return _describe_on_lm(llm_handler, mode, inputs, sampling)
    raise TypeError(
        "llm_handler must be an AceStepClient, a RemoteOrchestrator, a RemoteLM or a 'host:port' string, "
        f"got {type(llm_handler).__name__}"
    )


def _describe_on_lm(lm: RemoteLM, mode: str, inputs: dict[str, Any], sampling: dict[str, Any]) -> Any:
    """Straight to the LM service, through the orchestrator's replica pool (round robin, retry on UNAVAILABLE)."""
    from acestep_client.api import run_blocking

    async def call() -> Any:
        try:
            from orchestrator.replicas import ReplicaPool
        except ImportError as exc:
            raise CallError("UNIMPLEMENTED", f"a RemoteLM handler needs the orchestrator package: {exc}") from exc
        pool = ReplicaPool(list(lm.addresses), lm_pb2_grpc.LanguageModelServiceStub)
        try:
            return await read_description_async(pool.stream("Describe", request))
        finally:
            await pool.close()

    try:
        request = lm_pb2.DescribeRequest(task=build_task(mode, inputs, sampling))
        description = run_blocking(call)
    except CALL_FAILURES as exc:
        return failed_result(mode, error_text(exc))
    return result_from_description(mode, description, inputs.get("lyrics", ""))


__all__ = ["create_sample", "format_sample", "understand_music"]
