"""The contract as clients built from the .proto files meet it, through the real servers (issue 10).

Requests a deployment can refuse are refused before any model work (the LM's and the DiT's own
Prometheus counters prove it), made-up enum numbers are INVALID_ARGUMENT naming the field, long
captions go through with the cut reported, every item's LM metadata streams with its index, and an
AudioInput alone is an upload.
"""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from acestep_client import GenerationConfig, GenerationParams
from acestep_client.assemble import assemble
from acestep_client.audio_io import encode_audio
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc, lm_pb2, lm_pb2_grpc, orchestrator_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch_pb2

FAST = {"duration": 10, "bpm": 100, "keyscale": "D minor", "timesignature": "4"}


def _wav(seconds: float = 10.0) -> bytes:
    t = np.arange(int(seconds * 48_000)) / 48_000
    return encode_audio(np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2).astype(np.float32), 48_000, "wav")


def _request(params: GenerationParams, config: GenerationConfig | None = None, **fields):
    return orch_pb2.GenerateMusicRequest(params=params_to_proto(params),
                                         config=config_to_proto(config or GenerationConfig(batch_size=1)), **fields)


def _events(address: str, request: orch_pb2.GenerateMusicRequest, timeout: float = 120) -> list:
    with grpc.insecure_channel(address) as channel:
        return list(orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic(request, timeout=timeout))


