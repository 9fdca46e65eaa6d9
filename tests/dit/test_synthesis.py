"""End-to-end synthesis on tiny checkpoints: every task, determinism, streaming, cancellation."""

from __future__ import annotations

import pytest
import torch

from acestep_client.errors import Cancelled
from dit_service.engine import SynthesisRequest

HOP = 1920


def assert_valid_run(result, batch: int, frames: int, steps: int = 8):
    assert [s.step for s in result.steps] == list(range(1, steps + 1))
    assert all(s.total == steps for s in result.steps)
    assert len(result.done) == batch
    for item in range(batch):
        audio = result.audio(item)
        assert audio.shape == (2, frames * HOP)
        assert audio.dtype == torch.float32
        assert torch.isfinite(audio).all()
        assert audio.abs().max() > 0
        assert result.done[item].num_samples == frames * HOP
        # Upstream's default: each item peak-normalised to -1 dBFS (no fades, so the streamed peak is the raw one).
        assert result.done[item].gain == pytest.approx(10 ** (-1 / 20) / result.done[item].peak)
        assert result.done[item].peak == pytest.approx(float(audio.abs().max()))
    costs = result.costs[-1].values
    for key in (
        "encoder_time_cost",
        "diffusion_time_cost",
        "diffusion_per_step_time_cost",
        "vae_decode_time_cost",
        "total_time_cost",
    ):
        assert costs[key] >= 0
    assert result.events[-1] is result.costs[-1]


def test_turbo_text2music(turbo_engine, synth):
    result = synth(turbo_engine, caption="lofi piano", lyrics="[verse]\nhello", duration=10, seeds=[3])
    assert_valid_run(result, batch=1, frames=250)


def test_random_duration_is_in_reference_range(turbo_engine, synth):
    result = synth(turbo_engine, caption="ambient", instrumental=True, seeds=[11])
    frames = result.done[0].num_samples // HOP
    assert 250 <= frames <= 3000


def test_same_seed_same_audio_different_seed_different(turbo_engine, synth):
    first = synth(turbo_engine, caption="rock", duration=10, seeds=[5])
    again = synth(turbo_engine, caption="rock", duration=10, seeds=[5])
    other = synth(turbo_engine, caption="rock", duration=10, seeds=[6])
    assert torch.equal(first.audio(0), again.audio(0))
    assert not torch.allclose(first.audio(0), other.audio(0), atol=1e-3)


def test_seed_noise_is_independent_of_batch_position(turbo_engine):
    alone = turbo_engine.sample_latents(SynthesisRequest(caption="jazz", duration=10, seeds=[9]))
    batched = turbo_engine.sample_latents(SynthesisRequest(caption="jazz", duration=10, seeds=[4, 9]))
    assert batched.shape[0] == 2
    torch.testing.assert_close(batched[1], alone[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)


def test_explicit_initial_noise_is_used(turbo_engine):
    noise = torch.randn(1, 250, turbo_engine.latent_channels, generator=torch.Generator().manual_seed(1234))
    a = turbo_engine.sample_latents(SynthesisRequest(caption="x", duration=10, seeds=[1], initial_noise=noise))
    b = turbo_engine.sample_latents(SynthesisRequest(caption="x", duration=10, seeds=[2], initial_noise=noise))
    c = turbo_engine.sample_latents(SynthesisRequest(caption="x", duration=10, seeds=[1]))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)


def test_turbo_cover_from_src_audio(turbo_engine, synth, make_audio):
    result = synth(turbo_engine, task_type="cover", caption="jazz cover", src_audio=make_audio(12.0), seeds=[1])
    assert_valid_run(result, batch=1, frames=300)


def test_cover_strength_below_one_changes_output(turbo_engine, make_audio):
    src = make_audio(12.0)
    full = turbo_engine.sample_latents(SynthesisRequest(task_type="cover", src_audio=src, seeds=[1]))
    partial = turbo_engine.sample_latents(
        SynthesisRequest(task_type="cover", src_audio=src, seeds=[1], audio_cover_strength=0.5)
    )
    assert full.shape == partial.shape
    assert not torch.allclose(full, partial, atol=1e-4)


def test_cover_nofsq_conditions_on_the_raw_source_not_its_fsq_codes(turbo_engine, make_audio):
    """cover-nofsq (upstream 2026-04) keeps cover's instruction but skips the tokenizer round trip: its
    context is the source's own latents, so it differs from a cover of the same source and seed."""
    src = make_audio(12.0)
    plan_cover = turbo_engine.sample_latents(SynthesisRequest(task_type="cover", src_audio=src, seeds=[1]))
    nofsq = turbo_engine.sample_latents(SynthesisRequest(task_type="cover-nofsq", src_audio=src, seeds=[1]))
    assert nofsq.shape == plan_cover.shape  # the same length: both follow the source
    assert not torch.allclose(nofsq, plan_cover, atol=1e-4)
    again = turbo_engine.sample_latents(SynthesisRequest(task_type="cover-nofsq", src_audio=src, seeds=[1]))
    assert torch.equal(nofsq, again)


