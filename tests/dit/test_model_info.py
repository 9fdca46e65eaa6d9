"""What a DiT replica reports (ListModels) is what it enforces, and a caption cut is measured right."""

from __future__ import annotations

import pytest

from acestep_client.convert import task_type_name
from acestep_client.errors import FailedPrecondition, InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from dit_service.engine import SynthesisRequest
from dit_service.model.text_encoder import CAPTION_MAX_TOKENS
from dit_service.model_info import dit_model_info
from dit_service.prompts import DEFAULT_INSTRUCTION, caption_prompt, metas_string


def _tasks(info: gen_pb2.ModelInfo) -> list[str]:
    return [task_type_name(n) for n in info.task_types]


@pytest.mark.parametrize(
    ("engine_name", "tasks", "max_steps"),
    [
        ("turbo_engine", ["text2music", "cover", "repaint", "cover-nofsq"], 8),
        ("base_engine", ["text2music", "cover", "repaint", "lego", "extract", "complete", "cover-nofsq"], 200),
    ],
)
def test_model_info_reports_exactly_what_validate_enforces(request, make_audio, engine_name, tasks, max_steps):
    engine = request.getfixturevalue(engine_name)
    info = dit_model_info(engine.variant, engine)
    assert (info.name, info.kind, info.loaded) == (engine.variant, gen_pb2.MODEL_KIND_DIT, True)
    assert _tasks(info) == tasks and info.is_turbo == (max_steps == 8)
    assert (info.min_inference_steps, info.max_inference_steps, info.default_inference_steps) == (1, max_steps, 8)
    assert (info.max_duration_s, info.max_batch_size) == (600.0, 8)
    engine.validate(SynthesisRequest(inference_steps=info.max_inference_steps))
    with pytest.raises(InvalidArgument, match="inference_steps"):
        engine.validate(SynthesisRequest(inference_steps=info.max_inference_steps + 1))
    for task in ("lego", "extract", "complete"):
        req = SynthesisRequest(task_type=task, src_audio=make_audio(10.0))
        if task in tasks:
            engine.validate(req)
        else:
            with pytest.raises(FailedPrecondition, match="--dit-model acestep-v15-base"):
                engine.validate(req)


def test_a_loading_replica_reports_its_name_and_no_limits():
    info = dit_model_info("acestep-v15-turbo", None)
    assert info.name == "acestep-v15-turbo" and not info.loaded and not info.task_types
    assert info.max_inference_steps == 0


def test_short_captions_are_read_whole(turbo_engine):
    assert turbo_engine.caption_cut(SynthesisRequest(caption="lofi beat, warm piano", duration=30)) is None


def test_a_long_caption_cut_reports_exactly_the_tokens_the_encoder_reads(turbo_engine):
    """The encoder sees the same tokens for the long caption as for its first `kept` tokens alone."""
    caption = ("dusty drums and a warm rhodes piano over a slow groove, " * 30)[:1200]
    req = SynthesisRequest(caption=caption, duration=30, bpm=90)
    message = turbo_engine.caption_cut(req)
    assert message is not None and f"first {CAPTION_MAX_TOKENS} tokens" in message
    kept, total = (int(n) for n in message.split("kept ")[1].split(" tokens")[0].split(" of its "))
    assert 0 < kept < total == len(caption)  # the tiny tokenizer: one token per ASCII character
    tokenizer = turbo_engine.text_encoder.tokenizer
    metas = metas_string(req.bpm, req.timesignature, req.keyscale, req.duration)

    def read(text: str) -> list[int]:
        return tokenizer.encode(caption_prompt(DEFAULT_INSTRUCTION, text, metas), CAPTION_MAX_TOKENS)

    assert read(caption) == read(caption[:kept])
    assert read(caption) != read(caption[: kept - 1])
