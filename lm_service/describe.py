"""The LM's text modes: describe a song as metadata, caption and lyrics.

* ``understand``: audio codes -> what the song is (upstream ``understand_audio_from_codes``);
* ``create_sample``: a free-text query -> a complete sample (upstream "simple mode");
* ``format_sample``: the user's caption and lyrics -> an enhanced caption, metadata, formatted lyrics.

As upstream: one sequence, no CFG, the CoT under the constrained decoder, then ``</think>`` and free
text (the lyrics) with audio codes blocked. Unlike upstream the run is seeded, so it is reproducible.
Empty inputs are replaced the way upstream replaces them (``NO USER INPUT``, ``[Instrumental]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acestep_client.errors import InvalidArgument
from acestep_client.validation import normalize_keyscale, normalize_timesignature

from . import prompts
from .constraints import CotStateMachine
from .cot import extract_lyrics, parse_cot
from .decoding import SamplingParams
from .events import COT_TOKEN_ESTIMATE, PhaseProgress

if TYPE_CHECKING:
    from .planner import Planner

DESCRIBE_PHASE = 3  # progress events of a text mode carry this phase number
NO_USER_INPUT = "NO USER INPUT"
INSTRUMENTAL_LYRICS = "[Instrumental]"
MODES = ("understand", "create_sample", "format_sample")


@dataclass
class DescribeRequest:
    mode: str
    audio_codes: str = ""  # understand
    query: str = ""  # create_sample
    instrumental: bool = False  # create_sample
    vocal_language: str = ""  # create_sample: injected into the CoT unless empty or "unknown"
    caption: str = ""  # format_sample
    lyrics: str = ""  # format_sample
    bpm: int | None = None  # format_sample: user metadata, injected verbatim
    duration: float | None = None
    keyscale: str = ""
    timesignature: str = ""
    language: str = ""
    temperature: float = 0.85
    top_k: int = 0
    top_p: float = 1.0
    use_constrained_decoding: bool = True
    constrained_decoding_debug: bool = False
    seed: int = 0
    max_new_tokens: int | None = None  # None: the planner's limit


@dataclass
class Description:
    caption: str
    lyrics: str
    bpm: int | None
    duration: float | None
    keyscale: str
    language: str
    timesignature: str
    instrumental: bool
    raw_text: str
    seed: int
    generated_tokens: int
    lm_time_seconds: float


def prompt_for(req: DescribeRequest) -> str:
    if req.mode == "understand":
        return prompts.understand_prompt(req.audio_codes if req.audio_codes.strip() else NO_USER_INPUT)
    if req.mode == "create_sample":
        return prompts.inspiration_prompt(req.query if req.query.strip() else NO_USER_INPUT, req.instrumental)
    if req.mode == "format_sample":
        caption = req.caption if req.caption.strip() else NO_USER_INPUT
        lyrics = req.lyrics if req.lyrics.strip() else INSTRUMENTAL_LYRICS
        return prompts.format_prompt(caption, lyrics)
    raise InvalidArgument("mode", f"must be one of {', '.join(MODES)}, got {req.mode!r}")


def injected_metadata(req: DescribeRequest) -> dict[str, str]:
    """User metadata written into the CoT: create_sample's vocal language, format_sample's fixed metas."""
    if req.mode == "create_sample":
        language = req.vocal_language.strip()
        return {"language": language} if language and language != "unknown" else {}
    if req.mode != "format_sample":
        return {}
    metas: dict[str, str] = {}
    if req.bpm is not None and req.bpm > 0:
        metas["bpm"] = str(int(req.bpm))
    if req.duration is not None and req.duration > 0:
        metas["duration"] = str(int(req.duration))
    if req.keyscale.strip():
        metas["keyscale"] = normalize_keyscale(req.keyscale)
    if req.timesignature.strip():
        metas["timesignature"] = normalize_timesignature(req.timesignature)
    if req.language.strip():
        metas["language"] = req.language.strip()
    return metas


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    """Upstream's clean-up: a missing value or ``N/A`` becomes an empty string."""
    text = str(value or "").strip()
    return "" if text == "N/A" else text


def describe(
    planner: Planner, req: DescribeRequest, should_stop: Callable[[], bool]
) -> Iterator[PhaseProgress | Description]:
    """Yield ``PhaseProgress`` (phase :data:`DESCRIBE_PHASE`) now and then, then one :class:`Description`."""
    began = time.time()
    params = SamplingParams(req.temperature, req.top_k, req.top_p, cfg_scale=1.0)
    machines = None
    if req.use_constrained_decoding:
        machines = [
            CotStateMachine(
                planner.cot_vocab, injected_metadata(req), skip_caption=False, skip_language=False,
                debug=req.constrained_decoding_debug, describe=True,
            )
        ]  # fmt: skip
    rows = [planner.tokenizer.encode(prompt_for(req), add_special_tokens=False)]
    outputs: list[list[int]] = [[]]
    for kind, value in planner.decode_text(rows, machines, [req.seed], params, should_stop, req.max_new_tokens):
        if kind == "progress":
            yield PhaseProgress(phase=DESCRIBE_PHASE, tokens=int(value), total_estimate=COT_TOKEN_ESTIMATE)
        else:
            outputs = value
    text = planner.tokenizer.decode(outputs[0], skip_special_tokens=False)
    metadata = parse_cot(text)
    lyrics = extract_lyrics(text)
    if not lyrics and req.mode == "create_sample" and req.instrumental:
        lyrics = INSTRUMENTAL_LYRICS
    yield Description(
        caption=_text(metadata.get("caption")),
        lyrics=lyrics,
        bpm=_as_int(metadata.get("bpm")),
        duration=_as_float(metadata.get("duration")),
        keyscale=_text(metadata.get("keyscale")),
        language=_text(metadata.get("language")),
        timesignature=_text(metadata.get("timesignature")),
        instrumental=req.instrumental,
        raw_text=text,
        seed=req.seed,
        generated_tokens=len(outputs[0]),
        lm_time_seconds=time.time() - began,
    )
