"""A hostile MusicGenerationService: the SDK trusts no field a server sends.

A real gRPC server on 127.0.0.1 streams crafted events (the conftest's valid script, one field broken) to the
public entry points: ``AceStepClient.generate``, ``generate_music`` (client and address handlers),
``AsyncAceStepClient.generate`` and ``acestep generate --target``. Each must return ``success=False`` with a
DATA_LOSS error naming the problem, raise nothing, log no traceback, allocate nothing an inflated number asks
for, and write no file anywhere: ``save_dir`` is ``tmp_path/work/out`` and the whole of ``tmp_path`` (where
``../../x`` and the absolute keys point) must be unchanged, ``/.wav`` (where the key ``/`` pointed) absent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import tracemalloc
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from acestep_client import AceStepClient, AsyncAceStepClient, GenerationConfig, GenerationParams, cli, generate_music
from acestep_client.assemble import assemble
from acestep_client.constants import SAMPLE_RATE
from acestep_client.proto.acestep.v1 import generation_pb2 as gen
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch
from acestep_client.proto.acestep.v1 import orchestrator_pb2_grpc as orch_grpc
from acestep_client.request import SOURCE_LENGTH_SLACK, output_frames_limit
from acestep_client.wire_audio import audio_chunk

Events = list[orch.GenerateMusicResponse]
CONFIG = GenerationConfig(audio_format="wav")
ROOT_TARGET = Path("/.wav")  # where the key "/" wrote before keys were checked
MEMORY_LIMIT = 64 * 1024 * 1024  # peak traced allocation of one refused call; the valid script needs ~1 MiB


class HostileService(orch_grpc.MusicGenerationServiceServicer):
    """Streams whatever was registered under the request's caption, then ends the call normally."""

    def __init__(self) -> None:
        self.streams: dict[str, Events] = {}
        self._names = itertools.count()
        self._lock = threading.Lock()

    def register(self, events: Events) -> str:
        with self._lock:
            caption = f"hostile-{next(self._names)}"
            self.streams[caption] = events
        return caption

    def GenerateMusic(self, request, context):
        yield from self.streams[request.params.caption]


@pytest.fixture(scope="module")
def hostile():
    service = HostileService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    orch_grpc.add_MusicGenerationServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    service.address = f"127.0.0.1:{port}"
    yield service
    server.stop(grace=None)


def _sync_client(address: str, caption: str, save_dir: Path):
    with AceStepClient(address) as client:
        return client.generate(GenerationParams(caption=caption), CONFIG, save_dir=save_dir)


def _generate_music_client(address: str, caption: str, save_dir: Path):
    with AceStepClient(address) as client:
        return generate_music(client, None, GenerationParams(caption=caption), CONFIG, save_dir)


def _generate_music_address(address: str, caption: str, save_dir: Path):
    return generate_music(address, None, GenerationParams(caption=caption), CONFIG, save_dir)


def _async_client(address: str, caption: str, save_dir: Path):
    async def run():
        async with AsyncAceStepClient(address) as client:
            return await client.generate(GenerationParams(caption=caption), CONFIG, save_dir=save_dir)

    return asyncio.run(run())


