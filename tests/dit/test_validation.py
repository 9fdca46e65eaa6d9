"""Bad requests are refused before any model work, naming the field; turbo refuses base-only tasks."""

from __future__ import annotations

import pytest
import torch

from acestep_client.errors import FailedPrecondition, InvalidArgument
from dit_service.engine import SynthesisRequest
from dit_service.sampling_options import SamplingOptions
from dit_service.tiny_checkpoint import TINY_LATENT_CHANNELS


@pytest.mark.parametrize("task_type", ["lego", "extract", "complete"])
def test_turbo_refuses_base_only_tasks(turbo_engine, make_audio, task_type):
    req = SynthesisRequest(task_type=task_type, src_audio=make_audio(10.0))
    with pytest.raises(FailedPrecondition, match="needs a non-turbo DiT"):
        turbo_engine.validate(req)
    with pytest.raises(FailedPrecondition):
        next(turbo_engine.synthesize(req))


def test_base_accepts_base_only_tasks(base_engine, make_audio):
    for task_type in ("lego", "extract", "complete"):
        base_engine.validate(SynthesisRequest(task_type=task_type, src_audio=make_audio(10.0)))


BAD_FIELDS = [
    ("task_type", {"task_type": "remix"}),
    ("bpm", {"bpm": 12}),
    ("duration", {"duration": 5.0}),
    ("duration", {"duration": 601.0}),
    ("seeds", {"seeds": []}),
    ("seeds", {"seeds": [1] * 9}),
    ("seeds", {"seeds": [-1]}),
    ("inference_steps", {"inference_steps": 9}),
    ("inference_steps", {"inference_steps": 0}),
    ("guidance_scale", {"guidance_scale": 20.0}),
    ("shift", {"sampling": SamplingOptions(shift=0.0)}),
    ("cfg_interval_start", {"cfg_interval_start": 0.8, "cfg_interval_end": 0.2}),
    ("cfg_interval_end", {"cfg_interval_end": 1.5}),
    ("audio_cover_strength", {"audio_cover_strength": -0.1}),
    ("caption", {"caption": "x" * 4097}),
    ("lyrics", {"lyrics": "x" * 4097}),
    ("src_audio", {"task_type": "repaint"}),
    ("src_audio", {"task_type": "cover", "src_audio": torch.zeros(1, 100)}),
    ("reference_audio", {"reference_audio": torch.full((2, 10), float("nan"))}),
    ("audio_codes", {"audio_codes": [[64000]]}),
    ("audio_codes", {"audio_codes": [[1], [2]], "seeds": [1, 2, 3]}),
    ("initial_noise", {"initial_noise": torch.zeros(1, 10, 3)}),
    # Shorter than one 1,920-sample latent frame: the VAE's convolutions failed on it (INTERNAL).
    ("src_audio", {"task_type": "cover", "src_audio": torch.zeros(2, 1919)}),
    ("src_latents", {"task_type": "cover", "src_latents": torch.full((10, TINY_LATENT_CHANNELS), float("nan"))}),
    ("reference_latents", {"reference_latents": torch.full((10, TINY_LATENT_CHANNELS), float("-inf"))}),
    ("src_latents", {"task_type": "cover", "src_latents": torch.zeros(15_001, TINY_LATENT_CHANNELS)}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)])
def test_bad_inputs_name_the_field(turbo_engine, field, fields):
    with pytest.raises(InvalidArgument) as error:
        turbo_engine.validate(SynthesisRequest(**fields))
    assert error.value.field == field
    assert str(error.value).startswith(field)
    assert "allowed" in str(error.value)
    if "latents" in field and "15001" not in str(error.value):
        assert "finite" in str(error.value)  # the shape passed: the values were refused


def test_repaint_end_before_start(turbo_engine, make_audio):
    req = SynthesisRequest(task_type="repaint", src_audio=make_audio(10.0), repainting_start=5, repainting_end=2)
    with pytest.raises(InvalidArgument, match="repainting_end"):
        turbo_engine.validate(req)


def test_initial_noise_with_wrong_length_is_refused_at_synthesis(turbo_engine):
    req = SynthesisRequest(duration=10, initial_noise=torch.zeros(1, 99, turbo_engine.latent_channels))
    with pytest.raises(InvalidArgument, match="initial_noise"):
        list(turbo_engine.synthesize(req))


def test_base_allows_more_steps_than_turbo(base_engine, turbo_engine):
    base_engine.validate(SynthesisRequest(inference_steps=50))
    with pytest.raises(InvalidArgument, match="inference_steps"):
        turbo_engine.validate(SynthesisRequest(inference_steps=50))


def test_a_repaint_padded_past_the_models_600_s_is_refused_naming_the_field(turbo_engine):
    """590 s of latents and 20 s of silence before them would index past the 600 s silence latent (INTERNAL)."""
    latents = torch.zeros(590 * 25, turbo_engine.latent_channels)
    for start, end in ((-20.0, 10.0), (-15.0, -1.0)):
        req = SynthesisRequest(task_type="repaint", src_latents=latents, repainting_start=start, repainting_end=end)
        with pytest.raises(InvalidArgument) as error:
            turbo_engine.validate(req)
        assert error.value.field == "repainting_start" and "at least -10 s" in str(error.value)
    turbo_engine.validate(SynthesisRequest(task_type="repaint", src_latents=latents, repainting_start=-10.0))
    with pytest.raises(InvalidArgument, match="repainting_end"):
        turbo_engine.validate(SynthesisRequest(task_type="repaint", src_latents=latents[:250], repainting_start=0.0,
                                               repainting_end=1200.0))


def test_encode_audio_refuses_a_waveform_shorter_than_one_latent_frame(turbo_engine):
    with pytest.raises(InvalidArgument, match="at least 1920 samples"):
        turbo_engine.encode_audio(torch.zeros(2, 1000))
    latents, _ = turbo_engine.encode_audio(torch.zeros(2, 1920))
    assert latents.shape[0] == 1
