"""The sync and async clients against a real gRPC server (the scripted test double)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from acestep_client import AceStepClient, AsyncAceStepClient, GenerationConfig, GenerationParams, InvalidArgument
from acestep_client.audio_io import write_audio
from acestep_client.proto.acestep.v1 import generation_pb2 as gen

PARAMS = GenerationParams(caption="ambient piano", bpm=90)


def _check_files(kit, result, save_dir, fmt):
    assert result.success, result.error
    names = sorted(p.name for p in save_dir.iterdir())
    assert names == sorted(f"{a['key']}.{fmt}" for a in result.audios)
    for i, audio in enumerate(result.audios):
        assert audio["path"] == str(save_dir / f"{audio['key']}.{fmt}")
        data, rate = sf.read(audio["path"], dtype="float32", always_2d=True)
        assert rate == 48_000 and data.shape[1] == 2
        expected = kit.expected_audio(i)
        if fmt == "mp3":  # encoder delay and padding: compare length roughly and energy
            assert abs(data.shape[0] - expected.shape[1]) < 4_800
            rms = np.sqrt((data**2).mean())
            assert rms == pytest.approx(np.sqrt((expected**2).mean()), rel=0.2)
        else:
            assert data.shape[0] == expected.shape[1]
            np.testing.assert_allclose(data.T, expected, atol=1e-4 if fmt == "flac" else 1e-7)


@pytest.mark.parametrize("fmt", ["flac", "wav", "mp3"])
def test_sync_generate_writes_the_gained_audio(kit, server, tmp_path, fmt):
    with AceStepClient(server.address) as client:
        result = client.generate(PARAMS, GenerationConfig(audio_format=fmt), save_dir=tmp_path)
    _check_files(kit, result, tmp_path, fmt)
    sent = server.service.calls[0].request
    assert sent.params.caption == "ambient piano" and sent.params.bpm == 90
    assert sent.config.audio_format == gen.AudioFormat.Value(f"AUDIO_FORMAT_{fmt.upper()}")
    assert sent.request_id


async def test_async_generate_writes_files_and_reports_progress(kit, server, tmp_path):
    seen = []
    async with AsyncAceStepClient(server.address) as client:
        result = await client.generate(
            PARAMS, GenerationConfig(audio_format="wav"), save_dir=tmp_path, progress=lambda f, desc: seen.append(f)
        )
    _check_files(kit, result, tmp_path, "wav")
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert result.extra_outputs["lm_metadata"]["bpm"] == 120


def test_sync_stream_yields_the_server_events_in_order(kit, server):
    with AceStepClient(server.address) as client:
        kinds = [event.WhichOneof("event") for event in client.stream(PARAMS, GenerationConfig())]
    assert kinds == [e.WhichOneof("event") for e in kit.script(kit.scripted_request())]
    assert kinds[-1] == "done"


async def test_async_stream_yields_the_server_events(kit, server):
    async with AsyncAceStepClient(server.address) as client:
        events = [event async for event in client.stream(PARAMS, GenerationConfig())]
    expected = [e.WhichOneof("event") for e in kit.script(kit.scripted_request())]
    assert [e.WhichOneof("event") for e in events] == expected
    assert events[-1].done.num_items == 2


def test_server_error_gives_a_failed_result_and_no_files(kit, server, tmp_path):
    params = GenerationParams(caption="abort")
    with AceStepClient(server.address) as client:
        result = client.generate(params, GenerationConfig(), save_dir=tmp_path)
    assert result.success is False and result.audios == []
    assert result.error == f"INVALID_ARGUMENT: {kit.ABORT_DETAILS}"
    assert list(tmp_path.iterdir()) == []


async def test_async_server_error_gives_a_failed_result_and_no_files(kit, server, tmp_path):
    async with AsyncAceStepClient(server.address) as client:
        result = await client.generate(GenerationParams(caption="abort"), GenerationConfig(), save_dir=tmp_path)
    assert result.success is False and result.error.startswith("INVALID_ARGUMENT: ")
    assert list(tmp_path.iterdir()) == []


def test_sync_stream_raises_the_grpc_error(server):
    import grpc

    with AceStepClient(server.address) as client, pytest.raises(grpc.RpcError) as info:
        list(client.stream(GenerationParams(caption="abort"), GenerationConfig()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_truncated_stream_is_not_a_success(server, tmp_path):
    with AceStepClient(server.address) as client:
        result = client.generate(GenerationParams(caption="no-done"), GenerationConfig(), save_dir=tmp_path)
    assert not result.success and result.error.startswith("DATA_LOSS")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_failed_result(tmp_path):
    with AceStepClient("127.0.0.1:1", timeout=5) as client:
        result = client.generate(PARAMS, GenerationConfig(), save_dir=tmp_path)
    assert not result.success and result.error.split(":")[0] in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def test_api_key_reaches_the_server(server):
    with AceStepClient(server.address, api_key="s3cret") as client:
        assert client.generate(PARAMS, GenerationConfig()).success
    with AceStepClient(server.address) as client:
        assert client.generate(PARAMS, GenerationConfig()).success
    assert server.service.calls[0].metadata.get("x-api-key") == "s3cret"
    assert "x-api-key" not in server.service.calls[1].metadata


async def test_async_api_key_reaches_the_server(server):
    async with AsyncAceStepClient(server.address, api_key="k-async") as client:
        assert (await client.generate(PARAMS, GenerationConfig())).success
    assert server.service.calls[0].metadata.get("x-api-key") == "k-async"


@pytest.mark.parametrize(
    ("params", "config", "field"),
    [
        (GenerationParams(caption="x", bpm=12), GenerationConfig(), "bpm"),
        (GenerationParams(), GenerationConfig(), "caption"),
        (GenerationParams(caption="x"), GenerationConfig(batch_size=9), "batch_size"),
        (GenerationParams(caption="x"), GenerationConfig(audio_format="ogg"), "audio_format"),
        (GenerationParams(task_type="cover", caption="x", src_audio="/nonexistent.wav"), GenerationConfig(),
         "src_audio"),
    ],
)
async def test_bad_input_fails_locally_before_any_call(server, tmp_path, params, config, field):
    with AceStepClient(server.address) as client:
        with pytest.raises(InvalidArgument) as info:
            client.generate(params, config, save_dir=tmp_path)
        assert info.value.field == field
        with pytest.raises(InvalidArgument):
            client.stream(params, config)  # eager: raises at the call, not on first next()
    async with AsyncAceStepClient(server.address) as client:
        with pytest.raises(InvalidArgument):
            await client.generate(params, config, save_dir=tmp_path)
        with pytest.raises(InvalidArgument):
            client.stream(params, config)
    assert server.service.calls == []
    assert list(tmp_path.iterdir()) == []


def test_uploads_travel_as_bytes_with_their_format(kit, server, tmp_path):
    src = write_audio(tmp_path / "in" / "source.wav", kit.raw_audio(0), 48_000, "wav")
    ref = write_audio(tmp_path / "in" / "ref.flac", kit.raw_audio(1), 48_000, "flac")
    params = GenerationParams(task_type="cover", caption="jazz", src_audio=str(src), reference_audio=str(ref))
    with AceStepClient(server.address) as client:
        assert client.generate(params, GenerationConfig()).success
    sent = server.service.calls[0].request
    assert sent.src_audio.data == src.read_bytes()
    assert sent.src_audio.format == gen.AUDIO_FORMAT_WAV and sent.src_audio.filename == "source.wav"
    assert sent.reference_audio.data == ref.read_bytes()
    assert sent.reference_audio.format == gen.AUDIO_FORMAT_FLAC
    assert sent.params.src_audio == str(src)


def test_an_upload_that_is_not_audio_is_rejected_locally(server, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not audio")
    with AceStepClient(server.address) as client, pytest.raises(InvalidArgument) as info:
        client.generate(GenerationParams(task_type="cover", caption="x", src_audio=str(junk)), GenerationConfig())
    assert info.value.field == "src_audio"
    assert server.service.calls == []


def test_uploads_over_the_message_limit_are_rejected_locally(server, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF\0\0\0\0WAVE" + b"\0" * (1024 * 1024 + 10))
    with AceStepClient(server.address, max_message_mb=1) as client, pytest.raises(InvalidArgument) as info:
        client.generate(GenerationParams(task_type="cover", caption="x", src_audio=str(big)), GenerationConfig())
    assert info.value.field == "src_audio" and "limit" in str(info.value)


def test_mtls_needs_key_and_chain_together():
    with pytest.raises(ValueError, match="both"):
        AceStepClient("127.0.0.1:1", private_key=b"key")