CALLS: dict[str, Callable] = {
    "AceStepClient.generate": _sync_client,
    "generate_music(client)": _generate_music_client,
    "generate_music(address)": _generate_music_address,
    "AsyncAceStepClient.generate": _async_client,
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _refused(call: Callable, address: str, caption: str, tmp_path: Path, caplog, capsys):
    """Run ``call``; assert it failed cleanly and changed nothing on disk; return its error text."""
    save_dir = tmp_path / "work" / "out"
    save_dir.parent.mkdir(parents=True)
    before = _snapshot(tmp_path)
    root_before = ROOT_TARGET.exists()
    caplog.clear()
    tracemalloc.start()
    try:
        result = call(address, caption, save_dir)  # an exception here fails the test
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        if ROOT_TARGET.exists() and not root_before:
            ROOT_TARGET.unlink()  # a regression must not leave it behind
            pytest.fail("the key '/' wrote /.wav")
    assert result.success is False and result.audios == []
    assert result.error.startswith("DATA_LOSS: "), result.error
    assert result.status_message == f"Error: {result.error}"
    assert _snapshot(tmp_path) == before  # nothing written: not in save_dir, not beside it, not above it
    assert not save_dir.exists()
    assert peak < MEMORY_LIMIT, f"peak {peak} bytes"
    # asyncio's own "Event loop is closed" from grpc.aio's poller (grpc/grpc#34139: many loops in one process, as
    # here with asyncio.run per call) is grpc's noise, not the SDK's; every other logger must stay quiet.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name != "asyncio"]
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return result.error


def _valid(kit) -> Events:
    return kit.script(kit.scripted_request())


def _items(events: Events) -> list[orch.ItemResult]:
    return [e.item_result for e in events if e.WhichOneof("event") == "item_result"]


def _chunks(events: Events) -> list[gen.AudioChunk]:
    return [e.audio_chunk for e in events if e.WhichOneof("event") == "audio_chunk"]


def _item0(events: Events) -> orch.ItemResult:
    return next(item for item in _items(events) if item.item_index == 0)


# ---- keys: the only text an output file is named after ---------------------------------------------------------

VALID_KEY = "0123abcd-4567-89ef-0123-456789abcdef"
HOSTILE_KEYS = {
    "parent": "../../x",
    "absolute": "{tmp}/abs/path",
    "root": "/",
    "dotdot": "..",
    "subdir": "a/b",
    "empty": "",
    "10000 chars": "k" * 10_000,
    "36 chars of ../": "../" * 11 + "xyz",
    "backslashes": "..\\..\\x",
    "trailing newline": VALID_KEY + "\n",
    "uppercase": VALID_KEY.upper(),
    "nul byte": VALID_KEY[:-1] + "\0",
}


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
@pytest.mark.parametrize("name", list(HOSTILE_KEYS), ids=list(HOSTILE_KEYS))
def test_an_unsafe_key_fails_the_call_and_writes_nothing(kit, hostile, tmp_path, caplog, capsys, name, call):
    key = HOSTILE_KEYS[name].replace("{tmp}", str(tmp_path))
    events = _valid(kit)
    _item0(events).key = key  # item 1's key stays valid: nothing of it may be written either
    error = _refused(CALLS[call], hostile.address, hostile.register(events), tmp_path, caplog, capsys)
    assert "item 0: the server's key" in error and "is not an audio key" in error
    assert len(error) < 400  # the 10,000-character key is cut in the message
    if name == "absolute":
        assert not (tmp_path / "abs").exists()


def test_the_harness_sees_files_a_valid_stream_writes(kit, hostile, tmp_path):
    """The control: the same server and save_dir with the valid script writes both items, there only."""
    save_dir = tmp_path / "work" / "out"
    result = _sync_client(hostile.address, hostile.register(_valid(kit)), save_dir)
    assert result.success, result.error
    assert sorted(_snapshot(tmp_path)) == ["work", "work/out", *sorted(f"work/out/{a['key']}.wav"
                                                                      for a in result.audios)]


# ---- malformed streams -----------------------------------------------------------------------------------------

def _num_frames_1e12(events):
    _item0(events).num_frames = 10**12
    return "num_frames 1000000000000 is outside"


def _num_frames_600s_of_missing_audio(events):
    _item0(events).num_frames = 600 * SAMPLE_RATE  # within the bound: refused because the audio never came
    return "never arrived"


def _start_frame_1e12(events):
    _chunks(events)[0].start_frame = 10**12
    return "do not fit in 0-"


def _negative_start_frame(events):
    _chunks(events)[0].start_frame = -5
    return "do not fit in 0-"


def _ragged_bytes(events):
    chunk = _chunks(events)[0]
    chunk.pcm_f32le = chunk.pcm_f32le[:-3]
    return "are not whole frames"


def _mono_chunk(events):
    chunk = _chunks(events)[0]
    mono = np.frombuffer(chunk.pcm_f32le, "<f4").reshape(-1, 2)[:, 0]
    chunk.channels, chunk.pcm_f32le = 1, mono.tobytes()
    return "announces 1 channels, the item's audio has 2"


def _channels_2e31(events):
    chunk = _chunks(events)[0]
    chunk.channels, chunk.pcm_f32le = 2**31 - 1, b""
    return "announces 2147483647 channels"


def _chunk_item_index_huge(events):
    _chunks(events)[0].item_index = 2**31 - 1
    return "for item 2147483647: item indices run 0-7"


def _item_result_index_negative(events):
    _item0(events).item_index = -1
    return "item result for item -1"


def _lm_metadata_index_1e9(events):
    next(e for e in events if e.WhichOneof("event") == "lm_metadata").lm_metadata.item_index = 10**9
    return "LM metadata for item 1000000000"


def _overlapping_chunks(events):
    at = next(i for i, e in enumerate(events) if e.WhichOneof("event") == "audio_chunk")
    events.insert(at, events[at])  # the same chunk twice
    return "overlap at frame"


def _chunk_past_num_frames(events):
    _item0(events).num_frames -= 100
    return "past its num_frames"


def _gap(events):
    at = next(i for i, e in enumerate(events)
              if e.WhichOneof("event") == "audio_chunk" and e.audio_chunk.item_index == 1 and e.audio_chunk.start_frame)
    del events[at]
    return "never arrived"


def _done_counts_three(events):
    events[-1].done.num_items = 3
    return "done announced 3 items, the stream carried 2"


def _duplicate_item_result(events):
    at = next(i for i, e in enumerate(events) if e.WhichOneof("event") == "item_result")
    events.insert(at, events[at])
    return "a second item result for item"


def _items_not_0_to_n(events):
    for item in _items(events):
        item.item_index = 5 if item.item_index == 1 else item.item_index
    for chunk in _chunks(events):
        chunk.item_index = 5 if chunk.item_index == 1 else chunk.item_index
    return "item results for items [0, 5]: expected items 0-1"


def _no_items(events):
    del events[:-1]
    events[-1].done.num_items = 0
    return "the stream carried no item results"


def _item_sample_rate(events):
    _item0(events).sample_rate_hz = 7
    return "sample rate 7 Hz"


def _chunk_sample_rate(events):
    _chunks(events)[0].sample_rate_hz = 96_000
    return "announces 96000 Hz"


def _unknown_encoding(events):
    _chunks(events)[0].encoding = 99
    return "unknown encoding 99"


def _flac_payload_for_one_frame(events):
    chunk = _chunks(events)[0]
    chunk.Clear()
    chunk.item_index, chunk.start_frame, chunk.encoding, chunk.num_frames = 0, 0, gen.STREAM_ENCODING_FLAC, 1
    chunk.data = b"\0" * 200_000
    return "bytes of flac for 1 frames"


def _flac_without_num_frames(events):
    chunk = _chunks(events)[0]
    encoded = audio_chunk(chunk.item_index, chunk.start_frame,
                          np.frombuffer(chunk.pcm_f32le, "<f4").reshape(-1, 2).T, "flac")
    encoded.num_frames = 0
    chunk.CopyFrom(encoded)
    return "a flac chunk must announce its num_frames"


def _flac_longer_than_announced(events):
    chunk = _chunks(events)[0]
    announced = chunk.num_frames or len(chunk.pcm_f32le) // 8
    longer = np.zeros((2, announced + SAMPLE_RATE), np.float32)  # its header says 1 s more than announced
    encoded = audio_chunk(chunk.item_index, chunk.start_frame, longer, "flac")
    encoded.num_frames = announced
    chunk.CopyFrom(encoded)
    return f"announces {announced} frames, its flac data holds {announced + 1}"


def _unknown_task_type_in_params(events):
    _item0(events).params.task_type = 99
    return "item 0: params: task_type: unknown TaskType value 99"


def _event_after_done(events):
    events.append(events[0])
    return "progress event after done"


MALFORMED = {f.__name__.removeprefix("_"): f for f in (
    _num_frames_1e12, _num_frames_600s_of_missing_audio, _start_frame_1e12, _negative_start_frame, _ragged_bytes,
    _mono_chunk, _channels_2e31, _chunk_item_index_huge, _item_result_index_negative, _lm_metadata_index_1e9,
    _overlapping_chunks, _chunk_past_num_frames, _gap, _done_counts_three, _duplicate_item_result,
    _items_not_0_to_n, _no_items, _item_sample_rate, _chunk_sample_rate, _unknown_encoding,
    _flac_payload_for_one_frame, _flac_without_num_frames, _flac_longer_than_announced,
    _unknown_task_type_in_params, _event_after_done,
)}


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_stream_is_a_failed_result(kit, hostile, tmp_path, caplog, capsys, case, call):
    events = _valid(kit)
    expected = MALFORMED[case](events)
    error = _refused(CALLS[call], hostile.address, hostile.register(events), tmp_path, caplog, capsys)
    assert expected in error, error


def test_an_unknown_progress_stage_is_shown_by_number_not_raised(kit, hostile, tmp_path):
    events = _valid(kit)
    events.insert(0, orch.GenerateMusicResponse(progress=gen.Progress(stage=99, fraction=0.01)))
    seen = []
    with AceStepClient(hostile.address) as client:
        result = client.generate(GenerationParams(caption=hostile.register(events)), CONFIG,
                                 progress=lambda fraction, desc: seen.append(desc))
    assert result.success, result.error
    assert seen[0] == "stage 99"


def test_a_flood_of_tiny_compressed_chunks_stops_at_the_items_byte_budget(kit):
    """Each chunk alone is within bounds (1 frame, 64 KiB of FLAC); together they pass the float32 size of the
    longest item, and the call stops there instead of keeping them all."""
    events = _valid(kit)
    flood = [orch.GenerateMusicResponse(audio_chunk=gen.AudioChunk(
        item_index=0, start_frame=frame, encoding=gen.STREAM_ENCODING_FLAC, num_frames=1, data=b"\0" * 65_000))
        for frame in range(400)]
    result = assemble(flood + events, max_frames=4800)
    assert not result.success and result.error.startswith("DATA_LOSS: item 0: ")
    assert "chunks take" in result.error and "more than 4800 frames of float32 audio" in result.error


def test_a_stream_over_the_requests_length_is_refused_before_decoding(kit):
    assert assemble(_valid(kit), max_frames=kit.FRAMES[0]).success  # the longest item exactly at the bound
    events = _valid(kit)
    result = assemble(events, max_frames=kit.FRAMES[0] - 1)
    assert not result.success and f"frames do not fit in 0-{kit.FRAMES[0] - 1} " in result.error


def test_the_length_bound_follows_the_request(tmp_path):
    """600 s (+1) without a source; with one, its length or a 1200 s repaint end, plus 600 s of lead-in."""
    assert output_frames_limit(orch.GenerateMusicRequest()) == 601 * SAMPLE_RATE
    for seconds, expected in ((7, 1801), (1500, 1500 * SOURCE_LENGTH_SLACK + 601)):
        source = tmp_path / f"{seconds}.flac"
        sf.write(source, np.zeros((seconds * 8000, 1), np.int16), 8000, format="FLAC")  # 8 kHz mono: small
        request = orch.GenerateMusicRequest(src_audio=gen.AudioInput(data=source.read_bytes()))
        assert output_frames_limit(request) == pytest.approx(expected * SAMPLE_RATE, abs=1)
    unread = orch.GenerateMusicRequest(src_audio=gen.AudioInput(server_path="/srv/song.flac"))
    assert output_frames_limit(unread) == 1801 * SAMPLE_RATE


# ---- the CLI: writes sidecars too ------------------------------------------------------------------------------

def test_the_cli_refuses_an_unsafe_key_and_writes_nothing(kit, hostile, tmp_path, capsys):
    events = _valid(kit)
    _item0(events).key = "../../x"
    out = tmp_path / "work" / "out"
    out.parent.mkdir(parents=True)
    before = _snapshot(tmp_path)
    code = cli.main(["generate", "--caption", hostile.register(events), "--audio-format", "wav", "--out", str(out),
                     "--target", hostile.address, "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "DATA_LOSS: item 0: the server's key '../../x' is not an audio key" in captured.err
    assert "Traceback" not in captured.out + captured.err
    assert _snapshot(tmp_path) == before


def test_results_report_the_callers_paths_never_the_servers_echo(kit, hostile, tmp_path, capsys):
    """A server's params may name any "local" path (a sidecar fed back with --from-json uploads the files it
    names): results and sidecars keep the request's own src_audio/reference_audio, and the CLI does not crash."""
    events = _valid(kit)
    _item0(events).params.src_audio = "no\0such"
    _item0(events).params.reference_audio = "/home/victim/.ssh/id_rsa"
    out = tmp_path / "out"
    code = cli.main(["generate", "--caption", hostile.register(events), "--out", str(out),
                     "--target", hostile.address, "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    sidecar = json.loads((out / f"{_item0(events).key}.json").read_text())
    assert sidecar["src_audio"] is None and sidecar["reference_audio"] is None  # the request named none
    assert sorted(p.parent for p in tmp_path.rglob("*.*")) == [out] * 4  # two audio files, two sidecars


def test_server_text_cannot_drive_the_terminal(kit, hostile, tmp_path, capsys):
    """Escape sequences in a server's progress and status text reach the terminal as U+FFFD, never raw."""
    events = _valid(kit)
    for event in events:
        if event.WhichOneof("event") == "progress":
            event.progress.message = "\x1b]0;pwned\x07\x1b[2J"
        elif event.WhichOneof("event") == "done":
            event.done.status_message = "done \x9b31m"
    code = cli.main(["generate", "--caption", hostile.register(events), "--out", str(tmp_path / "out"),
                     "--target", hostile.address])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    shown = captured.out + captured.err
    assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown
    assert "\ufffd]0;pwned" in shown and "done \ufffd31m" in shown
