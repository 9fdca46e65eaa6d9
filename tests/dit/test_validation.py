"""Bad requests are refused before any model work, naming the field; turbo refuses base-only tasks."""

from __future__ import annotations

import pytest
import torch

from acestep_client.errors import FailedPrecondition, InvalidArgument
from dit_service.engine import SynthesisRequest
from dit_service.sampling_options import SamplingOptions


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
]


@pytest.mark.parametrize(("field", "fields"), BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)])
def test_bad_inputs_name_the_field(turbo_engine, field, fields):
    with pytest.raises(InvalidArgument) as error:
        turbo_engine.validate(SynthesisRequest(**fields))
    assert error.value.field == field
    assert str(error.value).startswith(field)
    assert "allowed" in str(error.value)


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
