"""``generate_music`` with the reference signature, over remote services instead of in-process models.

The handlers choose where the work runs:
- ``dit_handler`` an :class:`AceStepClient`, a :class:`RemoteOrchestrator` or a ``"host:port"``
  string: one GenerateMusic call to that front server (``llm_handler`` is ignored; the server
  has its own LM configuration).
- ``dit_handler`` a :class:`RemoteDiT`: the orchestration pipeline runs in this process against
  the DiT service and, when ``llm_handler`` is a :class:`RemoteLM`, the LM service (``None`` = no LM).

``stream_encoding`` (keyword only, not in the reference) picks how audio travels: pcm_f32le (exact),
pcm_s16le, flac or opus; None keeps the client's own setting (pcm_f32le for the other handlers).

Like the reference, it never raises for a failed generation: bad input, server errors and broken
streams all come back as ``success=False`` with ``error = "<CODE>: <details>"``. A handler of the
wrong type is a programming error and raises TypeError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from acestep_client.assemble import CallError, ProgressCallback, assemble_async, failed
from acestep_client.client import AceStepClient, AsyncAceStepClient
from acestep_client.errors import AceStepError
from acestep_client.handles import RemoteDiT, RemoteLM, RemoteOrchestrator
from acestep_client.request import build_request, caller_paths, output_frames_limit, request_file_format
from acestep_client.types import GenerationConfig, GenerationParams, GenerationResult

log = logging.getLogger(__name__)
T = TypeVar("T")


def generate_music(
    dit_handler: Any,
    llm_handler: Any,
    params: GenerationParams,
    config: GenerationConfig,
    save_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    *,
    stream_encoding: str | None = None,
) -> GenerationResult:
    """Generate ``config.batch_size`` pieces of music; see inference-api.md for every field."""
    if isinstance(dit_handler, AsyncAceStepClient):
        raise TypeError("generate_music is blocking; with an AsyncAceStepClient use `await client.generate(...)`")
    if isinstance(dit_handler, str):
        dit_handler = RemoteOrchestrator(dit_handler)
    if not isinstance(dit_handler, (AceStepClient, RemoteOrchestrator, RemoteDiT)):
        raise TypeError(
            "dit_handler must be an AceStepClient, a RemoteOrchestrator, a RemoteDiT or a 'host:port' string, "
            f"got {type(dit_handler).__name__}"
        )
    if isinstance(dit_handler, RemoteDiT) and not (llm_handler is None or isinstance(llm_handler, RemoteLM)):
        raise TypeError(f"with a RemoteDiT, llm_handler must be a RemoteLM or None, got {type(llm_handler).__name__}")
    try:
        if isinstance(dit_handler, AceStepClient):
            return dit_handler.generate(params, config, save_dir, progress, stream_encoding=stream_encoding)
        if isinstance(dit_handler, RemoteOrchestrator):
            with dit_handler.client() as client:
                return client.generate(params, config, save_dir, progress, stream_encoding=stream_encoding)
        return _run_in_process(dit_handler, llm_handler, params, config, save_dir, progress, stream_encoding)
    except Exception as exc:  # the reference's contract: a result, never an exception
        if not isinstance(exc, (AceStepError, CallError)):
            log.exception("generate_music failed")
        return failed(exc)


def _run_in_process(
    dit: RemoteDiT,
    lm: RemoteLM | None,
    params: GenerationParams,
    config: GenerationConfig,
    save_dir: str | os.PathLike | None,
    progress: ProgressCallback | None,
    stream_encoding: str | None = None,
) -> GenerationResult:
    request = build_request(params, config, stream_encoding=stream_encoding)
    try:
        from orchestrator.stack import run_pipeline_events
    except ImportError as exc:
        from acestep_client.extras import serve_extra_message

        needs = serve_extra_message(exc) or f"needs the orchestrator package: {exc}"
        raise CallError("UNIMPLEMENTED", f"the in-process pipeline (RemoteDiT handlers) {needs}") from exc
    lm_addresses = list(lm.addresses) if lm is not None else []
    dit_addresses = list(dit.addresses)

    async def pipeline() -> GenerationResult:
        events = run_pipeline_events(request, lm_addresses, dit_addresses)
        return await assemble_async(events, save_dir, request_file_format(request), progress,
                                    max_frames=output_frames_limit(request), paths=caller_paths(request))

    return run_blocking(pipeline)


def run_blocking(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs a loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(make))
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(_await(make))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=worker, name="acestep-generate", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def _await(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


__all__ = ["generate_music", "run_blocking"]
