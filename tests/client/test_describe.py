"""Text-mode requests on the wire: building, the field-named checks, and reading results back."""

from __future__ import annotations

import pytest

from acestep_client.describe import (
    build_task,
    failed_result,
    result_from_description,
    sampling_message,
    validate_describe_task,
)
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as pb
from acestep_client.types import CreateSampleResult, FormatSampleResult, UnderstandResult

SAMPLING = {"temperature": 0.85}


def _task(mode: str, **inputs):
    defaults = {
        "understand": {"audio_codes": ""},
        "create_sample": {"query": "", "instrumental": False, "vocal_language": None},
        "format_sample": {"caption": "", "lyrics": "", "user_metadata": None},
    }[mode]
    sampling = {**SAMPLING, **inputs.pop("sampling", {})}
    return build_task(mode, {**defaults, **inputs}, sampling)


@pytest.mark.parametrize(
    ("mode", "inputs", "field"),
    [
        ("understand", {"audio_codes": "not codes"}, "audio_codes"),
        ("understand", {"audio_codes": "<|audio_code_65535|>"}, "audio_codes"),
        ("understand", {"audio_codes": "<|audio_code_1|>" * 3001}, "audio_codes"),
        ("create_sample", {"query": "q" * 513}, "query"),
        ("create_sample", {"vocal_language": "xx"}, "vocal_language"),
        ("format_sample", {"caption": "c" * 4097}, "caption"),
        ("format_sample", {"lyrics": "l" * 4097}, "lyrics"),
        ("format_sample", {"user_metadata": {"bpm": 301}}, "bpm"),
        ("format_sample", {"user_metadata": {"bpm": "fast"}}, "bpm"),
        ("format_sample", {"user_metadata": {"duration": [3]}}, "duration"),
        ("format_sample", {"user_metadata": {"duration": 601}}, "duration"),
        ("format_sample", {"user_metadata": {"duration": float("nan")}}, "duration"),
        ("format_sample", {"user_metadata": {"duration": float("-inf")}}, "duration"),
        ("format_sample", {"user_metadata": {"bpm": -5}}, "bpm"),
        ("understand", {"audio_codes": "<|audio_code_" + "1" * 5000 + "|>"}, "audio_codes"),
        ("format_sample", {"user_metadata": {"keyscale": "H major"}}, "keyscale"),
        ("format_sample", {"user_metadata": {"timesignature": "5/4"}}, "timesignature"),
        ("format_sample", {"user_metadata": {"language": "klingon"}}, "language"),
        ("format_sample", {"user_metadata": {"genre": "pop"}}, "user_metadata"),
        ("understand", {"sampling": {"temperature": 2.5}}, "sampling.temperature"),
        ("understand", {"sampling": {"top_k": 1001}}, "sampling.top_k"),
        ("understand", {"sampling": {"top_p": 1.5}}, "sampling.top_p"),
        ("understand", {"sampling": {"seed": 2**32}}, "sampling.seed"),
        ("understand", {"sampling": {"max_new_tokens": 0}}, "sampling.max_new_tokens"),
        ("understand", {"sampling": {"repetition_penalty": 1.2}}, "repetition_penalty"),
    ],
)
def test_bad_input_names_the_field(mode: str, inputs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        _task(mode, **inputs)
    assert info.value.field == field


def test_valid_edges_pass_and_list_codes_are_rendered() -> None:
    task = _task("understand", audio_codes=[0, 65534] * 1500, sampling={"top_k": 1000, "top_p": 1.0, "seed": 0})
    assert task.understand.audio_codes.startswith("<|audio_code_0|><|audio_code_65534|>")
    metas = {"bpm": 30, "duration": 600, "keyscale": "F# minor", "timesignature": "6/8", "language": "yue"}
    task = _task("format_sample", user_metadata=metas, sampling={"max_new_tokens": 4032})
    assert validate_describe_task(task) == "format_sample"
    assert (task.format_sample.bpm, task.format_sample.duration, task.format_sample.timesignature) == (30, 600.0, "6/8")


@pytest.mark.parametrize(("field", "value"), [("duration", float("nan")), ("duration", float("-inf")),
                                              ("bpm", -1), ("bpm", -300)])
def test_a_raw_format_sample_task_refuses_what_it_would_ignore(field: str, value: float) -> None:
    """Built by hand, as a client in another language would: NaN passed a ``> 0`` test and a negative bpm was
    dropped silently; 0 (and a finite duration <= 0) still mean "the LM chooses"."""
    with pytest.raises(InvalidArgument) as info:
        validate_describe_task(pb.DescribeTask(format_sample=pb.FormatSampleInput(caption="x", **{field: value})))
    assert info.value.field == field
    for kept in ({"bpm": 0}, {"duration": 0.0}, {"duration": -1.0}):
        assert validate_describe_task(pb.DescribeTask(format_sample=pb.FormatSampleInput(**kept))) == "format_sample"


def test_a_task_without_input_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_describe_task(pb.DescribeTask())
    assert info.value.field == "task.input"


def test_reference_sampling_defaults_mean_off() -> None:
    message = sampling_message(top_k=None, top_p=None)
    assert not message.HasField("top_p") and message.top_k == 0 and not message.HasField("seed")
    assert message.temperature == 0.85 and message.use_constrained_decoding


def test_results_have_the_reference_fields() -> None:
    description = pb.SampleDescription(caption="c", lyrics="", bpm=90, keyscale="C major", language="en",
                                       timesignature="4", instrumental=True, seed=7, generated_tokens=3)  # fmt: skip
    understood = result_from_description("understand", description)
    assert isinstance(understood, UnderstandResult)
    assert (understood.bpm, understood.duration, understood.lyrics, understood.success) == (90, None, "", True)
    created = result_from_description("create_sample", description)
    assert isinstance(created, CreateSampleResult) and created.instrumental
    formatted = result_from_description("format_sample", description, input_lyrics="[Verse]\nmine")
    assert isinstance(formatted, FormatSampleResult) and formatted.lyrics == "[Verse]\nmine"
    assert list(formatted.to_dict()) == [
        "caption", "lyrics", "bpm", "duration", "keyscale", "language", "timesignature",
        "status_message", "success", "error",
    ]  # fmt: skip
    failure = failed_result("understand", "UNAVAILABLE: no LM")
    assert not failure.success and failure.error == "UNAVAILABLE: no LM"
