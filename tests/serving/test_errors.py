"""Status details stay short enough to travel, and a failed call's frames let go of what they held."""

from __future__ import annotations

import gc
import weakref

import grpc

from acestep_client.errors import InvalidArgument
from acestep_serving.errors import MAX_DETAILS_BYTES, release_frames, status_for


def test_a_long_message_is_cut_on_a_character_boundary_and_says_so():
    code, details = status_for(InvalidArgument("caption", "🎵" * 10_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("caption: 🎵") and details.endswith("more characters cut)")
    assert len(details.encode()) <= MAX_DETAILS_BYTES
    assert status_for(InvalidArgument("bpm", "must be between 30 and 300, got 12"))[1] == \
        "bpm: must be between 30 and 300, got 12"


class _Buffer:
    """Stands in for an upload's samples: something big a failed call's frame holds."""


def _fail_holding(buffer_ref: list) -> None:
    buffer = _Buffer()
    buffer_ref.append(weakref.ref(buffer))

    def deeper(held: _Buffer) -> None:
        raise RuntimeError("the VAE failed")

    deeper(buffer)


def test_released_frames_free_what_the_failed_call_held_without_a_collection():
    refs: list = []
    gc.disable()  # what is freed here is freed by release_frames, not by the collector
    try:
        try:
            _fail_holding(refs)
        except RuntimeError as exc:
            error = exc
        assert refs[0]() is not None  # the traceback keeps the frame, and the buffer, alive
        release_frames(error)
        assert refs[0]() is None
    finally:
        gc.enable()
