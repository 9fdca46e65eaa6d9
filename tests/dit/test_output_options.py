"""Output post-processing on the DiT side, streamed: latent shift/rescale before the VAE, fades per window,
normalisation as the item's gain. Checked against upstream's order (clip guard, normalise, fade) composed here
on the raw audio of the same seed."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from acestep_client.errors import InvalidArgument
from dit_service.engine import SynthesisRequest
from dit_service.output_options import Fades, OutputOptions
from dit_service.vae_decode import iter_decoded_windows

RATE = 48_000
RAW = OutputOptions(enable_normalization=False)  # the clip guard only


def _upstream_post(raw: torch.Tensor, db: float, fade_in: int, fade_out: int) -> torch.Tensor:
    """Upstream's chain on one item [2, n]: divide by the peak if it clips, peak-normalise to db, linear fades."""
    audio = raw / max(float(raw.abs().max()), 1.0)
    audio = audio * (10 ** (db / 20) / float(audio.abs().max()))
    n = audio.shape[-1]
    if fade_in:
        audio[..., :fade_in] *= torch.linspace(0.0, 1.0, fade_in)
    if fade_out:
        audio[..., n - fade_out:] *= torch.linspace(1.0, 0.0, fade_out)
    return audio


def test_fades_applied_window_by_window_equal_the_whole_item_ramps():
    total, fade_in, fade_out = 10_000, 3_001, 2_500
    whole = torch.ones(total)
    whole[:fade_in] *= torch.linspace(0.0, 1.0, fade_in)
    whole[total - fade_out:] *= torch.linspace(1.0, 0.0, fade_out)
    fades = Fades(total, fade_in, fade_out)
    for cut in ([0, total], [0, 1, 2_999, 3_001, 7_000, 7_499, 7_500, total], [*range(0, total, 777), total]):
        pieces = [fades.apply(torch.ones(2, end - start), start) for start, end in itertools.pairwise(cut)]
        streamed = torch.cat(pieces, dim=-1)
        assert torch.allclose(streamed, whole.expand(2, -1), atol=1e-7)
    assert fades.window(4_000, 3_000) is None  # the middle streams untouched
    overlap = Fades(100, 80, 80).window(0, 100)  # both ramps on the same samples multiply, as upstream's two passes
    expected = torch.ones(100)
    expected[:80] *= torch.linspace(0.0, 1.0, 80)
    expected[20:] *= torch.linspace(1.0, 0.0, 80)
    assert torch.allclose(overlap, expected, atol=1e-7)


def test_fade_lengths_are_upstreams_rounding_and_are_cut_to_the_item():
    fades = OutputOptions(fade_in_duration=0.01, fade_out_duration=20e-6).fades(48_000, RATE)
    assert (fades.fade_in, fades.fade_out) == (480, 1)  # round(seconds * rate)
    assert OutputOptions(fade_in_duration=10.0).fades(1_000, RATE).fade_in == 1_000
    assert OutputOptions().fades(48_000, RATE) is None


def test_gain_is_the_clip_guard_times_the_normalisation():
    target = 10 ** (-1 / 20)
    assert OutputOptions().gain(0.5) == pytest.approx(target / 0.5)  # quiet items are raised to -1 dBFS
    assert OutputOptions().gain(4.0) == pytest.approx(target / 4.0)  # loud ones lowered to it
    assert OutputOptions(normalization_db=-6.0).gain(2.0) == pytest.approx(10 ** (-6 / 20) / 2.0)
    assert RAW.gain(0.5) == 1.0 and RAW.gain(4.0) == 0.25
    assert OutputOptions().gain(5e-7) == 1.0  # below upstream's 1e-6 floor nothing is lifted


def test_latent_shift_and_rescale_act_on_the_latents_the_vae_decodes(turbo_engine):
    request = {"caption": "ambient", "duration": 10, "seeds": [4]}
    latents = turbo_engine.sample_latents(SynthesisRequest(**request))
    output = OutputOptions(enable_normalization=False, latent_shift=0.1, latent_rescale=1.3)
    events = list(turbo_engine.synthesize(SynthesisRequest(**request, output=output)))
    streamed = torch.cat([e.pcm for e in events if type(e).__name__ == "AudioWindow"], dim=-1)
    expected = torch.cat([a[0] for _, a in iter_decoded_windows(turbo_engine.vae, latents * 1.3 + 0.1,
                                                                turbo_engine.hop)], dim=-1)
    assert torch.allclose(streamed, expected, atol=1e-5)
    plain = list(turbo_engine.synthesize(SynthesisRequest(**request, output=RAW)))
    assert not torch.allclose(streamed, torch.cat([e.pcm for e in plain if type(e).__name__ == "AudioWindow"], -1))


def test_streamed_fades_times_the_gain_are_upstreams_normalise_then_fade(turbo_engine, synth):
    request = {"caption": "rock", "duration": 10, "seeds": [2, 9]}
    raw = synth(turbo_engine, **request, output=RAW)
    output = OutputOptions(fade_in_duration=1.0, fade_out_duration=2.5, normalization_db=-3.0)
    done = synth(turbo_engine, **request, output=output)
    for item in range(2):
        final = done.audio(item) * done.done[item].gain
        upstream = _upstream_post(raw.audio(item).clone(), -3.0, RATE, round(2.5 * RATE))
        assert torch.allclose(final, upstream, atol=1e-6)
        assert float(final[:, 0].abs().max()) == 0.0 and float(final[:, -1].abs().max()) == 0.0
        # Normalised before the fades, as upstream: the unfaded item peaks at -3 dBFS, the faded one at most there.
        unfaded_peak = float(raw.audio(item).abs().max()) * done.done[item].gain
        assert 20 * math.log10(unfaded_peak) == pytest.approx(-3.0, abs=1e-5)
        assert float(final.abs().max()) <= unfaded_peak * (1 + 1e-6)
        assert done.done[item].peak == pytest.approx(float(done.audio(item).abs().max()))  # of what streamed


def test_bad_values_are_refused_by_the_engine_naming_the_field(turbo_engine):
    for output, field in ((OutputOptions(fade_out_duration=12.0), "fade_out_duration"),
                          (OutputOptions(latent_rescale=0.0), "latent_rescale"),
                          (OutputOptions(enable_normalization="yes"), "enable_normalization")):
        with pytest.raises(InvalidArgument) as error:
            turbo_engine.validate(SynthesisRequest(caption="x", duration=10, output=output))
        assert error.value.field == field