def test_text2music_with_audio_codes_sets_length(turbo_engine, synth):
    codes = [[(i * 7919) % 64000 for i in range(60)], [(i * 31) % 64000 for i in range(40)]]
    result = synth(turbo_engine, caption="pop", audio_codes=codes, seeds=[1, 2])
    # 60 codes -> 300 frames; the batch is generated at its longest item (reference behaviour)
    assert_valid_run(result, batch=2, frames=300)


def test_reference_audio_changes_timbre_condition(turbo_engine, make_audio):
    plain = turbo_engine.sample_latents(SynthesisRequest(caption="x", duration=10, seeds=[1]))
    with_ref = turbo_engine.sample_latents(
        SynthesisRequest(caption="x", duration=10, seeds=[1], reference_audio=make_audio(4.0, seed=3))
    )
    assert not torch.allclose(plain, with_ref, atol=1e-5)


def test_repaint_keeps_outside_region_bit_exact(turbo_engine, make_audio):
    src = make_audio(12.0)
    clean = turbo_engine._encode_latents(src)
    latents = turbo_engine.sample_latents(
        SynthesisRequest(task_type="repaint", src_audio=src, repainting_start=4.0, repainting_end=8.0, seeds=[2])
    )
    start, end = 100, 200  # 25 latent frames per second
    assert latents.shape[1] == 300
    assert torch.equal(latents[0, :start], clean[:start])
    assert torch.equal(latents[0, end:300], clean[end:300])
    assert not torch.allclose(latents[0, start:end], clean[start:end], atol=1e-3)


def test_repaint_outpainting_extends_source(turbo_engine, synth, make_audio):
    result = synth(
        turbo_engine,
        task_type="repaint",
        src_audio=make_audio(10.0),
        repainting_start=8.0,
        repainting_end=14.0,
        seeds=[2],
    )
    assert_valid_run(result, batch=1, frames=350)


@pytest.mark.parametrize("task_type", ["lego", "extract", "complete"])
def test_base_only_tasks(base_engine, synth, make_audio, task_type):
    result = synth(
        base_engine,
        task_type=task_type,
        src_audio=make_audio(10.0),
        caption="drums",
        inference_steps=4,
        guidance_scale=5.0,
        seeds=[1],
    )
    assert_valid_run(result, batch=1, frames=250, steps=4)


def test_base_guidance_variants_differ(base_engine):
    def latents(**kw):
        return base_engine.sample_latents(
            SynthesisRequest(caption="folk", duration=10, seeds=[1], inference_steps=6, **kw)
        )

    apg = latents(guidance_scale=7.0)
    adg = latents(guidance_scale=7.0, use_adg=True)
    no_cfg = latents(guidance_scale=1.0)
    late_only = latents(guidance_scale=7.0, cfg_interval_start=0.0, cfg_interval_end=0.5)
    for other in (adg, no_cfg, late_only):
        assert torch.isfinite(other).all()
        assert not torch.allclose(apg, other, atol=1e-4)
    # No sampled timestep lies in [0, 0] (the last step starts above 0), so guidance never applies:
    # the conditional half of the doubled batch equals the unguided run.
    outside = latents(guidance_scale=7.0, cfg_interval_start=0.0, cfg_interval_end=0.0)
    torch.testing.assert_close(outside, no_cfg, atol=1e-5, rtol=1e-5)


def test_sft_text2music_batch(sft_engine, synth):
    result = synth(sft_engine, caption="edm", duration=10, seeds=[1, 2], inference_steps=3)
    assert_valid_run(result, batch=2, frames=250, steps=3)
    assert not torch.allclose(result.audio(0), result.audio(1), atol=1e-3)


def test_should_stop_mid_sampling_raises_cancelled(turbo_engine):
    seen = []

    def should_stop() -> bool:
        return len(seen) >= 3

    events = turbo_engine.synthesize(SynthesisRequest(caption="x", duration=10, seeds=[1]), should_stop)
    with pytest.raises(Cancelled):
        for event in events:
            seen.append(event)
    assert len(seen) == 3


def test_should_stop_between_vae_windows_raises_cancelled(turbo_engine):
    from dit_service.engine import AudioWindow

    windows = []
    events = turbo_engine.synthesize(SynthesisRequest(caption="x", duration=40, seeds=[1]), lambda: len(windows) >= 1)
    with pytest.raises(Cancelled):
        for event in events:
            if isinstance(event, AudioWindow):
                windows.append(event)
    assert len(windows) == 1


def test_encode_audio_returns_latents_and_codes(turbo_engine, make_audio):
    latents, codes = turbo_engine.encode_audio(make_audio(6.0))
    assert latents.shape == (150, turbo_engine.latent_channels)
    assert len(codes) == 30
    assert all(0 <= c < 64000 for c in codes)
    again_latents, again_codes = turbo_engine.encode_audio(make_audio(6.0))
    assert torch.equal(latents, again_latents) and codes == again_codes


def test_inference_mode_does_not_leak_to_the_consumer(turbo_engine):
    events = turbo_engine.synthesize(SynthesisRequest(caption="x", duration=10, seeds=[1]))
    next(events)
    assert not torch.is_inference_mode_enabled()
    events.close()
