"""Flow edit (upstream #1156): a source clip morphed toward the request's caption/lyrics, through the real engine."""

from __future__ import annotations

import pytest
import torch

from acestep_client.errors import InvalidArgument
from dit_service.edit_options import EditOptions
from dit_service.engine import SynthesisRequest
from dit_service.flow_edit import FlowEditWindow, flow_edit_notes, flow_edit_sample
from dit_service.samplers import SamplerResult, base_schedule
from dit_service.sampling_options import SamplingOptions

from .conftest import RunResult

LYRICS = "[verse]\nhello world"


def _morph(**edit) -> EditOptions:
    return EditOptions(**{"flow_edit_morph": True, **edit})


def _request(audio: torch.Tensor, task: str = "cover", seeds=(3,), **edit) -> SynthesisRequest:
    options = {"flow_edit_source_caption": "a folk song", "flow_edit_source_lyrics": LYRICS, **edit}
    return SynthesisRequest(task_type=task, caption="a techno track", lyrics=LYRICS, src_audio=audio,
                            seeds=list(seeds), edit=_morph(**options))


def test_the_integrator_moves_the_source_by_the_velocity_difference_over_the_window():
    """Constant velocities: the edit is x_src + (t_stop − t_start)·(v_tar − v_src), exactly upstream's update."""
    source = torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(0))
    schedule = base_schedule(10, 1.0, torch.float32, "cpu")
    result = SamplerResult()
    source_velocity = lambda x, t, guided: torch.full_like(x, 0.25)  # noqa: E731
    target_velocity = lambda x, t, guided: torch.ones_like(x)  # noqa: E731
    draw = lambda: torch.randn_like(source)  # noqa: E731
    window = FlowEditWindow(0.2, 1.0, 1)
    steps = list(flow_edit_sample(source_velocity, target_velocity, source, schedule, window, draw, result))
    assert steps == list(range(10))
    t_start = float(schedule[2])  # int(10 · 0.2) steps are skipped
    assert torch.allclose(result.latents, source - t_start * 0.75, atol=1e-6)


def test_an_empty_window_returns_the_source_untouched(base_engine, make_audio):
    audio = make_audio(8.0)
    latents = base_engine.sample_latents(_request(audio, flow_edit_n_min=1.0, flow_edit_n_max=1.0))
    source = base_engine.encode_audio(audio)[0]
    assert torch.equal(latents[0, : source.shape[0]].float(), source)


def test_the_same_words_on_both_sides_leave_the_source_in_place(turbo_engine, make_audio):
    audio = make_audio(8.0)
    same = _request(audio, flow_edit_source_caption="a techno track")
    latents = turbo_engine.sample_latents(same)
    source = turbo_engine.encode_audio(audio)[0]
    assert (latents[0, : source.shape[0]] - source).abs().max() < 1e-4  # v_tar − v_src vanishes
    edited = turbo_engine.sample_latents(_request(audio))
    assert (edited[0, : source.shape[0]] - source).abs().max() > 1e-2  # a different source caption moves it


@pytest.mark.parametrize("task", ["text2music", "cover", "cover-nofsq"])
def test_each_task_edits_at_the_sources_length_reproducibly(base_engine, make_audio, task):
    audio = make_audio(12.0)
    request = _request(audio, task=task, seeds=(5, 6), flow_edit_n_min=0.25, flow_edit_n_max=0.75,
                       flow_edit_n_avg=2)
    request.duration = 30.0  # the source decides the length, as upstream
    first = base_engine.sample_latents(request)
    frames = base_engine.encode_audio(audio)[0].shape[0]
    assert first.shape[1] == max(frames, 128) and torch.isfinite(first).all()
    assert torch.equal(first, base_engine.sample_latents(request))
    alone = base_engine.sample_latents(_request(audio, task=task, seeds=(6,), flow_edit_n_min=0.25,
                                                flow_edit_n_max=0.75, flow_edit_n_avg=2))
    assert torch.allclose(first[1:], alone, atol=1e-5)  # an item's forward noise is its own seed's


def test_n_avg_and_the_retake_seed_choose_the_forward_noise(base_engine, make_audio):
    audio = make_audio(8.0)
    plain = base_engine.sample_latents(_request(audio))
    assert not torch.equal(plain, base_engine.sample_latents(_request(audio, flow_edit_n_avg=3)))
    retake = _request(audio, retake_seed=99, retake_variance=0.5)
    assert not torch.equal(plain, base_engine.sample_latents(retake))
    # Retake is off at variance 0: its seed is not read.
    assert torch.equal(plain, base_engine.sample_latents(_request(audio, retake_seed=99)))


def test_progress_counts_the_whole_schedule_and_audio_comes_back(base_engine, make_audio):
    request = _request(make_audio(8.0), flow_edit_n_min=0.5)
    request.inference_steps = 6
    run = RunResult(list(base_engine.synthesize(request)))
    assert [s.step for s in run.steps] == list(range(1, 7)) and {s.total for s in run.steps} == {6}
    assert base_engine.diffusion_steps(request) == 6
    audio = run.audio(0)
    assert audio.shape[0] == 2 and torch.isfinite(audio).all() and audio.abs().max() > 0


def test_a_flow_edit_without_a_source_is_refused_by_name(turbo_engine):
    with pytest.raises(InvalidArgument) as error:
        turbo_engine.validate(SynthesisRequest(caption="x", edit=_morph()))
    assert error.value.field == "src_audio" and "flow_edit_morph" in str(error.value)


@pytest.mark.parametrize(("edit", "field"), [
    ({"flow_edit_n_min": 0.7, "flow_edit_n_max": 0.3}, "flow_edit_n_max"),
    ({"flow_edit_n_min": float("nan")}, "flow_edit_n_min"),
    ({"flow_edit_n_avg": 0}, "flow_edit_n_avg"),
    ({"flow_edit_n_avg": 9}, "flow_edit_n_avg"),
    ({"flow_edit_morph": 1}, "flow_edit_morph"),
    ({"flow_edit_source_caption": None}, "flow_edit_source_caption"),
])
def test_bad_flow_edit_options_name_the_field(turbo_engine, make_audio, edit, field):
    with pytest.raises(InvalidArgument) as error:
        turbo_engine.validate(_request(make_audio(4.0), **edit))
    assert error.value.field == field


def test_what_a_flow_edit_does_not_apply_is_said():
    default = SamplingOptions()
    assert flow_edit_notes(EditOptions(), "cover", default, False) == []
    (field, message), = flow_edit_notes(_morph(), "repaint", default, False)
    assert field == "flow_edit_morph" and "ran without it" in message
    (field, message), = flow_edit_notes(_morph(), "cover", SamplingOptions(sampler_mode="heun"), True)
    assert field == "dcw_enabled" and "sampler_mode=heun" in message and "use_adg" in message
    assert flow_edit_notes(_morph(), "text2music", SamplingOptions(dcw_enabled=False), False) == []
