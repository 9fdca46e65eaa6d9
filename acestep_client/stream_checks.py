"""What the SDK accepts from a GenerateMusic stream: every field a server sends is untrusted.

A server (or anything on the way) can put any value in any field. Each event is checked against what the
API can produce before it is kept, before anything is allocated from it and before a file is named after
it, so a malformed or hostile stream ends the call with ``success=False`` (DATA_LOSS, saying which item and
field) instead of an exception, a huge allocation or a file outside ``save_dir``:

- item indices in 0-7 (the API's largest batch); one ItemResult per item; the items 0..n-1 all present;
- keys exactly :func:`~acestep_client.keys.audio_key`'s form, the only text an output file is named after,
  and the written path checked to sit directly in ``save_dir`` once resolved;
- audio at 48 kHz in stereo (0 reads as those), chunks whose payload holds what they announce
  (:func:`~acestep_client.wire_audio.announced_frames`);
- at most ``max_frames`` per item (the longest output the request can produce, see
  :func:`~acestep_client.request.output_frames_limit`), and at most its float32 size in kept bytes (plus a
  little per chunk), so neither a big number nor a flood of tiny chunks can grow memory;
- an item's chunks tile 0..num_frames exactly: no overlap, no gap, nothing past the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from acestep_client.constants import BATCH_SIZE_RANGE, CHANNELS, SAMPLE_RATE
from acestep_client.keys import AUDIO_KEY_FORM, is_audio_key
from acestep_client.proto.acestep.v1 import generation_pb2, orchestrator_pb2

MAX_ITEMS = BATCH_SIZE_RANGE[1]
# What each kept chunk costs beyond its payload (the message object), charged against the item's budget.
CHUNK_OVERHEAD_BYTES = 512
BUDGET_ALLOWANCE_BYTES = 16 * 1024 * 1024
MAX_TIME_COSTS = 64  # distinct time-cost names kept (the services send about ten)


class StreamError(Exception):
    """A stream event the SDK refuses; :mod:`acestep_client.assemble` reports it as DATA_LOSS."""


def shown(text: str, limit: int = 48) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters (a key may be 10,000 of them)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_item_index(what: str, index: int) -> int:
    if not 0 <= index < MAX_ITEMS:
        raise StreamError(f"{what} for item {index}: item indices run 0-{MAX_ITEMS - 1}")
    return index


def check_item_result(item: orchestrator_pb2.ItemResult, max_frames: int) -> None:
    """The ItemResult's own fields: its key (a safe file name), length and sample rate."""
    index = item.item_index
    if not is_audio_key(item.key):
        raise StreamError(f"item {index}: the server's key {shown(item.key)} is not an audio key ({AUDIO_KEY_FORM}); "
                          "no file is named after it")
    if not 0 <= item.num_frames <= max_frames:
        raise StreamError(f"item {index}: num_frames {item.num_frames} is outside 0-{max_frames} "
                          f"({max_frames / SAMPLE_RATE:g} s, the longest audio this request can produce)")
    if item.sample_rate_hz not in (0, SAMPLE_RATE):
        raise StreamError(f"item {index}: sample rate {item.sample_rate_hz} Hz, the API's audio is at {SAMPLE_RATE} Hz")


@dataclass
class ItemChunks:
    """One item's kept chunks as (start_frame, frames, chunk), with what they add up to so far."""

    chunks: list[tuple[int, int, generation_pb2.AudioChunk]] = field(default_factory=list)
    frames: int = 0
    cost: int = 0

    def add(self, chunk: generation_pb2.AudioChunk, frames: int, max_frames: int) -> None:
        """Keep a chunk of ``frames`` (announced_frames' answer); refuse one that cannot fit the item."""
        where = f"audio chunk of item {chunk.item_index} at frame {chunk.start_frame}"
        start = chunk.start_frame
        if not 0 <= start <= max_frames - frames:
            raise StreamError(f"{where}: its {frames} frames do not fit in 0-{max_frames} "
                              f"({max_frames / SAMPLE_RATE:g} s, the longest audio this request can produce)")
        self.frames += frames
        if self.frames > max_frames:
            raise StreamError(f"item {chunk.item_index}: its chunks carry more than {max_frames} frames (they overlap)")
        self.cost += len(chunk.pcm_f32le) + len(chunk.data) + CHUNK_OVERHEAD_BYTES
        if self.cost > max_frames * CHANNELS * 4 + BUDGET_ALLOWANCE_BYTES:
            raise StreamError(f"item {chunk.item_index}: {len(self.chunks) + 1} chunks take {self.cost} bytes, more "
                              f"than {max_frames} frames of float32 audio")
        self.chunks.append((start, frames, chunk))

    def in_order(self, index: int, num_frames: int) -> tuple[list[generation_pb2.AudioChunk], int]:
        """The chunks by start frame and the item's length; raises unless they tile 0..num_frames exactly
        (``num_frames`` 0: an older server that did not set it, the chunks then say the length)."""
        ordered = sorted(self.chunks, key=lambda entry: entry[0])
        position = 0
        for start, frames, _ in ordered:
            if start > position:
                raise StreamError(f"item {index}: audio frames {position}-{start} never arrived")
            if start < position:
                raise StreamError(f"item {index}: audio chunks overlap at frame {start}")
            position = start + frames
        if num_frames and position > num_frames:
            raise StreamError(f"item {index}: audio runs to frame {position}, past its num_frames {num_frames}")
        if num_frames and position < num_frames:
            raise StreamError(f"item {index}: audio frames {position}-{num_frames} never arrived")
        return [chunk for _, _, chunk in ordered], position


def check_items(indices: list[int]) -> None:
    """The item results must be those of items 0..n-1, n >= 1 (what any batch gives)."""
    if not indices:
        raise StreamError("the stream carried no item results")
    if indices != list(range(len(indices))):
        raise StreamError(f"item results for items {indices}: expected items 0-{len(indices) - 1}")


def output_path(save_dir: Path, key: str, extension: str) -> Path:
    """``save_dir / "<key>.<extension>"``, refused unless the key is an audio key and the path, resolved, sits
    directly in the resolved ``save_dir`` (the key check alone already ensures it; this states it)."""
    if not is_audio_key(key):
        raise StreamError(f"the key {shown(key)} is not an audio key ({AUDIO_KEY_FORM}); no file is named after it")
    name = f"{key}.{extension}"
    path = save_dir / name
    root = save_dir.resolve()
    if path.name != name or path.parent.resolve() != root:
        raise StreamError(f"{shown(name)} would not be written directly in {root}")
    return path
