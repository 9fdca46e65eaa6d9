"""vLLM backend: the vLLM-free core on CPU (tiny checkpoint, real tokenizer and state machines), the
request contract, and, only where vllm and a GPU exist, the backend end to end."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from acestep_client.errors import Cancelled, FailedPrecondition, InvalidArgument
from lm_service import prompts
from lm_service.backends.vllm_backend import VllmBackend, phase1_sampling_kwargs, phase2_sampling_kwargs
from lm_service.backends.vllm_processor import (
    EXTRA_ARGS_KEY,
    ConstraintCore,
    RequestRegistry,
    RequestState,
    validate_extra_args,
)
from lm_service.constraints import CotStateMachine, TokenRule
from lm_service.cot import parse_cot
from lm_service.decoding import SamplingParams, codes_from_tokens
from lm_service.engine.runner import LockstepBatch
from lm_service.planner import ItemCodes, ItemMetadata, PhaseProgress, Planner, PlanRequest
from lm_service.sampling import apply_top_k, apply_top_p, draw_exponential_noise, sample_from_logits

HAS_VLLM = importlib.util.find_spec("vllm") is not None
PARAMS = SamplingParams(temperature=0.85, top_k=40, top_p=0.9, cfg_scale=1.0)


def machine(planner: Planner, **user: str) -> CotStateMachine:
    return CotStateMachine(planner.cot_vocab, user, skip_caption=False, skip_language=False)


def allowed_ids(row: torch.Tensor) -> set[int]:
    return set(torch.isfinite(row).nonzero().flatten().tolist())


def rule_ids(planner: Planner, rule: TokenRule) -> set[int]:
    if rule.allowed is not None:
        return set(rule.allowed)
    assert rule.caption_mask
    return set(range(planner.backend.vocab_size)) - set(planner.cot_vocab.caption_block_ids)


def add(core: ConstraintCore, registry: RequestRegistry, row: int, state: RequestState, out: list[int]) -> str:
    key = registry.register(state)
    core.update([], [(row, {EXTRA_ARGS_KEY: key}, out)], [])
    return key


# -- the request contract ------------------------------------------------------------------------------
def test_cfg_is_refused_with_a_clear_message(planner: Planner) -> None:
    with pytest.raises(InvalidArgument) as info:
        VllmBackend.check_request(PlanRequest())  # API default 2.0
    assert info.value.field == "lm_cfg_scale"
    assert "1.0" in str(info.value) and "classifier-free guidance" in str(info.value) and "torch" in str(info.value)
    VllmBackend.check_request(PlanRequest(lm_cfg_scale=1.0))
    # Through the planner: validate() asks the backend, so nothing runs with CFG silently dropped.
    backend = VllmBackend(None, planner.table, torch.device("cpu"), planner.backend.vocab_size)
    vllm_planner = Planner(planner.tokenizer, backend, max_caption_tokens=24, max_new_tokens=96)
    with pytest.raises(InvalidArgument, match="lm_cfg_scale"):
        vllm_planner.validate(PlanRequest(lm_cfg_scale=2.5))
    vllm_planner.validate(PlanRequest(lm_cfg_scale=1.0))
    with pytest.raises(InvalidArgument, match="lm_cfg_scale"):
        next(backend.run_phase1([[1]], None, [0], SamplingParams(0.85, 0, 0.9, 2.0), 8, lambda: False))


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_load_without_vllm_fails_clearly(tiny_lm_dir) -> None:
    with pytest.raises(FailedPrecondition, match="optional 'vllm' package") as info:
        VllmBackend.load(tiny_lm_dir)
    assert "backend='torch'" in str(info.value)
    with pytest.raises(FailedPrecondition, match="torch"):
        Planner.load(tiny_lm_dir, backend="vllm", device="cuda")


def test_sampling_kwargs(planner: Planner) -> None:
    table = planner.table
    one = phase1_sampling_kwargs(table, PARAMS, 7, 96, "k")
    assert one["top_k"] == 0 and one["top_p"] == 1.0  # vLLM's own filters off: ours run before temperature
    assert one["temperature"] == 0.85 and one["seed"] == 7 and one["max_tokens"] == 96
    assert one["stop_token_ids"] == [table.eos_id, table.pad_id]
    assert one["detokenize"] is False and one["extra_args"] == {EXTRA_ARGS_KEY: "k"}
    lo, hi = table.code_id_range()
    exact = phase2_sampling_kwargs(table, PARAMS, 7, 50, True, 96, "k")
    assert exact["allowed_token_ids"] == list(range(lo, hi)) and exact["max_tokens"] == 50
    assert exact["stop_token_ids"] == []
    open_length = phase2_sampling_kwargs(table, PARAMS, 7, None, True, 96, "k")
    assert open_length["allowed_token_ids"] == [*range(lo, hi), table.eos_id] and open_length["max_tokens"] == 96
    free = phase2_sampling_kwargs(table, PARAMS, 7, None, False, 96, "k")
    assert "allowed_token_ids" not in free and free["stop_token_ids"] == [table.eos_id, table.pad_id]


def test_codes_stop_at_eos_and_skip_text(planner: Planner) -> None:
    table = planner.table
    text = planner.tokenizer.encode("a", add_special_tokens=False)[0]
    base = table.audio_code_base
    assert codes_from_tokens([base + 5, text, base + 65534, table.eos_id, base + 9], table) == [5, 65534]
    assert codes_from_tokens([base, table.pad_id, base + 1], table) == [0]


def test_unregistered_key_is_rejected() -> None:
    registry = RequestRegistry()
    validate_extra_args(None, registry)
    validate_extra_args({"other": 1}, registry)
    validate_extra_args({EXTRA_ARGS_KEY: registry.register(RequestState())}, registry)
    with pytest.raises(ValueError, match="not a request registered"):
        validate_extra_args({EXTRA_ARGS_KEY: "nope"}, registry)


# -- the processor core -----------------------------------------------------------------------------------
def test_row_mask_is_exactly_the_machine_rule(planner: Planner) -> None:
    """Drive one row through a whole CoT: each step the row allows exactly the reference machine's rule,
    the other rows are untouched, and the result parses."""
    registry = RequestRegistry()
    core = ConstraintCore(registry)
    reference, out = machine(planner), []
    add(core, registry, 1, RequestState(machine(planner)), out)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        logits = torch.randn(3, planner.backend.vocab_size, generator=gen) * 4
        original = logits.clone()
        expected = rule_ids(planner, reference.rule(original[1]))
        result = core.apply(logits)
        assert allowed_ids(result[1]) == expected
        kept = sorted(expected)
        assert torch.equal(result[1, kept], original[1, kept])
        assert torch.equal(result[0], original[0]) and torch.equal(result[2], original[2])
        token = int(torch.multinomial(torch.softmax(result[1], -1), 1, generator=gen))
        out.append(token)
        reference.advance(token)
        if reference.finished:
            break
    assert reference.finished and out[-1] == planner.table.eos_id
    metadata = parse_cot(planner.tokenizer.decode(out, skip_special_tokens=False))
    assert {"bpm", "caption", "duration", "keyscale", "language", "timesignature"} <= set(metadata)


def _state_of(m: CotStateMachine) -> tuple:
    return (list(m.forced), m.field_index, m.value_tokens, m.caption_tokens, m.caption_line_ended, m.finished)


def test_chunked_feeding_equals_one_at_a_time(planner: Planner) -> None:
    """Tokens can reach the processor in chunks (a request resumed after preemption); the machine must
    end where token-by-token feeding ends (no caption, whose line-end check reads each step's logits)."""

    def new() -> CotStateMachine:
        return CotStateMachine(planner.cot_vocab, {"bpm": "120"}, skip_caption=True, skip_language=False)

    reference, tokens = new(), []
    gen = torch.Generator().manual_seed(3)
    for _ in range(300):
        if reference.finished:
            break
        logits = torch.randn(planner.backend.vocab_size, generator=gen)
        token = int(sorted(rule_ids(planner, reference.rule(logits)))[0])
        tokens.append(token)
        reference.advance(token)
    registry = RequestRegistry()
    single, chunked = RequestState(new()), RequestState(new())
    out_single, out_chunked = [], []
    core = ConstraintCore(registry)
    add(core, registry, 0, single, out_single)
    add(core, registry, 1, chunked, out_chunked)
    logits = torch.zeros(2, planner.backend.vocab_size)
    for i, token in enumerate(tokens):
        out_single.append(token)
        if i % 4 == 3 or i == len(tokens) - 1:
            out_chunked.extend(tokens[len(out_chunked) : i + 1])
        core.apply(logits.clone())
    assert single.error is None and chunked.error is None
    assert single.consumed == chunked.consumed == len(tokens)
    assert _state_of(single.machine) == _state_of(chunked.machine) == _state_of(reference)


def test_rows_keep_their_requests_across_batch_updates(planner: Planner) -> None:
    registry = RequestRegistry()
    core = ConstraintCore(registry)
    table = planner.table
    machines = [machine(planner) for _ in range(3)]
    for m, prefix in zip(machines, ([], [table.think_start_id], [table.think_start_id, table.newline_id]), strict=True):
        for token in prefix:
            m.advance(token)
    expected = [rule_ids(planner, m.rule()) for m in machines]
    assert len({frozenset(e) for e in expected}) == 3
    states = [RequestState(m) for m in machines]
    for row, state in enumerate(states):
        add(core, registry, row, state, [])
    width = planner.backend.vocab_size

    def check(layout: list[int | None]) -> None:
        result = core.apply(torch.zeros(len(layout), width))
        for row, request in enumerate(layout):
            assert allowed_ids(result[row]) == (set(range(width)) if request is None else expected[request])

    check([0, 1, 2])
    core.update([], [], [(0, 2, True)])  # swap
    check([2, 1, 0])
    core.update([1], [], [(2, 1, False)])  # request 1 finished, last row condensed into its slot
    check([2, 0])
    key = registry.register(states[1])
    core.update([1], [(1, {EXTRA_ARGS_KEY: key}, [])], [])  # removed -> added (order matters) at one row
    check([2, 1])
    core.update([], [(1, None, [])], [])  # a foreign request takes row 1
    check([2, None])


def test_resumed_request_is_not_fed_twice_and_placeholders_wait(planner: Planner) -> None:
    registry = RequestRegistry()
    core = ConstraintCore(registry)
    table = planner.table
    state = RequestState(machine(planner))
    key = add(core, registry, 0, state, [table.think_start_id, -1])  # -1: async-scheduling placeholder
    result = core.apply(torch.zeros(1, planner.backend.vocab_size))
    assert state.consumed == 1 and allowed_ids(result[0]) == {table.newline_id}
    core.update([0], [], [])  # preempted
    resumed = [table.think_start_id, table.newline_id]  # vLLM hands a new list with every token so far
    core.update([], [(3, {EXTRA_ARGS_KEY: key}, resumed)], [])
    result = core.apply(torch.zeros(4, planner.backend.vocab_size))
    reference = machine(planner)
    for token in resumed:
        reference.advance(token)
    assert state.error is None and state.consumed == 2
    assert allowed_ids(result[3]) == rule_ids(planner, reference.rule())


def test_forced_token_mismatch_ends_the_row_instead_of_raising(planner: Planner) -> None:
    registry = RequestRegistry()
    core = ConstraintCore(registry)
    state = RequestState(machine(planner))
    add(core, registry, 0, state, [planner.table.newline_id])  # <think> was forced
    result = core.apply(torch.zeros(1, planner.backend.vocab_size))
    assert state.error is not None and "forced token" in state.error
    assert allowed_ids(result[0]) == {planner.table.eos_id}


def test_top_k_top_p_per_row_before_temperature(planner: Planner) -> None:
    registry = RequestRegistry()
    core = ConstraintCore(registry)
    plain, other = RequestState(top_k=5, top_p=0.8), RequestState(top_k=0, top_p=0.5)
    captioned = RequestState(machine(planner), top_k=40, top_p=0.9)
    for token in [planner.table.think_start_id, planner.table.newline_id, *planner.cot_vocab.name_tokens["bpm"]]:
        captioned.machine.advance(token)
    for value_token in planner.cot_vocab.encode_value("bpm", "120"):
        captioned.machine.advance(value_token)
    captioned.machine.advance(planner.table.newline_id)
    for token in planner.cot_vocab.name_tokens["caption"]:
        captioned.machine.advance(token)
    assert captioned.machine.rule().caption_mask
    for row, state in enumerate([plain, other, captioned]):
        add(core, registry, row, state, [])
    logits = torch.randn(4, planner.backend.vocab_size, generator=torch.Generator().manual_seed(1)) * 3
    result = core.apply(logits.clone())
    assert torch.equal(result[0:1], apply_top_p(apply_top_k(logits[0:1], 5), 0.8))
    assert torch.equal(result[1:2], apply_top_p(logits[1:2], 0.5))
    captioned_row = logits[2:3].index_fill(1, planner.cot_vocab.caption_block_tensor, float("-inf"))
    assert torch.equal(result[2:3], apply_top_p(apply_top_k(captioned_row, 40), 0.9))
    assert torch.equal(result[3], logits[3])
    assert 1 <= len(allowed_ids(result[0])) <= 5  # the filters really cut
    assert len(allowed_ids(result[2])) < len(allowed_ids(logits[2]))


def _condense(batch: list[int], done_rows: set[int]) -> tuple[list[int], list[int], list[tuple[int, int, bool]]]:
    """vLLM's InputBatch.condense: move the last live rows into the lowest holes; unfilled holes are removed."""
    batch, holes, moved = list(batch), sorted(done_rows), []
    empty, last = set(done_rows), len(batch) - 1
    for hole in list(holes):
        while last in empty:
            last -= 1
        if hole >= last:
            break
        batch[hole] = batch[last]
        moved.append((last, hole, False))
        empty.discard(hole)
        empty.add(last)
        holes.remove(hole)
        last -= 1
    return [item for row, item in enumerate(batch) if row not in empty], holes, moved


def _phase1_like_vllm(planner, rows, machines, seeds, params) -> list[list[int]]:
    """Our core fed the way vLLM feeds it (live output lists, swaps, condensation on finish), the tiny
    model's logits, and a sampler that only applies temperature (vLLM's part)."""
    registry = RequestRegistry()
    core = ConstraintCore(registry)
    session = LockstepBatch(planner.backend, rows, planner.max_new_tokens)
    outputs: list[list[int]] = [[] for _ in rows]
    batch = list(range(len(rows)))  # batch row -> item
    for row, item in enumerate(batch):
        state = RequestState(machines[item] if machines else None, params.top_k, params.top_p)
        add(core, registry, row, state, outputs[item])
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    stops = {planner.table.eos_id, planner.table.pad_id}
    logits = session.prefill()
    for step in range(planner.max_new_tokens):
        if step % 3 == 1 and len(batch) > 1:  # vLLM reorders its persistent batch
            batch[0], batch[-1] = batch[-1], batch[0]
            core.update([], [], [(0, len(batch) - 1, True)])
        processed = core.apply(logits.float()[batch].clone())
        for row, item in enumerate(batch):
            noise = draw_exponential_noise([generators[item]], processed.shape[-1], "cpu")
            outputs[item].append(int(sample_from_logits(processed[row : row + 1], params.temperature, 0, 1.0, noise)))
        done = {row for row, item in enumerate(batch) if outputs[item][-1] in stops}
        if done:
            batch, removed, moved = _condense(batch, done)
            core.update(removed, [], moved)
        if not batch:
            break
        feed = [out[-1] if out[-1] not in stops else planner.table.eos_id for out in outputs]
        logits = session.step(torch.tensor(feed))
    return outputs


@pytest.mark.parametrize("constrained", [True, False])
def test_core_reproduces_torch_backend_tokens(planner: Planner, constrained: bool) -> None:
    """Same logits, seeds and noise: the core + temperature-only sampling gives the torch loop's exact tokens."""
    seeds = [11, 12, 13]
    rows = [planner.tokenizer.encode(prompts.phase1_prompt(f"song {s}", "la"), add_special_tokens=False) for s in seeds]

    users = [{"bpm": "120", "keyscale": "C major"}, {}, {"timesignature": "4"}]  # CoTs of different lengths

    def machines() -> list[CotStateMachine] | None:
        return [machine(planner, **user) for user in users] if constrained else None

    torch_run = planner.decode_text(rows, machines(), seeds, PARAMS, lambda: False)
    expected = next(value for kind, value in torch_run if kind == "done")
    assert _phase1_like_vllm(planner, rows, machines(), seeds, PARAMS) == expected
    if constrained:
        assert all(out[-1] == planner.table.eos_id for out in expected)
        assert len({len(out) for out in expected}) > 1  # rows finish apart: the batch is condensed


# -- end to end on a GPU with vllm installed (never in CI) -----------------------------------------------
@pytest.fixture(scope="module")
def vllm_planner(tiny_lm_dir, planner_options) -> Planner:
    if not (HAS_VLLM and torch.cuda.is_available()):
        pytest.skip("needs the vllm extra and CUDA")
    return Planner.load(tiny_lm_dir, backend="vllm", device="cuda", dtype=torch.bfloat16,
                        planner_options=planner_options, gpu_memory_utilization=0.3)  # fmt: skip


def test_vllm_end_to_end(vllm_planner: Planner) -> None:
    req = PlanRequest(caption="warm jazz", duration=10.0, seeds=[3, 4], lm_cfg_scale=1.0)
    events = list(vllm_planner.plan(req))
    metas = {e.item: e.metadata for e in events if isinstance(e, ItemMetadata)}
    codes = {e.item: e.codes for e in events if isinstance(e, ItemCodes)}
    for item in (0, 1):
        assert metas[item]["cot_text"].startswith("<think>\nbpm:")
        assert {"bpm", "keyscale", "timesignature", "language"} <= set(metas[item])
        assert len(codes[item]) == 50 and all(0 <= c <= 63999 for c in codes[item])
    assert any(isinstance(e, PhaseProgress) and e.phase == 2 for e in events)
    assert not vllm_planner.backend.driver.engine.has_unfinished_requests()


def test_vllm_cancel_aborts_requests(vllm_planner: Planner) -> None:
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        list(vllm_planner.plan(PlanRequest(caption="x", duration=30.0, seeds=[1], lm_cfg_scale=1.0), stop_soon))
    assert not vllm_planner.backend.driver.engine.has_unfinished_requests()
