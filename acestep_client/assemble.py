"""Turning a GenerateMusic event stream into the API's GenerationResult.

The stream carries audio chunks per batch item (any order, any split), in the request's stream
encoding (float32 PCM, 16-bit PCM, FLAC or Opus; see :mod:`acestep_client.wire_audio`), then one
ItemResult per item with its seed, key, final params, length and gain. Files are written only
after the stream ended with ``done``, so a failed call never leaves files behind.

Decisions, kept here so there is one place to read them:
- ``audios[i]["path"]`` is ``None`` when ``save_dir`` is None (nothing is written), and for silent
  items (``audios[i]["silent"]`` True), which are never written, like the reference.
- ``audios[i]["tensor"]`` is a CPU float32 torch tensor ``[2, samples]``; a numpy array when torch
  is not installed (the SDK does not require torch). Whatever the stream encoding, chunks are decoded
  back to float32; the tensor is exact only for ``pcm_f32le`` (16-bit PCM and FLAC: within half a
  16-bit step; Opus: lossy). Files on disk follow ``audio_format`` (and for mp3 ``mp3_bitrate`` /
  ``mp3_sample_rate``: an :class:`~acestep_client.audio_io.FileFormat`), not the stream encoding.
- Chunks are kept as they arrived and decoded when the result is built (FLAC/Opus on parallel threads,
  and off the event loop for the asyncio paths: Opus decodes at only ~25x real time); a chunk that does
  not decode to what it announces fails the call with DATA_LOSS.
- The chunks arrive with the request's fades already applied; the item's gain (clip guard and, with
  ``enable_normalization``, peak normalisation to ``normalization_db``) needs the whole item's peak, so it
  comes in ItemResult and multiplies the assembled item here. A gain of 0 is proto3's "unset" and means 1.0.
- ``extra_outputs["lm_metadata"]`` is the LM metadata of the first item (the lowest item_index that
  came), present only if one came; ``extra_outputs["lm_metadata_by_item"]`` lists every item's, indexed
  by item (None where none came): items plan independently and differ.
- ``extra_outputs["warnings"]`` lists what the service did that the request did not spell out (a caption
  cut to the model's window, seeds ignored), as ``{"field", "message"}`` dicts; ``status_message``
  ends with them too. Always present, empty when there were none.
- Errors become ``success=False`` with ``error = "<GRPC_CODE>: <details>"``.
- Nothing the server sends is trusted (:mod:`acestep_client.stream_checks`): a malformed or hostile stream
  (a key that is not an audio key, an inflated length, chunks that do not add up) is ``success=False`` with
  DATA_LOSS naming the item and field. Files are named only after checked keys, directly in ``save_dir``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from acestep_client import errors
from acestep_client.audio_io import FileFormat, write_audio
from acestep_client.constants import CHANNELS, SAMPLE_RATE
from acestep_client.convert import params_from_proto
from acestep_client.proto.acestep.v1 import generation_pb2, orchestrator_pb2
from acestep_client.request import output_frames_limit
from acestep_client.stream_checks import (
    MAX_TIME_COSTS,
    ItemChunks,
    StreamError,
    check_item_index,
    check_item_result,
    check_items,
    output_path,
)
from acestep_client.types import GenerationResult
from acestep_client.wire_audio import WireAudioError, announced_frames, decode_chunks

# The longest item when the request is not known (assemble() called on a bare stream): a request without a source.
DEFAULT_MAX_FRAMES = output_frames_limit(orchestrator_pb2.GenerateMusicRequest())

ProgressCallback = Callable[..., Any]

_ERROR_CODES: list[tuple[type[BaseException], str]] = [
    (errors.InvalidArgument, "INVALID_ARGUMENT"),
    (errors.FailedPrecondition, "FAILED_PRECONDITION"),
    (errors.NotFound, "NOT_FOUND"),
    (errors.ResourceExhausted, "RESOURCE_EXHAUSTED"),
    (errors.Cancelled, "CANCELLED"),
]


def warning_lines(warnings: Iterable[Any]) -> str:
    """Warnings (``Warning`` messages) as status lines, one ``\nwarning (field): message`` each: the form every
    status message of the project uses, so a warning reads the same from generate and the text modes."""
    return "".join(f"\nwarning ({w.field}): {w.message}" for w in warnings)


class CallError(Exception):
    """A failure reported as ``code: details`` (a broken stream, a missing pipeline...), code as gRPC names it."""

    def __init__(self, code: str, details: str):
        self.code = code
        self.details = details
        super().__init__(f"{code}: {details}")


def error_text(exc: BaseException) -> str:
    """``"<CODE>: <details>"`` for a gRPC error, a project error or anything else."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return f"{code.name if code is not None else 'UNKNOWN'}: {details}"
    if isinstance(exc, CallError):
        return str(exc)
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            return f"{code}: {exc}"
    if isinstance(exc, OSError):
        return f"INTERNAL: {type(exc).__name__}: {exc}"
    return f"UNKNOWN: {type(exc).__name__}: {exc}"


