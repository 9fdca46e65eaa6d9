"""End-to-end planner behaviour on the tiny random checkpoint (outputs are noise; structure is not)."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from acestep_client.errors import Cancelled, FailedPrecondition, InvalidArgument
from lm_service.planner import ItemCodes, ItemMetadata, PhaseProgress, PhaseTimes, Planner, PlanRequest
from lm_service.vocab import KEYSCALES, LANGUAGES, TIME_SIGNATURES

from .conftest import TEST_PLANNER_OPTIONS


def run(planner: Planner, req: PlanRequest, should_stop=lambda: False):
    events = list(planner.plan(req, should_stop))
    metas = {e.item: e.metadata for e in events if isinstance(e, ItemMetadata)}
    codes = {e.item: e.codes for e in events if isinstance(e, ItemCodes)}
    return events, metas, codes


def test_constrained_cot_parses_and_respects_ranges(planner: Planner) -> None:
    req = PlanRequest(caption="dreamy synth pop", lyrics="[Verse]\nla la", seeds=list(range(6)), generate_codes=False)
    _, metas, codes = run(planner, req)
    assert codes == {}
    assert sorted(metas) == list(range(6))
    for meta in metas.values():
        assert meta["cot_text"].startswith("<think>\nbpm:")
        assert set(meta) == {"bpm", "caption", "duration", "keyscale", "language", "timesignature", "cot_text"}
        assert isinstance(meta["bpm"], int) and 30 <= meta["bpm"] <= 300
        assert isinstance(meta["duration"], int) and 10 <= meta["duration"] <= 600
        assert meta["keyscale"] in KEYSCALES
        assert meta["language"] in LANGUAGES
        assert meta["timesignature"] in TIME_SIGNATURES
        assert isinstance(meta["caption"], str)
    assert len({m["cot_text"] for m in metas.values()}) > 1  # seeds matter


def test_skipped_cot_fields_and_no_cfg(planner: Planner) -> None:
    req = PlanRequest(seeds=[1, 2], use_cot_caption=False, use_cot_language=False, lm_cfg_scale=1.0,
                      generate_codes=False)  # fmt: skip
    _, metas, _ = run(planner, req)
    for meta in metas.values():
        assert "caption" not in meta and "language" not in meta
        assert {"bpm", "duration", "keyscale", "timesignature"} <= set(meta)


@pytest.mark.parametrize("duration", [10.0, 12.5, 30.7])
def test_exact_code_count(planner: Planner, duration: float) -> None:
    _, metas, codes = run(planner, PlanRequest(caption="rock", duration=duration, seeds=[4, 9]))
    for item in (0, 1):
        assert len(codes[item]) == int(5 * duration)
        assert all(0 <= c <= 63999 for c in codes[item])
        assert metas[item]["duration"] == int(duration)


def test_user_metadata_injected_verbatim(planner: Planner) -> None:
    req = PlanRequest(caption="x", bpm=99, keyscale="C Major", timesignature="4/4", seeds=[5], generate_codes=False)
    _, metas, _ = run(planner, req)
    meta = metas[0]
    assert "bpm: 99\n" in meta["cot_text"] and "keyscale: C Major\n" in meta["cot_text"]
    assert "timesignature: 4/4\n" in meta["cot_text"]
    assert meta["bpm"] == 99 and meta["keyscale"] == "C Major" and meta["timesignature"] == "4/4"
    assert 10 <= meta["duration"] <= 600  # not given, so generated


def test_all_metas_given_skips_phase1(planner: Planner) -> None:
    req = PlanRequest(caption="x", bpm=120, keyscale="Eb minor", timesignature="3", duration=10, seeds=[1])
    events, metas, codes = run(planner, req)
    assert metas[0] == {"bpm": 120, "keyscale": "Eb minor", "timesignature": "3", "duration": 10, "cot_text": ""}
    assert len(codes[0]) == 50
    assert not any(isinstance(e, PhaseProgress) and e.phase == 1 for e in events)
    assert events[-1].lm_phase1_time < 0.05


def test_event_order(planner: Planner) -> None:
    events, _, _ = run(planner, PlanRequest(caption="x", duration=10, seeds=[1, 2, 3], lm_batch_chunk_size=2))
    kinds = [type(e).__name__ for e in events if not isinstance(e, PhaseProgress)]
    assert kinds == ["ItemMetadata", "ItemMetadata", "ItemCodes", "ItemCodes", "ItemMetadata", "ItemCodes",
                     "PhaseTimes"]  # fmt: skip
    assert isinstance(events[-1], PhaseTimes) and events[-1].lm_phase2_time > 0
    progress = [e for e in events if isinstance(e, PhaseProgress)]
    assert {p.phase for p in progress} == {1, 2}
    assert all(p.total_estimate == 50 for p in progress if p.phase == 2)


def test_seed_reproducible_and_independent_of_batch_position(planner: Planner) -> None:
    base = dict(caption="lofi", lyrics="hey", duration=10.0)
    _, m_alone, c_alone = run(planner, PlanRequest(**base, seeds=[7]))
    _, m_again, c_again = run(planner, PlanRequest(**base, seeds=[7]))
    _, m_batch, c_batch = run(planner, PlanRequest(**base, seeds=[3, 5, 7], lm_batch_chunk_size=8))
    _, m_chunk, c_chunk = run(planner, PlanRequest(**base, seeds=[7, 3], lm_batch_chunk_size=1))
    assert m_alone[0]["cot_text"] == m_again[0]["cot_text"] == m_batch[2]["cot_text"] == m_chunk[0]["cot_text"]
    assert c_alone[0] == c_again[0] == c_batch[2] == c_chunk[0]
    assert c_batch[0] != c_batch[2]


def test_should_stop_cancels_and_frees_kv_slots(planner: Planner) -> None:
    calls = {"n": 0}

    def stop_after_a_few() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        run(planner, PlanRequest(caption="x", duration=30, seeds=[1, 2]), stop_after_a_few)
    deadline = time.monotonic() + 5
    while planner.engine.pool.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert planner.engine.pool.active == 0 and planner.engine.waiting_groups == 0
    assert calls["n"] == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bpm", 12), ("bpm", 301), ("duration", 5.0), ("duration", 601.0), ("keyscale", "H major"),
        ("timesignature", "5/4"), ("vocal_language", "xx"), ("lm_temperature", 2.5), ("lm_cfg_scale", 0.5),
        ("lm_top_k", -1), ("lm_top_p", 1.5), ("seeds", []), ("seeds", list(range(9))), ("seeds", [-1]),
        ("caption", "x" * 4097), ("lyrics", "y" * 4097), ("lm_batch_chunk_size", 0),
    ],
)  # fmt: skip
def test_invalid_argument_names_field(planner: Planner, field: str, value) -> None:
    req = PlanRequest(**{field: value})
    with pytest.raises(InvalidArgument) as info:
        planner.validate(req)
    assert info.value.field == field
    assert "allowed" in str(info.value)
    with pytest.raises(InvalidArgument):
        next(planner.plan(req))


def test_valid_edge_values_pass(planner: Planner) -> None:
    planner.validate(PlanRequest(bpm=30, duration=600, keyscale="B♭ minor", timesignature="6/8", lm_top_p=1.0,
                                 lm_temperature=0.0, seeds=list(range(8))))  # fmt: skip
    planner.validate(PlanRequest(bpm=300, duration=10, keyscale="n/a", vocal_language="yue"))
    planner.validate(PlanRequest(bpm=0, duration=-1.0, keyscale="", timesignature=""))  # 0 / -1 = auto


def test_constraints_off_really_off(planner: Planner) -> None:
    _, on_meta, on_codes = run(planner, PlanRequest(caption="x", duration=10, seeds=[2]))
    _, off_meta, off_codes = run(planner, PlanRequest(caption="x", duration=10, seeds=[2],
                                                      use_constrained_decoding=False))  # fmt: skip
    assert on_meta[0]["cot_text"].startswith("<think>\nbpm:")
    assert not off_meta[0]["cot_text"].startswith("<think>\nbpm:")
    assert len(on_codes[0]) == 50
    # Off: no codes-only mask and no forced count: it stops at EOS or after the planned duration's 50
    # tokens (upstream allows 500 more; here the codes never outrun the plan), text tokens are dropped.
    assert len(off_codes[0]) <= 50


def test_codes_follow_the_cot_duration_when_none_is_given(planner: Planner) -> None:
    """Upstream 6d467e4's null-duration fix: without a user duration, each song gets exactly the codes of the
    duration its CoT chose, so the DiT receives as many codes as the song it renders."""
    short = Planner(planner.tokenizer, planner.backend, max_duration=12, **TEST_PLANNER_OPTIONS)  # CoT: 10-12 s
    events, metas, codes = run(short, PlanRequest(caption="x", seeds=[2, 3]))
    for item in (0, 1):
        assert 10 <= metas[item]["duration"] <= 12
        assert len(codes[item]) == 5 * metas[item]["duration"]
    totals = {e.total_estimate for e in events if isinstance(e, PhaseProgress) and e.phase == 2}
    assert totals == {5 * max(m["duration"] for m in metas.values())}


def test_constrained_decoding_debug_logs_transitions(planner: Planner, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lm_service.constraints"):
        run(planner, PlanRequest(caption="x", seeds=[1], generate_codes=False, constrained_decoding_debug=True))
    messages = [r.getMessage() for r in caplog.records]
    assert any("-> keyscale_NAME" in m for m in messages)
    assert any("EOS forced" in m for m in messages)


def test_vllm_backend_fails_clearly(tiny_lm_dir) -> None:
    with pytest.raises(FailedPrecondition, match="torch"):
        Planner.load(tiny_lm_dir, backend="vllm")


def test_the_cot_is_decoded_without_cfg_as_upstream(planner: Planner) -> None:
    """Upstream (since a188f4c) runs Phase 1 at scale 1: guidance only shapes the codes."""
    plain = run(planner, PlanRequest(caption="calm piano", duration=10, seeds=[4], lm_cfg_scale=1.0))
    guided = run(planner, PlanRequest(caption="calm piano", duration=10, seeds=[4], lm_cfg_scale=3.0))
    assert plain[1] == guided[1]
    assert plain[2] != guided[2]


def test_caption_end_of_line_follows_the_raw_argmax(planner: Planner) -> None:
    """A blocked token (EOS) on top after a newline ends the caption, as upstream decides it."""
    from lm_service.constraints import CotStateMachine

    vocab, table = planner.cot_vocab, planner.table
    machine = CotStateMachine(vocab, {"bpm": "120"}, skip_caption=False, skip_language=False)
    while machine.field != "caption" or machine.forced:
        machine.advance(machine.rule().allowed[0])
    piano = planner.tokenizer.encode(" piano", add_special_tokens=False)[0]
    machine.advance(piano)
    machine.advance(table.newline_id)
    logits = torch.zeros(table.vocab_size)
    logits[piano] = 5.0  # a continuation line would start with this space-led token...
    logits[table.eos_id] = 6.0  # ...but the raw top token is EOS, which a caption may not contain
    rule = machine.rule(logits)
    assert machine.field == "duration"
    assert rule.allowed == (vocab.name_tokens["duration"][0],)
