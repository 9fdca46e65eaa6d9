"""The LM's text modes on the wire: building and checking a ``DescribeTask``, reading a ``SampleDescription``.

Three modes of the reference API (understand_music, create_sample, format_sample) share one RPC and one
result message. The same checks run in the SDK before sending and in the LM service before any model
work, so bad input never reaches a GPU and every client gets the same field-named messages.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from acestep_client import constants as c
from acestep_client.assemble import CallError, warning_lines
from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as pb
from acestep_client.types import CreateSampleResult, FormatSampleResult, UnderstandResult
from acestep_client.validation import (
    check_audio_codes,
    check_keyscale,
    check_language,
    check_max_chars,
    check_range,
    check_timesignature,
)

MODES = ("understand", "create_sample", "format_sample")
DEFAULT_TEMPERATURE = 0.85
MAX_QUERY_CHARS = 512  # a create_sample query is a short request, not a caption
MAX_NEW_TOKENS = 4032  # the LM's context (4096) minus upstream's 64-token margin
# 600 s of music at 5 codes per second: the longest song the DiT makes.
MAX_UNDERSTAND_CODES = int(c.DURATION_RANGE[1]) * c.CODES_PER_SECOND
_RESULT_TYPES = {
    "understand": UnderstandResult,
    "create_sample": CreateSampleResult,
    "format_sample": FormatSampleResult,
}


SAMPLING_ARGS = (
    "temperature", "top_k", "top_p", "repetition_penalty", "use_constrained_decoding",
    "constrained_decoding_debug", "seed", "max_new_tokens",
)  # fmt: skip


def sampling_args(arguments: dict[str, Any]) -> dict[str, Any]:
    """The sampling arguments among a text-mode function's ``locals()``."""
    return {name: arguments[name] for name in SAMPLING_ARGS if name in arguments}


def sampling_message(
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    use_constrained_decoding: bool = True,
    constrained_decoding_debug: bool = False,
    seed: int | None = None,
    max_new_tokens: int | None = None,
) -> pb.LmTextSampling:
    """The reference's sampling arguments; ``None`` or 0 turns top-k/top-p off, as the reference does."""
    if repetition_penalty != 1.0:
        raise InvalidArgument("repetition_penalty", f"only 1.0 is supported (no penalty), got {repetition_penalty!r}")
    message = pb.LmTextSampling(
        temperature=temperature,
        top_k=int(top_k or 0),
        use_constrained_decoding=use_constrained_decoding,
        constrained_decoding_debug=constrained_decoding_debug,
    )
    if top_p:
        message.top_p = top_p
    if seed is not None:
        message.seed = seed
    if max_new_tokens is not None:
        message.max_new_tokens = max_new_tokens
    return message


def understand_task(audio_codes: str | list[int], sampling: pb.LmTextSampling) -> pb.DescribeTask:
    if isinstance(audio_codes, list):
        audio_codes = "".join(f"<|audio_code_{int(code)}|>" for code in audio_codes)
    return pb.DescribeTask(understand=pb.UnderstandInput(audio_codes=audio_codes), sampling=sampling)


def create_sample_task(
    query: str, instrumental: bool, vocal_language: str | None, sampling: pb.LmTextSampling
) -> pb.DescribeTask:
    sample = pb.CreateSampleInput(query=query, instrumental=instrumental, vocal_language=vocal_language or "")
    return pb.DescribeTask(create_sample=sample, sampling=sampling)


def format_sample_task(
    caption: str, lyrics: str, user_metadata: dict[str, Any] | None, sampling: pb.LmTextSampling
) -> pb.DescribeTask:
    """``user_metadata`` keys as the reference: bpm, duration, keyscale, timesignature, language."""
    metas = dict(user_metadata or {})
    unknown = sorted(set(metas) - {"bpm", "duration", "keyscale", "timesignature", "language"})
    if unknown:
        raise InvalidArgument(
            "user_metadata", f"allowed keys are bpm, duration, keyscale, timesignature, language; got {unknown}"
        )
    message = pb.FormatSampleInput(caption=caption, lyrics=lyrics)
    for key, kind in (("bpm", int), ("duration", float)):
        if metas.get(key) is None:
            continue
        try:
            setattr(message, key, kind(metas[key]))
        except (TypeError, ValueError):
            raise InvalidArgument(key, f"must be a number, got {metas[key]!r}") from None
    for key in ("keyscale", "timesignature", "language"):
        if metas.get(key):
            setattr(message, key, str(metas[key]))
    return pb.DescribeTask(format_sample=message, sampling=sampling)


def task_mode(task: pb.DescribeTask) -> str:
    mode = task.WhichOneof("input")
    if mode is None:
        raise InvalidArgument("task.input", f"set one of {', '.join(MODES)}")
    return mode