def _refusal(address: str, request: orch_pb2.GenerateMusicRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as excinfo:
        _events(address, request, timeout=30)
    return excinfo.value


def _work_counters(stack) -> dict[tuple[str, str], float]:
    """Calls per (component, method) and LM tokens, from the stack's real /metrics text."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.stack.metrics_port}/metrics", timeout=5).read().decode()
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "acestep_requests_total":
                key = (sample.labels["component"], sample.labels["method"])
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name == "acestep_lm_generated_tokens_total":
                counts[("lm", "tokens")] = counts.get(("lm", "tokens"), 0.0) + sample.value
    return counts


def _model_work(counts: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    keys = [("lm", "Plan"), ("lm", "tokens"), ("dit", "EncodeAudio"), ("dit", "Synthesize")]
    return {key: counts.get(key, 0.0) for key in keys}


def test_every_replica_and_the_orchestrator_list_their_models(stack):
    with grpc.insecure_channel(stack.stack.dit.address) as channel:
        (dit,) = dit_pb2_grpc.DiffusionServiceStub(channel).ListModels(gen_pb2.ListModelsRequest(), timeout=10).models
    with grpc.insecure_channel(stack.stack.lm.address) as channel:
        (lm,) = lm_pb2_grpc.LanguageModelServiceStub(channel).ListModels(gen_pb2.ListModelsRequest(), timeout=10).models
    with grpc.insecure_channel(stack.address) as channel:
        front = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).ListModels(gen_pb2.ListModelsRequest(),
                                                                                     timeout=10).models
    assert (dit.name, dit.kind, dit.loaded, dit.is_turbo) == ("acestep-v15-turbo", gen_pb2.MODEL_KIND_DIT, True, True)
    assert list(dit.task_types) == [gen_pb2.TASK_TYPE_TEXT2MUSIC, gen_pb2.TASK_TYPE_COVER, gen_pb2.TASK_TYPE_REPAINT,
                                    gen_pb2.TASK_TYPE_COVER_NOFSQ]
    assert (dit.min_inference_steps, dit.max_inference_steps, dit.default_inference_steps) == (1, 8, 8)
    assert (dit.max_duration_s, dit.max_batch_size) == (600.0, 8)
    assert (lm.name, lm.kind, lm.loaded, lm.is_default) == ("acestep-5Hz-lm-1.7B", gen_pb2.MODEL_KIND_LM, True, True)
    # The orchestrator's: the same models, each with the replicas serving it and marked as the default.
    expected = [gen_pb2.ModelInfo(), gen_pb2.ModelInfo()]
    for entry, model, replica in zip(expected, (dit, lm), (stack.stack.dit.address, stack.stack.lm.address),
                                     strict=True):
        entry.CopyFrom(model)
        entry.replicas[:] = [replica]
        entry.is_default = True
    assert list(front) == expected


def test_steps_over_the_models_limit_are_refused_before_the_lm_runs(stack):
    """64 steps on turbo with thinking on: refused at once (it used to cost a whole LM plan first)."""
    before = _model_work(_work_counters(stack))
    error = _refusal(stack.address, _request(GenerationParams(caption="x", duration=120, inference_steps=64),
                                             GenerationConfig(batch_size=8)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details()
    assert details.startswith("inference_steps:") and "between 1 and 8" in details and "acestep-v15-turbo" in details
    assert _model_work(_work_counters(stack)) == before


def test_a_base_only_task_on_turbo_is_refused_before_the_upload_is_encoded_or_the_lm_runs(stack):
    before = _model_work(_work_counters(stack))
    request = _request(GenerationParams(task_type="lego", instruction="Generate the drums track:"),
                       src_audio=gen_pb2.AudioInput(data=_wav(), filename="song.wav"))
    error = _refusal(stack.address, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'lego'" in error.details() and "acestep-v15-turbo" in error.details()
    assert "--dit-model acestep-v15-base" in error.details()
    assert _model_work(_work_counters(stack)) == before


_MADE_UP = {  # where a client can put an enum number no version of the protos defines
    "task_type": lambda r: setattr(r.params, "task_type", 99),
    "audio_format": lambda r: setattr(r.config, "audio_format", 99),
    "src_audio.format": lambda r: r.src_audio.CopyFrom(gen_pb2.AudioInput(data=_wav(), format=99)),
    "stream_encoding": lambda r: setattr(r, "stream_encoding", 99),
}


@pytest.mark.parametrize("field", sorted(_MADE_UP))
def test_made_up_enum_numbers_are_invalid_argument_naming_the_field(stack, field):
    request = _request(GenerationParams(caption="x", **FAST))
    _MADE_UP[field](request)
    error = _refusal(stack.address, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}:") and "99" in error.details()


def test_the_model_services_refuse_made_up_enum_numbers_by_field_too(stack):
    bad_params = params_to_proto(GenerationParams(caption="x", **FAST))
    bad_params.task_type = 99
    with grpc.insecure_channel(stack.stack.dit.address) as channel:
        dit = dit_pb2_grpc.DiffusionServiceStub(channel)
        errors = {}
        for field, part in (("purpose", dit_pb2.EncodeAudioRequest(data=_wav(), purpose=99)),
                            ("format", dit_pb2.EncodeAudioRequest(data=_wav(), format=99))):
            with pytest.raises(grpc.RpcError) as excinfo:
                dit.EncodeAudio(iter([part]), timeout=30)
            errors[field] = excinfo.value
        with pytest.raises(grpc.RpcError) as excinfo:
            list(dit.Synthesize(dit_pb2.SynthesizeRequest(params=bad_params, seeds=[1]), timeout=30))
        errors["task_type"] = excinfo.value
    with grpc.insecure_channel(stack.stack.lm.address) as channel:
        with pytest.raises(grpc.RpcError) as excinfo:
            list(lm_pb2_grpc.LanguageModelServiceStub(channel).Plan(
                lm_pb2.PlanRequest(params=bad_params, seeds=[1]), timeout=30))
        errors["lm task_type"] = excinfo.value
    for field, error in errors.items():
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert error.details().startswith(f"{field.removeprefix('lm ')}:") and "99" in error.details()


def test_a_long_caption_goes_through_and_its_cut_and_ignored_seeds_are_reported(stack):
    """1,200 characters (upstream's own examples run to 714; create/format_sample write up to 1,226)."""
    caption = ("dusty lofi drums, a warm rhodes piano and soft vinyl crackle over a slow late-night groove, " * 15)
    caption = caption[:1200]
    params = GenerationParams(caption=caption, use_cot_caption=False, **FAST)  # the LM plans; the DiT reads ours
    events = _events(stack.address, _request(params, GenerationConfig(batch_size=1, seeds=[5])))
    result = assemble(events)
    assert result.success, result.error
    audio = result.audios[0]
    assert audio["tensor"].shape[1] == 10 * 48_000 and audio["params"]["caption"] == caption
    warnings = {w["field"]: w["message"] for w in result.extra_outputs["warnings"]}
    assert set(warnings) == {"caption", "seeds"}
    assert "first 256 tokens" in warnings["caption"] and "of its 1200 tokens" in warnings["caption"]
    assert "use_random_seed=false" in warnings["seeds"] and audio["params"]["seed"] != 5
    for message in warnings.values():
        assert message in result.status_message
    done = events[-1].done
    assert [w.field for w in done.warnings] == ["seeds", "caption"]


def test_every_items_lm_metadata_streams_with_its_index(stack):
    params = GenerationParams(caption="x", thinking=False, duration=10)  # the LM writes bpm, key, meter per item
    events = _events(stack.address, _request(params, GenerationConfig(batch_size=2)))
    streamed = [e.lm_metadata for e in events if e.WhichOneof("event") == "lm_metadata"]
    assert sorted(m.item_index for m in streamed) == [0, 1]
    result = assemble(events)
    assert result.success, result.error
    by_item = result.extra_outputs["lm_metadata_by_item"]
    assert len(by_item) == 2 and all(by_item)
    assert result.extra_outputs["lm_metadata"] == by_item[0]
    for item, audio in enumerate(result.audios):  # each item's result carries its own plan
        assert audio["params"]["cot_bpm"] == by_item[item]["bpm"]


def test_an_audio_input_alone_is_an_upload(stack):
    params = GenerationParams(task_type="cover", caption="x", thinking=False, use_cot_metas=False)
    request = _request(params, src_audio=gen_pb2.AudioInput(data=_wav(), filename="song.wav"))
    result = assemble(_events(stack.address, request))
    assert result.success, result.error
    assert result.audios[0]["params"]["src_audio"] == "song.wav"  # params take the upload's name
    assert result.audios[0]["tensor"].shape[1] == 10 * 48_000  # the cover follows its source


def test_cover_nofsq_runs_on_turbo_from_an_upload_without_the_lm(stack):
    params = GenerationParams(task_type="cover-nofsq", caption="x")  # thinking on: the LM is still skipped
    request = _request(params, src_audio=gen_pb2.AudioInput(data=_wav(), filename="song.wav"))
    assert request.params.task_type == gen_pb2.TASK_TYPE_COVER_NOFSQ
    events = _events(stack.address, request)
    assert not [e for e in events if e.WhichOneof("event") == "lm_metadata"]
    result = assemble(events)
    assert result.success, result.error
    assert result.audios[0]["params"]["task_type"] == "cover-nofsq"
    assert result.audios[0]["tensor"].shape[1] == 10 * 48_000


def test_a_named_file_without_its_bytes_says_exactly_that(stack):
    request = _request(GenerationParams(task_type="cover", src_audio="song.wav", caption="x"))
    error = _refusal(stack.address, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("src_audio: params.src_audio names 'song.wav' but the request carries no "
                                      "src_audio AudioInput")