def _to_tensor(audio: np.ndarray) -> Any:
    """A torch tensor where torch is importable (the reference's type), else the float32 numpy array:
    a client-only install has no torch (tests/packaging/test_client_only_install.py)."""
    try:
        import torch
    except ImportError:
        return audio
    return torch.from_numpy(audio)


def _lm_metadata(message: generation_pb2.LmMetadata) -> dict[str, Any]:
    return {
        "bpm": message.bpm if message.HasField("bpm") else None,
        "caption": message.caption,
        "duration": message.duration if message.HasField("duration") else None,
        "keyscale": message.keyscale,
        "language": message.language,
        "timesignature": message.timesignature,
    }


def _stage_name(stage: int) -> str:
    try:
        return generation_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()
    except ValueError:  # a stage this SDK does not know (a newer or a broken server)
        return f"stage {stage}"


class StreamAssembler:
    """Collects one stream's events; :meth:`result` builds the GenerationResult and writes files.

    ``max_frames`` bounds each item's length (the request's longest possible output:
    :func:`acestep_client.request.output_frames_limit`); events are checked as they arrive.
    """

    def __init__(
        self,
        progress: ProgressCallback | None = None,
        max_frames: int | None = None,
        paths: dict[str, str | None] | None = None,
    ):
        """``paths``: the request's own src_audio/reference_audio, reported in place of the server's echo."""
        self._progress = progress
        self._paths = paths or {}
        self._max_frames = DEFAULT_MAX_FRAMES if max_frames is None else max_frames
        self._fraction = 0.0
        self._chunks: dict[int, ItemChunks] = {}  # encoded, decoded in result()
        self._items: dict[int, orchestrator_pb2.ItemResult] = {}
        self._lm_metadata: dict[int, dict[str, Any]] = {}  # by item index
        self._time_costs: dict[str, float] = {}
        self._done: orchestrator_pb2.GenerationDone | None = None

    def feed(self, event: orchestrator_pb2.GenerateMusicResponse) -> None:
        """Take one event; raises CallError (DATA_LOSS) for one the SDK refuses."""
        try:
            self._feed(event)
        except (StreamError, WireAudioError) as exc:
            raise CallError("DATA_LOSS", str(exc)) from None

    def _feed(self, event: orchestrator_pb2.GenerateMusicResponse) -> None:
        kind = event.WhichOneof("event")
        if self._done is not None and kind is not None:
            raise StreamError(f"{kind} event after done")
        if kind == "progress":
            self._on_progress(event.progress)
        elif kind == "lm_metadata":
            index = check_item_index("LM metadata", event.lm_metadata.item_index)
            self._lm_metadata.setdefault(index, _lm_metadata(event.lm_metadata))
        elif kind == "audio_chunk":
            chunk = event.audio_chunk
            index = check_item_index(f"audio chunk at frame {chunk.start_frame}", chunk.item_index)
            frames = announced_frames(chunk)
            if frames:  # an empty chunk adds nothing: not kept
                self._chunks.setdefault(index, ItemChunks()).add(chunk, frames, self._max_frames)
        elif kind == "item_result":
            item = event.item_result
            index = check_item_index("item result", item.item_index)
            if index in self._items:
                raise StreamError(f"a second item result for item {index}")
            check_item_result(item, self._max_frames)
            self._items[index] = item
        elif kind == "time_costs":
            for name, seconds in event.time_costs.seconds.items():
                if name in self._time_costs or len(self._time_costs) < MAX_TIME_COSTS:
                    self._time_costs[name] = seconds
        elif kind == "done":
            self._done = event.done

    def _on_progress(self, message: generation_pb2.Progress) -> None:
        fraction = message.fraction if math.isfinite(message.fraction) else 0.0
        self._fraction = max(self._fraction, min(1.0, max(0.0, fraction)))  # never backwards
        if self._progress is not None:
            desc = message.message or _stage_name(message.stage)
            self._progress(self._fraction, desc=desc)

    def finish_progress(self) -> None:
        """Report 1.0 once at the end if the stream's progress stopped short of it."""
        if self._progress is not None and self._fraction < 1.0:
            self._fraction = 1.0
            self._progress(1.0, desc="done")

    def _item_audio(self, item: orchestrator_pb2.ItemResult) -> np.ndarray:
        """The item's float32 [2, frames]: its chunks decoded and laid end to end (checked to tile it), gained."""
        index = item.item_index
        chunks, frames = self._chunks.get(index, ItemChunks()).in_order(index, item.num_frames)
        decoded = decode_chunks(chunks)
        for chunk, audio in zip(chunks, decoded, strict=True):
            if audio.shape != (CHANNELS, announced_frames(chunk)):
                raise StreamError(f"audio chunk of item {index} at frame {chunk.start_frame}: decoded to "
                                  f"{audio.shape}, not the [{CHANNELS}, frames] it announced")
        out = np.concatenate(decoded, axis=1) if decoded else np.zeros((CHANNELS, frames), dtype=np.float32)
        out = out.astype(np.float32, copy=False)
        gain = item.gain if item.gain != 0.0 and math.isfinite(item.gain) else 1.0
        if gain != 1.0:
            out *= np.float32(gain)
        return out

    def _audio_dict(self, item: orchestrator_pb2.ItemResult, audio: np.ndarray) -> dict[str, Any]:
        try:
            params = params_from_proto(item.params).to_dict()
        except errors.InvalidArgument as exc:  # the server's params: not the caller's input, so not INVALID_ARGUMENT
            raise StreamError(f"item {item.item_index}: params: {exc}") from None
        if not item.params.HasField("seed"):
            params["seed"] = int(item.seed)
        params.update(self._paths)
        return {
            "path": None,
            "tensor": _to_tensor(audio),
            "key": item.key,  # checked to be an audio key when it arrived
            "sample_rate": SAMPLE_RATE,  # checked: 48 kHz or unset
            "params": params,
            "silent": bool(item.silent),
        }

    def result(self, save_dir: str | Path | None = None, audio_format: str | FileFormat = "flac") -> GenerationResult:
        """The finished result; raises CallError when the stream was incomplete or inconsistent."""
        try:
            return self._result(save_dir, audio_format)
        except (StreamError, WireAudioError) as exc:
            raise CallError("DATA_LOSS", str(exc)) from None

    def _result(self, save_dir: str | Path | None, audio_format: str | FileFormat) -> GenerationResult:
        if self._done is None:
            raise StreamError("the stream ended without a done event")
        orphans = sorted(set(self._chunks) - set(self._items))
        if orphans:
            raise StreamError(f"audio for item(s) {orphans} without an item result")
        if self._done.num_items and self._done.num_items != len(self._items):
            raise StreamError(f"done announced {self._done.num_items} items, the stream carried {len(self._items)}")
        check_items(sorted(self._items))
        audios = [self._audio_dict(item, self._item_audio(item)) for _, item in sorted(self._items.items())]
        if save_dir is not None:
            _write_all(audios, Path(save_dir), audio_format)
        extra: dict[str, Any] = {"time_costs": dict(self._time_costs)}
        if self._lm_metadata:
            extra["lm_metadata"] = self._lm_metadata[min(self._lm_metadata)]
            size = max(len(audios), max(self._lm_metadata) + 1)
            extra["lm_metadata_by_item"] = [self._lm_metadata.get(i) for i in range(size)]
        warnings = list(self._done.warnings)
        extra["warnings"] = [{"field": w.field, "message": w.message} for w in warnings]
        status = self._done.status_message
        status += warning_lines(w for w in warnings if w.message not in status)
        return GenerationResult(
            audios=audios, status_message=status, extra_outputs=extra, success=True, error=None
        )


