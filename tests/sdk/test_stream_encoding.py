"""The SDK side of stream encodings: the option reaches the request, any encoding assembles, bad chunks fail."""

from __future__ import annotations

import numpy as np
import pytest

from acestep_client import AceStepClient, AsyncAceStepClient, RemoteOrchestrator, generate_music
from acestep_client.assemble import assemble
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as gen
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch
from acestep_client.types import GenerationConfig, GenerationParams
from acestep_client.wire_audio import audio_chunk

PARAMS = GenerationParams(caption="ambient piano", bpm=90)
CONFIG = GenerationConfig(batch_size=2)


def test_the_client_option_and_the_per_call_keyword_reach_the_request(server):
    calls = server.service.calls
    with AceStepClient(server.address) as client:
        assert client.generate(PARAMS, CONFIG).success
        assert calls[-1].request.stream_encoding == gen.STREAM_ENCODING_PCM_F32LE  # the default: exact
    with AceStepClient(server.address, stream_encoding="flac") as client:
        assert client.generate(PARAMS, CONFIG).success
        assert calls[-1].request.stream_encoding == gen.STREAM_ENCODING_FLAC
        assert client.generate(PARAMS, CONFIG, stream_encoding="opus").success
        assert calls[-1].request.stream_encoding == gen.STREAM_ENCODING_OPUS
        assert generate_music(client, None, PARAMS, CONFIG, stream_encoding="pcm_s16le").success
        assert calls[-1].request.stream_encoding == gen.STREAM_ENCODING_PCM_S16LE
    assert generate_music(RemoteOrchestrator(server.address, stream_encoding="opus"), None, PARAMS, CONFIG).success
    assert calls[-1].request.stream_encoding == gen.STREAM_ENCODING_OPUS


async def test_the_async_client_takes_the_same_option(server):
    async with AsyncAceStepClient(server.address, stream_encoding="pcm_s16le") as client:
        assert (await client.generate(PARAMS, CONFIG)).success
        assert server.service.calls[-1].request.stream_encoding == gen.STREAM_ENCODING_PCM_S16LE
        assert (await client.generate(PARAMS, CONFIG, stream_encoding="flac")).success
        assert server.service.calls[-1].request.stream_encoding == gen.STREAM_ENCODING_FLAC


def test_unknown_encoding_names_fail_locally_naming_the_option(server):
    with pytest.raises(InvalidArgument, match="stream_encoding: must be one of pcm_f32le, pcm_s16le, flac, opus"):
        AceStepClient(server.address, stream_encoding="mp3")
    with AceStepClient(server.address) as client:
        with pytest.raises(InvalidArgument, match="stream_encoding"):
            client.generate(PARAMS, CONFIG, stream_encoding="wav")
        result = generate_music(client, None, PARAMS, CONFIG, stream_encoding="ogg")
    assert not result.success and result.error.startswith("INVALID_ARGUMENT: stream_encoding: must be one of")
    assert server.service.calls == []  # nothing went on the wire


def _reencoded(events: list[orch.GenerateMusicResponse], encoding: str) -> list[orch.GenerateMusicResponse]:
    """The scripted stream with every chunk re-encoded as a DiT service would send it."""
    out = []
    for event in events:
        if event.WhichOneof("event") == "audio_chunk":
            chunk = event.audio_chunk
            audio = np.frombuffer(chunk.pcm_f32le, "<f4").reshape(-1, 2).T
            event = orch.GenerateMusicResponse(
                audio_chunk=audio_chunk(chunk.item_index, chunk.start_frame, audio, encoding)
            )
        out.append(event)
    return out


@pytest.mark.parametrize("encoding", ["pcm_s16le", "flac", "opus"])
def test_any_encoding_assembles_to_float32_of_the_right_length(kit, encoding):
    result = assemble(_reencoded(kit.script(kit.scripted_request()), encoding))
    assert result.success, result.error
    for i, audio in enumerate(result.audios):
        tensor = audio["tensor"].numpy()
        assert tensor.dtype == np.float32 and tensor.shape == (2, kit.FRAMES[i])
        error = np.abs(tensor - kit.expected_audio(i)).max()
        # The script's raw audio peaks at 0.8 (scale 1); the item gain multiplies the error too.
        bound = 1 / 32768 * kit.GAINS[i] if encoding != "opus" else 0.25 * kit.GAINS[i]
        assert error <= bound, (encoding, i, error)


def test_a_malformed_chunk_is_a_failed_result_not_an_exception(kit):
    events = _reencoded(kit.script(kit.scripted_request()), "flac")
    first = next(e for e in events if e.WhichOneof("event") == "audio_chunk")
    first.audio_chunk.data = first.audio_chunk.data[:100]  # truncated on the way
    result = assemble(events)
    assert not result.success and result.audios == []
    assert result.error.startswith(f"DATA_LOSS: audio chunk of item {first.audio_chunk.item_index} at frame "
                                   f"{first.audio_chunk.start_frame}: is not a readable FLAC/PCM_16 file")
