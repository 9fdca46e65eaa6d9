"""The LM's text modes: describe a song as metadata, caption and lyrics.

* ``understand``: audio codes -> what the song is (upstream ``understand_audio_from_codes``);
* ``create_sample``: a free-text query -> a complete sample (upstream "simple mode");
* ``format_sample``: the user's caption and lyrics -> an enhanced caption, metadata, formatted lyrics.

As upstream: one sequence, no CFG, the CoT under the constrained decoder, then ``</think>`` and free
text (the lyrics) with audio codes blocked. Unlike upstream the run is seeded, so it is reproducible.
Empty inputs are replaced the way upstream replaces them (``NO USER INPUT``, ``[Instrumental]``).

Beyond upstream, every description is valid ``generate`` input and says what was changed on the way:
* values the user fixed (format_sample's metadata, create_sample's language) are in the result as
  given (canonical spelling), whatever the LM wrote; with constrained decoding a ``max_new_tokens``
  too small to write them into the CoT fails the call, naming the minimum;
* text holds no control characters but tab and newline; a caption or lyrics longer than generate
  accepts is cut, an LM value outside generate's ranges is clamped (duration) or left empty;
* each cut or change (the token budget ended the caption, the lyrics or the CoT) is a warning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acestep_client import constants as api
from acestep_client.errors import InvalidArgument
from acestep_client.tracing import record_stage
from acestep_client.validation import check_keyscale, normalize_keyscale, normalize_timesignature

from . import prompts
from .constraints import CotStateMachine, strip_control_characters
from .cot import extract_lyrics, parse_cot
from .decoding import SamplingParams
from .events import COT_TOKEN_ESTIMATE, PhaseProgress
from .vocab import COT_FIELDS

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
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (field, message): what was cut or changed
    prompt_tokens: int = 0


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


def user_values(req: DescribeRequest) -> dict[str, Any]:
    """The values the user fixed, typed as a description carries them (they win over the LM's text)."""
    if req.mode == "create_sample":
        return dict(injected_metadata(req))
    if req.mode != "format_sample":
        return {}
    values: dict[str, Any] = {k: v for k, v in injected_metadata(req).items() if k not in ("bpm", "duration")}
    if req.bpm is not None and req.bpm > 0:
        values["bpm"] = int(req.bpm)
    if req.duration is not None and req.duration > 0:
        values["duration"] = float(req.duration)  # as given: the CoT holds whole seconds only
    return values


def _machine(planner: Planner, req: DescribeRequest) -> CotStateMachine | None:
    if not req.use_constrained_decoding:
        return None
    return CotStateMachine(
        planner.cot_vocab, injected_metadata(req), skip_caption=False, skip_language=False,
        debug=req.constrained_decoding_debug, describe=True, budget=token_limit(planner, req),
    )  # fmt: skip


def token_limit(planner: Planner, req: DescribeRequest) -> int:
    """Tokens the text mode may generate: the request's ``max_new_tokens``, at most the planner's limit."""
    return min(req.max_new_tokens or planner.max_new_tokens, planner.max_new_tokens)


def check_request(planner: Planner, req: DescribeRequest) -> None:
    """Before any model work: a budget too small for the CoT that carries the user's fixed values fails.

    Without fixed values a small budget is allowed (the result then says which fields it cut).
    """
    prompt_for(req)  # the mode
    machine = _machine(planner, req)
    if machine is None or not injected_metadata(req):
        return
    limit, minimum = token_limit(planner, req), machine.minimum_tokens()
    if limit < minimum:
        fixed = ", ".join(sorted(injected_metadata(req)))
        raise InvalidArgument(
            "sampling.max_new_tokens",
            f"must be at least {minimum} to write the metadata block with the values you fixed ({fixed}), "
            f"got {limit}",
        )


def _with_inputs(
    req: DescribeRequest, caption: str, lyrics: str, warnings: list[tuple[str, str]]
) -> tuple[str, str]:
    """An empty caption or lyrics (cut, or never written) falls back to what the user sent, so that
    format_sample and create_sample always give generate a caption or lyrics; each fallback is a warning."""
    inputs = {"format_sample": (req.caption, req.lyrics), "create_sample": (req.query, "")}.get(req.mode, ("", ""))
    given_caption, given_lyrics = (strip_control_characters(text).strip() for text in inputs)
    if not caption and given_caption:
        source = "the query" if req.mode == "create_sample" else "the input caption"
        warnings.append(("caption", f"the LM wrote no caption; {source} stands in"))
        caption = given_caption
    if not lyrics and given_lyrics:
        warnings.append(("lyrics", "the LM wrote no lyrics; the input lyrics stand in"))
        lyrics = given_lyrics
    return caption, lyrics


def _fit(name: str, text: str, limit: int, warnings: list[tuple[str, str]]) -> str:
    """``text`` in at most ``limit`` characters (generate's limit for ``name``); a cut is a warning.

    The cut falls on a line (else word) break in the last half of the allowed text if there is one.
    """
    if len(text) <= limit:
        return text
    warnings.append((name, f"cut from {len(text)} to at most {limit} characters, the most generate accepts"))
    head = text[:limit]
    for separator in ("\n", " "):
        at = head.rfind(separator)
        if at >= limit // 2:
            return head[:at].rstrip()
    return head.rstrip()


def _generate_ready(values: dict[str, Any], warnings: list[tuple[str, str]]) -> dict[str, Any]:
    """The LM's values as generate accepts them: clamp the duration, leave out what no rule can repair."""
    out = dict(values)
    bpm = _as_int(out.get("bpm"))
    if out.get("bpm") is not None and (bpm is None or not api.BPM_RANGE[0] <= bpm <= api.BPM_RANGE[1]):
        warnings.append(("bpm", f"the LM wrote {out['bpm']!r}, not a bpm in {api.BPM_RANGE[0]}-{api.BPM_RANGE[1]}; "
                                "left unset"))  # fmt: skip
        bpm = None
    out["bpm"] = bpm
    duration = _as_float(out.get("duration"))
    if duration is not None and not math.isfinite(duration):
        duration = None
    if out.get("duration") is not None and duration is None:
        warnings.append(("duration", f"the LM wrote {out['duration']!r}, not a number of seconds; left unset"))
    elif duration is not None:
        low, high = api.DURATION_RANGE
        clamped = min(max(duration, low), high)
        if clamped != duration:
            warnings.append(("duration", f"the LM wrote {duration:g} s; clamped to {clamped:g} s ({low:g}-{high:g})"))
        duration = clamped
    out["duration"] = duration
    checks = {"keyscale": _valid_keyscale, "timesignature": _valid_timesignature, "language": _valid_language}
    for name, check in checks.items():
        value = _text(out.get(name))
        fixed = check(value) if value else ""
        if fixed is None:
            warnings.append((name, f"the LM wrote {value!r}, which generate does not accept; left empty"))
            fixed = ""
        out[name] = fixed
    return out


def _valid_keyscale(value: str) -> str | None:
    """``value`` as generate spells it, or None when generate would refuse it."""
    try:
        check_keyscale("keyscale", value)
    except InvalidArgument:
        return None
    return normalize_keyscale(value)


def _valid_timesignature(value: str) -> str | None:
    value = normalize_timesignature(value)
    return value if value in api.TIME_SIGNATURES else None


def _valid_language(value: str) -> str | None:
    return value if value in api.VOCAL_LANGUAGES else None


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
    check_request(planner, req)
    params = SamplingParams(req.temperature, req.top_k, req.top_p, cfg_scale=1.0)
    machine = _machine(planner, req)
    limit = token_limit(planner, req)
    rows = [planner.tokenizer.encode(prompt_for(req), add_special_tokens=False)]
    outputs: list[list[int]] = [[]]
    machines = [machine] if machine is not None else None
    for kind, value in planner.decode_text(rows, machines, [req.seed], params, should_stop, limit):
        if kind == "progress":
            yield PhaseProgress(phase=DESCRIBE_PHASE, tokens=int(value), total_estimate=COT_TOKEN_ESTIMATE)
        else:
            outputs = value
    tokens = outputs[0]
    # Random (or badly behaved) weights can write byte tokens such as NUL; no returned text keeps them.
    text = strip_control_characters(planner.tokenizer.decode(tokens, skip_special_tokens=False))
    cot_done = machine.in_free_text if machine is not None else "</think>" in text
    # A CoT cut by the budget may end inside a value ("duration: 5" of 599): only whole lines count.
    metadata = parse_cot(text if cot_done else text[: text.rfind("\n") + 1])
    warnings = _budget_warnings(planner, machine, tokens, metadata, cot_done, limit)
    lyrics = extract_lyrics(text)
    if not lyrics and req.mode == "create_sample" and req.instrumental:
        lyrics = INSTRUMENTAL_LYRICS
    values = _generate_ready({**metadata, **user_values(req)}, warnings)
    caption, lyrics = _with_inputs(req, _text(metadata.get("caption")), lyrics, warnings)
    caption = _fit("caption", caption, api.MAX_CAPTION_CHARS, warnings)
    lyrics = _fit("lyrics", lyrics, api.MAX_LYRICS_CHARS, warnings)
    record_stage("lm.text", int(began * 1e9), mode=req.mode)
    yield Description(
        caption=caption,
        lyrics=lyrics,
        bpm=values["bpm"],
        duration=values["duration"],
        keyscale=values["keyscale"],
        language=values["language"],
        timesignature=values["timesignature"],
        instrumental=req.instrumental,
        raw_text=text,
        seed=req.seed,
        generated_tokens=len(tokens),
        lm_time_seconds=time.time() - began,
        warnings=warnings,
        prompt_tokens=len(rows[0]),
    )


def _budget_warnings(
    planner: Planner,
    machine: CotStateMachine | None,
    tokens: list[int],
    metadata: dict[str, Any],
    cot_done: bool,
    limit: int,
) -> list[tuple[str, str]]:
    """What the token budget cut: the CoT (so some fields are missing), the caption, or the lyrics."""
    table = planner.table
    stopped = bool(tokens) and (tokens[-1] == table.eos_id or tokens[-1] == table.pad_id)
    warnings: list[tuple[str, str]] = []
    budget = f"sampling.max_new_tokens={limit}"
    if not cot_done:
        missing = ", ".join(f for f in COT_FIELDS if f not in metadata) or "its end"
        if stopped:  # only unconstrained decoding may stop there
            warnings.append(("sampling.use_constrained_decoding", f"the LM stopped before writing {missing} and "
                             "the lyrics; constrained decoding writes every field"))  # fmt: skip
        else:
            need = f"; at least {machine.minimum_tokens()} tokens write it whole" if machine is not None else ""
            warnings.append(("sampling.max_new_tokens", f"{budget} ended the metadata block before {missing} "
                             f"and the lyrics{need}"))  # fmt: skip
    elif not stopped:
        warnings.append(("lyrics", f"cut at {budget} before the LM finished them"))
    if machine is not None and machine.caption_cut:
        warnings.append(("caption", f"cut short so that the rest of the metadata fit in {budget}"))
    return warnings
