"""Repaint's waveform splice (upstream 6d467e4, repaint_wav_crossfade_sec as requested): outside the span the
output is the source's own samples, ramped in just outside each edge; window by window it equals the whole."""

from __future__ import annotations

import itertools

import pytest
import torch

from acestep_client.audio_io import read_audio, to_model_audio, write_audio
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import dit_pb2
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from dit_service.edit_options import EditOptions
from dit_service.engine import AudioWindow, ItemDone, SynthesisRequest
from dit_service.output_options import OutputOptions
from dit_service.server import decode_waveform, waveform_bytes
from dit_service.vae_decode import iter_decoded_windows
from dit_service.waveform_splice import WaveformSplice, repaint_splice

RATE = 48_000
RAW = OutputOptions(enable_normalization=False)  # only the clip guard: the streamed samples are the spliced ones


def _signals(total: int, source_len: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    decoded = torch.randn(batch, 2, total, generator=generator)
    source = 0.5 * torch.randn(2, source_len, generator=generator)
    return decoded, source


def _expected(decoded: torch.Tensor, splice: WaveformSplice) -> torch.Tensor:
    """The splice spelled out over the whole signal: weight 1 in the span, 0 outside, ramps just outside."""
    total = splice.source.shape[-1]
    weight = torch.zeros(total)
    weight[splice.start : splice.end] = 1.0
    up = max(splice.start - splice.crossfade, 0)
    weight[up : splice.start] = torch.linspace(0.0, 1.0, splice.start - up + 2)[1:-1]
    down = min(splice.end + splice.crossfade, total)
    weight[splice.end : down] = torch.linspace(1.0, 0.0, down - splice.end + 2)[1:-1]
    out = decoded.clone()
    out[..., :total] = weight * decoded[..., :total] + (1.0 - weight) * splice.source
    return out


def _windows(decoded: torch.Tensor, splice: WaveformSplice, cuts: list[int]) -> torch.Tensor:
    bounds = [0, *cuts, decoded.shape[-1]]
    pieces = [splice.apply(decoded[..., a:b], a) for a, b in itertools.pairwise(bounds)]
    return torch.cat(pieces, dim=-1)


@pytest.mark.parametrize("crossfade", [0, 7, 40])
def test_window_by_window_equals_the_whole_signal(crossfade):
    decoded, source = _signals(1000, 900)
    splice = WaveformSplice(source, 300, 620, crossfade)
    whole = splice.apply(decoded, 0)
    assert torch.equal(whole, _expected(decoded, splice))
    # Cuts inside both ramps, at the span's edges and past the source's end.
    for cuts in ([296, 301, 619, 625, 950], [1, 2, 3, 500], [300, 620], list(range(50, 1000, 50))):
        assert torch.equal(_windows(decoded, splice, cuts), whole)
    assert torch.equal(decoded, _signals(1000, 900)[0])  # the decoded windows are not written to


def test_a_hard_cut_keeps_the_source_outside_and_the_decode_inside_bit_exactly():
    decoded, source = _signals(1000, 1000)
    out = WaveformSplice(source, 300, 620, 0).apply(decoded, 0)
    assert torch.equal(out[..., :300], source[:, :300].expand(2, -1, -1))
    assert torch.equal(out[..., 620:], source[:, 620:].expand(2, -1, -1))
    assert torch.equal(out[..., 300:620], decoded[..., 300:620])


def test_the_crossfade_lies_outside_the_span_and_ramps_monotonically():
    decoded, source = _signals(1000, 1000)
    splice = WaveformSplice(source, 300, 620, 50)
    out = splice.apply(decoded, 0)
    assert torch.equal(out[..., 300:620], decoded[..., 300:620])  # the span is the decoded audio untouched
    assert torch.equal(out[..., :250], source[:, :250].expand(2, -1, -1))
    assert torch.equal(out[..., 670:], source[:, 670:].expand(2, -1, -1))
    pieces = {(a, b): w for a, b, w in splice.segments() if w is not None}
    up, down = pieces[(250, 300)], pieces[(620, 670)]
    assert len(up) == len(down) == 50
    assert bool((up.diff() > 0).all()) and float(up[0]) > 0.0 and float(up[-1]) < 1.0
    assert bool((down.diff() < 0).all()) and float(down[-1]) > 0.0 and float(down[0]) < 1.0
    # A ramp is cut short at the signal's start, as upstream: it spans what is there.
    near = WaveformSplice(source, 20, 620, 50)
    assert next((a, b) for a, b, w in near.segments() if w is not None) == (0, 20)


def test_past_the_source_end_the_decoded_audio_stays():
    decoded, source = _signals(1000, 700)
    out = WaveformSplice(source, 300, 500, 30).apply(decoded, 0)
    assert torch.equal(out[..., 700:], decoded[..., 700:])
    assert torch.equal(out[..., 530:700], source[:, 530:700].expand(2, -1, -1))
    # The span reaching the source's end, from its start: nothing of the source is heard.
    assert torch.equal(WaveformSplice(source, 0, 700, 30).apply(decoded, 0), decoded)


def _request(src: torch.Tensor, **fields) -> SynthesisRequest:
    fields.setdefault("repainting_start", 4.0)
    fields.setdefault("repainting_end", 8.0)
    return SynthesisRequest(task_type="repaint", src_audio=src, seeds=[2], output=RAW, **fields)


def _run(engine, req: SynthesisRequest) -> tuple[torch.Tensor, ItemDone]:
    events = list(engine.synthesize(req))
    windows = sorted((e for e in events if isinstance(e, AudioWindow)), key=lambda e: e.start_sample)
    done = [e for e in events if isinstance(e, ItemDone)]
    return torch.cat([w.pcm for w in windows], dim=-1), done[0]


def test_an_engine_repaint_is_the_source_outside_the_span(turbo_engine, make_audio):
    src = make_audio(12.0)
    audio, done = _run(turbo_engine, _request(src))  # balanced, repaint_wav_crossfade_sec 0: a hard cut
    assert audio.shape == (2, 12 * RATE)
    assert torch.equal(audio[:, : 4 * RATE], src[:, : 4 * RATE])
    assert torch.equal(audio[:, 8 * RATE :], src[:, 8 * RATE :])
    # The streamed samples carry no gain; the final audio is them times ItemDone.gain, the clip guard here.
    assert done.gain == 1.0 / max(float(audio.abs().max()), 1.0)
    # Inside the span: the VAE's decode of the sampled latents, as without a splice.
    latents = turbo_engine.sample_latents(_request(src))
    decoded = torch.cat([a[0] for _, a in iter_decoded_windows(turbo_engine.vae, latents, turbo_engine.hop)], -1)
    torch.testing.assert_close(audio[:, 4 * RATE : 8 * RATE], decoded[:, 4 * RATE : 8 * RATE], atol=1e-6, rtol=0)
    # Aggressive repainting splices nothing: outside the span is the VAE's reconstruction of the source.
    aggressive, _ = _run(turbo_engine, _request(src, edit=EditOptions(repaint_mode="aggressive")))
    assert not torch.allclose(aggressive[:, : 4 * RATE], src[:, : 4 * RATE], atol=1e-3)


def test_streamed_windows_splice_like_the_whole_song(turbo_engine, make_audio):
    """24 s: two VAE windows (cores at frames 0-384 and 384-600); the ramp after 15 s crosses the seam (15.36 s)."""
    src = make_audio(24.0, seed=4)
    req = _request(src, repainting_start=5.0, repainting_end=15.0, edit=EditOptions(repaint_wav_crossfade_sec=0.5))
    audio, _ = _run(turbo_engine, req)
    latents = turbo_engine.sample_latents(req)
    decoded = torch.cat([a for _, a in iter_decoded_windows(turbo_engine.vae, latents, turbo_engine.hop)], -1)
    splice = repaint_splice(req, RATE, turbo_engine.hop)
    assert (splice.start, splice.end, splice.crossfade) == (5 * RATE, 15 * RATE, RATE // 2)
    torch.testing.assert_close(audio, splice.apply(decoded, 0)[0], atol=1e-6, rtol=0)
    assert torch.equal(audio[:, : int(4.5 * RATE)], src[:, : int(4.5 * RATE)])
    assert torch.equal(audio[:, int(15.5 * RATE) :], src[:, int(15.5 * RATE) :])


@pytest.mark.parametrize("encoded", [False, True], ids=["waveform", "latents"])
def test_outpainting_pads_the_source_like_the_latents(turbo_engine, make_audio, encoded):
    """repainting_start -2 s: the output starts with 2 s of new audio, then the source, shifted by 2 s. With
    pre-encoded latents (the gRPC path) the waveform comes in src_waveform and the pad is whole frames."""
    src = make_audio(12.0, seed=1)
    fields = {"repainting_start": -2.0, "repainting_end": 6.0}
    if encoded:
        latents, _ = turbo_engine.encode_audio(src)
        req = _request(None, src_latents=latents, src_waveform=src, **fields)
    else:
        req = _request(src, **fields)
    audio, _ = _run(turbo_engine, req)
    assert audio.shape == (2, 14 * RATE)
    assert torch.equal(audio[:, 8 * RATE :], src[:, 6 * RATE :])
    assert not torch.allclose(audio[:, : 2 * RATE], torch.zeros(2, 2 * RATE), atol=1e-4)  # new audio, not the pad


def test_outpainting_past_the_end_keeps_the_source_before_the_span(turbo_engine, make_audio):
    src = make_audio(10.0, seed=2)
    audio, _ = _run(turbo_engine, _request(src, repainting_start=8.0, repainting_end=14.0))
    assert audio.shape == (2, 14 * RATE)
    assert torch.equal(audio[:, : 8 * RATE], src[:, : 8 * RATE])


def test_only_a_repaint_that_keeps_its_source_splices(make_audio):
    src = make_audio(1.0)
    assert repaint_splice(_request(src), RATE, 1920) is not None
    assert repaint_splice(_request(src, edit=EditOptions(repaint_mode="aggressive")), RATE, 1920) is None
    assert repaint_splice(SynthesisRequest(task_type="cover", src_audio=src), RATE, 1920) is None
    with pytest.raises(InvalidArgument, match=r"^src_waveform: allowed a float tensor"):
        repaint_splice(_request(src, src_waveform=torch.zeros(1, 10)), RATE, 1920)


def test_the_server_takes_the_source_file_as_bytes_within_its_upload_limit():
    data = b"RIFF" + bytes(60)
    request = dit_pb2.SynthesizeRequest(src_waveform=gen_pb2.AudioInput(data=data))
    assert waveform_bytes(request, max_bytes=64) == data
    assert waveform_bytes(dit_pb2.SynthesizeRequest(), max_bytes=64) is None
    with pytest.raises(InvalidArgument, match=r"^src_waveform: allowed at most 63 bytes, got 64$"):
        waveform_bytes(request, max_bytes=63)
    by_path = dit_pb2.SynthesizeRequest(src_waveform=gen_pb2.AudioInput(server_path="song.wav"))
    with pytest.raises(InvalidArgument, match=r"^src_waveform: allowed the file's bytes"):
        waveform_bytes(by_path, max_bytes=64)


def test_the_server_decodes_the_file_as_encode_audio_does(tmp_path, make_audio):
    src = make_audio(1.0)
    path = write_audio(tmp_path / "a.wav", src.numpy(), RATE, "wav")
    assert torch.equal(decode_waveform(path.read_bytes()), torch.from_numpy(to_model_audio(*read_audio(path))))
