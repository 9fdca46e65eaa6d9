"""Pure decisions of a generate_music call: does it need the LM, and what reaches the DiT.

Kept free of gRPC so the rules (model-lm.md §2.6) read in one place and test in microseconds.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from acestep_client import constants as c
from acestep_client.types import GenerationParams
from acestep_client.validation import normalize_timesignature

# The LM plans text2music fully; for lego and complete it only writes metadata (codes would replace the
# source audio in the DiT); cover, repaint and extract take everything from the source, as upstream 6d467e4
# (an LM caption can turn an extract into a reconstruction of its input).
_LM_TASKS = ("text2music", "lego", "complete")
_KEYSCALE = re.compile(r"^[A-G][#b♯♭]? (major|minor)$")


@dataclass(frozen=True)
class LmPlan:
    needed: bool
    generate_codes: bool
    reason: str


def has_all_metas(params: GenerationParams) -> bool:
    return (
        params.bpm is not None and bool(params.keyscale.strip()) and bool(params.timesignature.strip())
        and params.duration > 0
    )


def lm_plan(params: GenerationParams) -> LmPlan:
    if params.task_type not in _LM_TASKS:
        return LmPlan(False, False, f"task_type={params.task_type} takes its plan from the source audio")
    if params.flow_edit_morph and params.task_type == "text2music":
        # As upstream: codes would replace the source the edit starts from, so the LM does not run at all.
        return LmPlan(False, False, "flow_edit_morph=True edits the source audio; the LM does not plan it")
    codes = params.thinking and params.task_type == "text2music" and not params.audio_codes.strip()
    # Phase 1 (which also refines caption and language) runs only when some metadata is missing.
    metas = params.use_cot_metas and not has_all_metas(params)
    if codes:
        return LmPlan(True, True, "thinking=True asks the LM for audio codes")
    if metas:
        return LmPlan(True, False, "use_cot_metas=True asks the LM for the metadata the request leaves out")
    return LmPlan(False, False, "the request asks nothing of the LM")


def sanitize_metadata(raw: dict[str, Any]) -> dict[str, Any]:
    """Keep only values inside the API's ranges, so an unconstrained LM cannot poison the DiT request."""
    out: dict[str, Any] = {}
    bpm = raw.get("bpm")
    if isinstance(bpm, (int, float)) and c.BPM_RANGE[0] <= bpm <= c.BPM_RANGE[1]:
        out["bpm"] = int(bpm)
    duration = raw.get("duration")
    if isinstance(duration, (int, float)) and c.DURATION_RANGE[0] <= duration <= c.DURATION_RANGE[1]:
        out["duration"] = float(duration)
    keyscale = str(raw.get("keyscale") or "").strip()
    if _KEYSCALE.match(keyscale):
        out["keyscale"] = keyscale
    timesignature = normalize_timesignature(str(raw.get("timesignature") or ""))
    if timesignature in c.TIME_SIGNATURES:
        out["timesignature"] = timesignature
    language = str(raw.get("language") or "").strip()
    if language in c.VOCAL_LANGUAGES:
        out["language"] = language
    caption = str(raw.get("caption") or "").strip()
    if caption:
        out["caption"] = caption[: c.MAX_CAPTION_CHARS]
    return out


def with_cot(params: GenerationParams, metadata: dict[str, Any]) -> GenerationParams:
    """The params a result reports: the caller's values untouched, ``cot_*`` filled from the LM."""
    if not metadata:
        return dataclasses.replace(params)
    return dataclasses.replace(
        params,
        cot_bpm=metadata.get("bpm"),
        cot_keyscale=metadata.get("keyscale", ""),
        cot_timesignature=metadata.get("timesignature", ""),
        cot_duration=metadata.get("duration"),
        cot_vocal_language=metadata.get("language", "unknown"),
        cot_caption=metadata.get("caption", ""),
    )


def dit_conditions(params: GenerationParams, metadata: dict[str, Any]) -> GenerationParams:
    """What the DiT is conditioned on: user values win, gaps are filled from the LM's first item.

    Beyond the reference, an LM-detected language reaches the DiT when the caller left it "unknown"
    and use_cot_language is on (the reference reads a key the LM never writes).
    """
    p = with_cot(params, metadata)
    if p.bpm is None and "bpm" in metadata:
        p.bpm = metadata["bpm"]
    if not p.keyscale.strip() and "keyscale" in metadata:
        p.keyscale = metadata["keyscale"]
    if not p.timesignature.strip() and "timesignature" in metadata:
        p.timesignature = metadata["timesignature"]
    if p.duration <= 0 and "duration" in metadata:
        p.duration = metadata["duration"]
    if p.use_cot_caption and metadata.get("caption"):
        p.caption = metadata["caption"]
    if p.use_cot_language and p.vocal_language == "unknown" and "language" in metadata:
        p.vocal_language = metadata["language"]
    p.timesignature = normalize_timesignature(p.timesignature)
    return p


def time_costs(lm: dict[str, float], dit: dict[str, float], wall_seconds: float) -> dict[str, float]:
    """The API's unified time_costs: LM keys as they are, DiT keys prefixed ``dit_``."""
    costs = dict(lm)
    costs.update({k if k.startswith("dit_") else f"dit_{k}": v for k, v in dit.items()})
    costs["pipeline_total_time"] = wall_seconds
    return costs