def validate_describe_task(task: pb.DescribeTask) -> str:
    """Check every field of a text-mode request; returns the mode."""
    mode = task_mode(task)
    sampling = task.sampling
    if sampling.HasField("temperature"):
        check_range("sampling.temperature", sampling.temperature, *c.LM_TEMPERATURE_RANGE)
    check_range("sampling.top_k", sampling.top_k, 0, c.LM_TOP_K_MAX, integer=True)
    if sampling.HasField("top_p"):
        check_range("sampling.top_p", sampling.top_p, *c.LM_TOP_P_RANGE)
    if sampling.HasField("seed"):
        check_range("sampling.seed", sampling.seed, 0, c.SEED_MAX, integer=True)
    if sampling.HasField("max_new_tokens"):
        check_range("sampling.max_new_tokens", sampling.max_new_tokens, 1, MAX_NEW_TOKENS, integer=True)
    if mode == "understand":
        check_audio_codes("audio_codes", task.understand.audio_codes, MAX_UNDERSTAND_CODES)
    elif mode == "create_sample":
        check_max_chars("query", task.create_sample.query, MAX_QUERY_CHARS)
        check_language("vocal_language", task.create_sample.vocal_language, allow_empty=True)
    else:
        sample = task.format_sample
        check_max_chars("caption", sample.caption, c.MAX_CAPTION_CHARS)
        check_max_chars("lyrics", sample.lyrics, c.MAX_LYRICS_CHARS)
        # Besides leaving them unset, bpm 0 and a finite duration <= 0 (generate's "auto") let the LM choose;
        # anything else out of range (a negative bpm, NaN, an infinity) is refused, never ignored.
        if sample.HasField("bpm") and sample.bpm != 0:
            check_range("bpm", sample.bpm, *c.BPM_RANGE, integer=True)
        if sample.HasField("duration") and (sample.duration > 0 or not math.isfinite(sample.duration)):
            check_range("duration", sample.duration, *c.DURATION_RANGE)
        check_keyscale("keyscale", sample.keyscale)
        check_timesignature("timesignature", sample.timesignature)
        check_language("language", sample.language, allow_empty=True)
    return mode


def result_from_description(mode: str, description: pb.SampleDescription, input_lyrics: str = "") -> Any:
    """The reference's result dataclass for ``mode``; format_sample falls back to the input lyrics."""
    fields: dict[str, Any] = {
        "caption": description.caption,
        "lyrics": description.lyrics or (input_lyrics if mode == "format_sample" else ""),
        "bpm": description.bpm if description.HasField("bpm") else None,
        "duration": description.duration if description.HasField("duration") else None,
        "keyscale": description.keyscale,
        "language": description.language,
        "timesignature": description.timesignature,
        "status_message": f"LM {mode}: {description.generated_tokens} tokens in {description.lm_time_seconds:.2f} s"
        f" (seed {description.seed})"
        # What the LM service cut or changed (as generate's status does): never silent.
        + warning_lines(description.warnings),
    }
    if mode == "create_sample":
        fields["instrumental"] = description.instrumental
    return _RESULT_TYPES[mode](**fields)


def failed_result(mode: str, error: str) -> Any:
    """The reference's contract: a failed call is a result with ``success=False``, never an exception."""
    return _RESULT_TYPES[mode](status_message=f"Error: {error}", success=False, error=error)


DescribeProgress = Callable[[float, str], None]


def _pick(event: Any, progress: DescribeProgress | None) -> pb.SampleDescription | None:
    kind = event.WhichOneof("event")
    if kind == "progress" and progress is not None:
        progress(event.progress.fraction, event.progress.message)
    return event.description if kind == "description" else None


def read_description(events: Iterable[Any], progress: DescribeProgress | None = None) -> pb.SampleDescription:
    """The description at the end of a DescribeMusic / Describe stream; progress events go to ``progress``.

    The stream is read to its end (the server closes it right after the description): a call left open and
    then cancelled would end CANCELLED on the server, and be counted there as one.
    """
    found = None
    for event in events:
        description = _pick(event, progress)
        if found is None:
            found = description
    if found is None:
        raise CallError("INTERNAL", "the stream ended without a description")
    return found


async def read_description_async(
    events: AsyncIterable[Any], progress: DescribeProgress | None = None
) -> pb.SampleDescription:
    found = None
    async for event in events:
        description = _pick(event, progress)
        if found is None:
            found = description
    if found is None:
        raise CallError("INTERNAL", "the stream ended without a description")
    return found


def build_task(mode: str, inputs: dict[str, Any], sampling: dict[str, Any]) -> pb.DescribeTask:
    """A validated task from the reference functions' arguments (raises InvalidArgument)."""
    message = sampling_message(**sampling)
    if mode == "understand":
        task = understand_task(inputs["audio_codes"], message)
    elif mode == "create_sample":
        task = create_sample_task(inputs["query"], inputs["instrumental"], inputs["vocal_language"], message)
    elif mode == "format_sample":
        task = format_sample_task(inputs["caption"], inputs["lyrics"], inputs["user_metadata"], message)
    else:
        raise InvalidArgument("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    validate_describe_task(task)
    return task
