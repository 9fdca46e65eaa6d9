"""Editing options (upstream 6d467e4's names): retake noise, repaint mode/strength/crossfade, chunk-mask mode,
cover noise, the SFT-stems global caption. Defaults change nothing; each option changes what it should."""

from __future__ import annotations

import pytest
import torch

from acestep_client.errors import InvalidArgument
from dit_service.edit_options import EditOptions, edit_notes, lego_caption
from dit_service.engine import SynthesisRequest

START, END = 100, 200  # the repainted span 4-8 s in 25 Hz latent frames


def _latents(engine, **fields):
    edit = fields.pop("edit", EditOptions())
    return engine.sample_latents(SynthesisRequest(edit=edit, **fields))


def _repaint(engine, src, edit=None):
    return _latents(engine, task_type="repaint", src_audio=src, repainting_start=4.0, repainting_end=8.0,
                    seeds=[2], edit=edit or EditOptions())


def test_upstream_names_and_defaults_that_keep_existing_outputs():
    assert EditOptions() == EditOptions(retake_seed=-1, retake_variance=0.0, repaint_mode="balanced",
                                        repaint_strength=0.5, repaint_latent_crossfade_frames=10,
                                        chunk_mask_mode="explicit", cover_noise_strength=0.0, global_caption="")
    assert SynthesisRequest().edit == EditOptions()
    # balanced 0.5 injects for half the steps and crossfades 10 frames: the repaint rule before these options.
    assert EditOptions().injection_ratio == 0.5 and EditOptions().crossfade_frames == 10


def test_retake_variance_moves_the_noise_toward_the_retake_seed(turbo_engine):
    plain = _latents(turbo_engine, caption="jazz", duration=10, seeds=[1])
    unused = _latents(turbo_engine, caption="jazz", duration=10, seeds=[1], edit=EditOptions(retake_seed=77))
    assert torch.equal(plain, unused)  # the retake seed does nothing at variance 0, as upstream
    half = _latents(turbo_engine, caption="jazz", duration=10, seeds=[1],
                    edit=EditOptions(retake_seed=77, retake_variance=0.3))
    assert not torch.allclose(plain, half, atol=1e-3)
    # v = 1 is the retake seed's noise alone: the same as seeding the item with it.
    full = _latents(turbo_engine, caption="jazz", duration=10, seeds=[1],
                    edit=EditOptions(retake_seed=77, retake_variance=1.0))
    torch.testing.assert_close(full, _latents(turbo_engine, caption="jazz", duration=10, seeds=[77]),
                               atol=1e-5, rtol=0)


def test_retake_noise_is_variance_preserving_and_reproducible():
    edit = EditOptions(retake_variance=0.5)
    a, b = torch.randn(1, 4000, 8), torch.randn(1, 4000, 8)
    mixed = edit.mix_retake(a, b)
    assert abs(float(mixed.std()) - 1.0) < 0.05
    assert EditOptions().retake_seeds([5, 6]) == [5 + 2**33, 6 + 2**33]
    assert EditOptions(retake_seed=9).retake_seeds([5, 6]) == [9, 10]


