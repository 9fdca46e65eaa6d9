"""GPU checks of the torch backend (skipped without CUDA): bf16 logits match transformers' forward,
CUDA-graph replay gives the same codes as eager steps, and seeds stay independent of batch position."""

from __future__ import annotations

import pytest
import torch

from lm_service.engine.runner import LockstepBatch
from lm_service.planner import ItemCodes, ItemMetadata, Planner, PlanRequest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def gpu_planner(tiny_lm_dir, planner_options) -> Planner:
    return Planner.load(tiny_lm_dir, device="cuda", dtype=torch.bfloat16, planner_options=planner_options)


def _run(planner: Planner, req: PlanRequest) -> tuple[dict[int, str], dict[int, list[int]]]:
    cots, codes = {}, {}
    for event in planner.plan(req):
        if isinstance(event, ItemMetadata):
            cots[event.item] = event.metadata["cot_text"]
        elif isinstance(event, ItemCodes):
            codes[event.item] = event.codes
    return cots, codes


@pytest.mark.parametrize("decode_attention", ["matmul", "sdpa"])
def test_session_logits_match_transformers_forward(tiny_lm_dir, planner_options, decode_attention) -> None:
    """fp32 on the GPU (no TF32 for matmuls by default), so our fused layers must match closely."""
    fp32 = Planner.load(tiny_lm_dir, device="cuda", dtype=torch.float32, planner_options=planner_options,
                        decode_attention=decode_attention)  # fmt: skip
    backend = fp32.backend
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    batch = LockstepBatch(backend, prompts, 4)
    batch.prefill()
    batch.step(torch.tensor([20, 21], device="cuda"))
    logits = batch.step(torch.tensor([22, 23], device="cuda"))
    for row, prompt in enumerate(prompts):
        expected = backend.reference_logits([*prompt, 20 + row, 22 + row])
        assert torch.allclose(logits[row].float(), expected, atol=2e-3, rtol=1e-3)


def test_cuda_graph_replay_equals_eager(gpu_planner: Planner) -> None:
    req = PlanRequest(caption="warm jazz", duration=10.0, seeds=[3, 4])
    gpu_planner.backend.use_cuda_graphs = True
    graphed = _run(gpu_planner, req)
    gpu_planner.backend.use_cuda_graphs = False
    try:
        eager = _run(gpu_planner, req)
    finally:
        gpu_planner.backend.use_cuda_graphs = True
    assert graphed == eager
    assert all(len(c) == 50 for c in graphed[1].values())


def test_gpu_seed_independent_of_batch_position(gpu_planner: Planner) -> None:
    alone = _run(gpu_planner, PlanRequest(caption="rock", duration=10.0, seeds=[11]))
    batched = _run(gpu_planner, PlanRequest(caption="rock", duration=10.0, seeds=[5, 11, 6]))
    assert alone[0][0] == batched[0][1]
    assert alone[1][0] == batched[1][1]