def _write_all(audios: list[dict[str, Any]], save_dir: Path, audio_format: str | FileFormat) -> None:
    """Write every non-silent item; on any failure remove what this call wrote, then re-raise."""
    spec = FileFormat.of(audio_format)
    written: list[Path] = []
    try:
        for audio in audios:
            if audio["silent"]:
                continue
            samples = audio["tensor"]
            samples = samples.numpy() if hasattr(samples, "numpy") else samples
            path = write_audio(output_path(save_dir, audio["key"], spec.extension), samples, audio["sample_rate"], spec)
            written.append(path)
            audio["path"] = str(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for audio in audios:
            audio["path"] = None
        raise


# What ends a call with ``success=False`` instead of raising, as the reference's generate_music does.
CALL_FAILURES = (grpc.RpcError, CallError, errors.AceStepError, OSError)


def failed(exc: BaseException) -> GenerationResult:
    """The GenerationResult of a call that failed with ``exc``."""
    text = error_text(exc)
    return GenerationResult(audios=[], status_message=f"Error: {text}", extra_outputs={}, success=False, error=text)


def assemble(
    events: Iterable[orchestrator_pb2.GenerateMusicResponse],
    save_dir: str | Path | None = None,
    audio_format: str | FileFormat = "flac",
    progress: ProgressCallback | None = None,
    *,
    max_frames: int | None = None,
    paths: dict[str, str | None] | None = None,
) -> GenerationResult:
    """Consume a (sync) event stream; gRPC and protocol errors become ``success=False``.

    ``max_frames``: the longest item accepted (``output_frames_limit(request)``; None: 601 s); ``paths``: the
    request's audio paths (``caller_paths(request)``), reported instead of what the server echoes.
    """
    assembler = StreamAssembler(progress, max_frames, paths)
    try:
        for event in events:
            assembler.feed(event)
        result = assembler.result(save_dir, audio_format)
    except CALL_FAILURES as exc:
        return failed(exc)
    finally:
        close = getattr(events, "close", None)  # cancels the RPC when we stopped early
        if close is not None:
            close()
    assembler.finish_progress()
    return result


async def assemble_async(
    events: AsyncIterable[orchestrator_pb2.GenerateMusicResponse],
    save_dir: str | Path | None = None,
    audio_format: str | FileFormat = "flac",
    progress: ProgressCallback | None = None,
    *,
    max_frames: int | None = None,
    paths: dict[str, str | None] | None = None,
) -> GenerationResult:
    """:func:`assemble` for an async event stream (grpc.aio or the in-process pipeline)."""
    assembler = StreamAssembler(progress, max_frames, paths)
    try:
        async for event in events:
            assembler.feed(event)
        # Encoding flac/mp3 takes a while for long batches: keep the event loop free meanwhile.
        result = await asyncio.to_thread(assembler.result, save_dir, audio_format)
    except CALL_FAILURES as exc:
        return failed(exc)
    finally:
        aclose = getattr(events, "aclose", None)  # cancels the RPC when we stopped early
        if aclose is not None:
            await aclose()
    assembler.finish_progress()
    return result
