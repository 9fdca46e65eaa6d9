"""When the LM is called, and how its plan merges into what the DiT sees (model-lm.md §2.6)."""

import pytest

from acestep_client import GenerationParams
from orchestrator.planning import dit_conditions, lm_plan, sanitize_metadata, time_costs, with_cot

ALL_METAS = {"bpm": 120, "keyscale": "C major", "timesignature": "4", "duration": 30.0}
LM_META = {"bpm": 96, "keyscale": "A minor", "timesignature": "3", "duration": 42.0, "language": "en",
           "caption": "a refined caption"}


@pytest.mark.parametrize(
    ("params", "needed", "codes"),
    [
        (GenerationParams(caption="x"), True, True),
        (GenerationParams(caption="x", thinking=False), True, False),
        (GenerationParams(caption="x", thinking=False, **ALL_METAS), False, False),
        (GenerationParams(caption="x", thinking=False, use_cot_metas=False), False, False),
        (GenerationParams(caption="x", audio_codes="<|audio_code_1|>"), True, False),
        (GenerationParams(task_type="cover", src_audio="a.wav"), False, False),
        (GenerationParams(task_type="repaint", src_audio="a.wav"), False, False),
        # As upstream 6d467e4: extract takes everything from its source (an LM caption can undo the extraction).
        (GenerationParams(task_type="extract", src_audio="a.wav", instruction="Extract the vocals"), False, False),
        (GenerationParams(task_type="lego", src_audio="a.wav", instruction="Generate the vocals track"), True, False),
        # A text2music flow edit starts from its source: codes (and the LM) would replace it.
        (GenerationParams(caption="x", src_audio="a.wav", flow_edit_morph=True), False, False),
    ],
)
def test_lm_is_called_only_when_the_request_needs_it(params, needed, codes):
    plan = lm_plan(params)
    assert (plan.needed, plan.generate_codes) == (needed, codes)
    assert plan.reason


def test_user_values_win_and_gaps_are_filled_from_the_lm():
    params = GenerationParams(caption="mine", bpm=140, use_cot_caption=False)
    dit = dit_conditions(params, LM_META)
    assert dit.bpm == 140 and dit.caption == "mine"
    assert (dit.keyscale, dit.timesignature, dit.duration, dit.vocal_language) == ("A minor", "3", 42.0, "en")
    assert dit.cot_bpm == 96 and dit.cot_caption == "a refined caption"


def test_lm_caption_replaces_the_callers_when_use_cot_caption():
    assert dit_conditions(GenerationParams(caption="mine"), LM_META).caption == "a refined caption"


def test_reported_params_keep_the_callers_values():
    reported = with_cot(GenerationParams(caption="mine"), LM_META)
    assert reported.caption == "mine" and reported.bpm is None
    assert reported.cot_duration == 42.0 and reported.cot_vocal_language == "en"
    assert with_cot(GenerationParams(cot_bpm=77), {}).cot_bpm == 77


def test_out_of_range_lm_values_are_dropped():
    clean = sanitize_metadata({"bpm": 999, "duration": 3.0, "keyscale": "H major", "timesignature": "4/4",
                               "language": "xx", "caption": "  ok "})
    assert clean == {"timesignature": "4", "caption": "ok"}


def test_time_costs_use_the_api_keys():
    costs = time_costs({"lm_phase1_time": 1.0}, {"total_time_cost": 2.0, "dit_x": 3.0}, 4.5)
    assert costs == {"lm_phase1_time": 1.0, "dit_total_time_cost": 2.0, "dit_x": 3.0, "pipeline_total_time": 4.5}