def test_repaint_modes_change_the_span_and_keep_the_outside_exact(turbo_engine, make_audio):
    src = make_audio(12.0)
    clean = turbo_engine._encode_latents(src)
    runs = {mode: _repaint(turbo_engine, src, EditOptions(repaint_mode=mode))
            for mode in ("conservative", "balanced", "aggressive")}
    runs["strength 0.9"] = _repaint(turbo_engine, src, EditOptions(repaint_strength=0.9))
    for latents in runs.values():
        assert torch.equal(latents[0, :START], clean[:START]) and torch.equal(latents[0, END:300], clean[END:300])
    names = list(runs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not torch.allclose(runs[first][0, START:END], runs[second][0, START:END], atol=1e-4), (first, second)
    # Explicit defaults are the unset request.
    assert torch.equal(runs["balanced"], _repaint(turbo_engine, src))


def test_crossfade_frames_only_touch_the_span_edges(turbo_engine, make_audio):
    src = make_audio(12.0)
    hard = _repaint(turbo_engine, src, EditOptions(repaint_latent_crossfade_frames=0))
    soft = _repaint(turbo_engine, src, EditOptions(repaint_latent_crossfade_frames=20))
    changed = (hard[0] - soft[0]).abs().amax(dim=-1) > 0
    frames = torch.nonzero(changed).flatten().tolist()
    assert frames and all(START <= f < START + 20 or END - 20 <= f < END for f in frames)


def test_chunk_mask_mode_auto_marks_everything(turbo_engine, make_audio):
    src = make_audio(12.0)
    explicit = _repaint(turbo_engine, src)
    auto = _repaint(turbo_engine, src, EditOptions(chunk_mask_mode="auto"))
    assert not torch.allclose(explicit[0, START:END], auto[0, START:END], atol=1e-4)
    # text2music's mask is all ones already: auto changes nothing there.
    plain = _latents(turbo_engine, caption="x", duration=10, seeds=[3])
    assert torch.equal(plain, _latents(turbo_engine, caption="x", duration=10, seeds=[3],
                                       edit=EditOptions(chunk_mask_mode="auto")))


def test_cover_noise_strength_starts_from_the_renoised_source(turbo_engine, base_engine, make_audio):
    src = make_audio(10.0)
    request = {"task_type": "cover", "src_audio": src, "seeds": [1]}
    plain = _latents(turbo_engine, **request)
    noised = _latents(turbo_engine, **request, edit=EditOptions(cover_noise_strength=0.5))
    assert not torch.allclose(plain, noised, atol=1e-3)
    # Turbo's 8 steps 1.0 ... 0.5, 0.3: the schedule is cut at 0.5 (nearest 1 - 0.5), two steps remain.
    assert turbo_engine.diffusion_steps(SynthesisRequest(edit=EditOptions(cover_noise_strength=0.5))) == 2
    # Base: 8 linear steps shifted by 3; nearest 1 - 0.9 = 0.1 is the last value (0.2727...), one step remains.
    assert base_engine.diffusion_steps(
        SynthesisRequest(inference_steps=8, edit=EditOptions(cover_noise_strength=0.9))) == 1


def test_global_caption_reaches_only_sft_stems_models(turbo_engine, monkeypatch):
    request = {"caption": "bass line", "duration": 10, "seeds": [4]}
    plain = _latents(turbo_engine, **request)
    assert torch.equal(plain, _latents(turbo_engine, **request, edit=EditOptions(global_caption="a rock song")))
    monkeypatch.setattr(turbo_engine.config, "is_lego_sft", True)
    lego = _latents(turbo_engine, **request, edit=EditOptions(global_caption="a rock song"))
    assert not torch.allclose(plain, lego, atol=1e-4)
    assert lego_caption("bass", "rock", "Generate the BASS track based on the audio context:", "explicit") == (
        "Global: rock\nLocal: bass\nMask Control: true")
    assert lego_caption("bass", "rock", "Generate a segment of the BASS track:", "auto") == (
        "Local: bass\nMask Control: false")


@pytest.mark.parametrize(("field", "value"), [
    ("retake_seed", -2), ("retake_seed", 2**32), ("retake_variance", 1.5), ("retake_variance", -0.1),
    ("repaint_mode", "wild"), ("repaint_strength", 1.2), ("repaint_latent_crossfade_frames", 101),
    ("repaint_latent_crossfade_frames", 2.5), ("chunk_mask_mode", "manual"), ("cover_noise_strength", -0.5),
    ("global_caption", 3),
])
def test_range_errors_name_the_field(turbo_engine, field, value):
    with pytest.raises(InvalidArgument) as err:
        turbo_engine.validate(SynthesisRequest(caption="x", edit=EditOptions(**{field: value})))
    assert err.value.field == field


def test_options_a_request_cannot_use_are_reported_not_silent():
    assert edit_notes(EditOptions(), "text2music", is_lego_sft=False) == []
    assert edit_notes(EditOptions(global_caption="g"), "lego", is_lego_sft=True) == []
    fields = [field for field, _ in edit_notes(
        EditOptions(global_caption="g", repaint_mode="aggressive", chunk_mask_mode="auto"), "cover", False)]
    assert fields == ["global_caption", "repaint_mode", "chunk_mask_mode"]
    assert edit_notes(EditOptions(repaint_strength=0.9, chunk_mask_mode="auto"), "repaint", False) == []


def test_a_wav_crossfade_that_cannot_apply_is_reported():
    (field, message), = edit_notes(EditOptions(repaint_wav_crossfade_sec=0.1), "cover", False)
    assert field == "repaint_wav_crossfade_sec" and "repaint only" in message
    (field, message), = edit_notes(EditOptions(repaint_wav_crossfade_sec=0.1, repaint_mode="aggressive"), "repaint",
                                   False)
    assert field == "repaint_wav_crossfade_sec" and "aggressive" in message
    assert edit_notes(EditOptions(repaint_wav_crossfade_sec=0.1), "repaint", False) == []
