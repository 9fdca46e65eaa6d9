"""End-to-end cost of the gRPC split (not a test).

Runs the same request twice over: through the three gRPC services (SDK -> orchestrator -> LM + DiT,
all on 127.0.0.1) and directly in-process (Planner.plan, then DiTEngine.synthesize), on the same
checkpoints, seeds and device. Reports median wall times and their ratio (target <= 1.1x on CPU).

CPU:  python bench/e2e.py --checkpoints /tmp/tiny --runs 5 --out /tmp/e2e.json   (tiny random weights)
GPU:  python bench/e2e.py --checkpoints CKPT --device cuda --duration 240 --out e2e.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acestep_client import AsyncAceStepClient, GenerationConfig, GenerationParams
from acestep_serving.devices import resolve_device, resolve_dtype
from dit_service.engine import AudioWindow, DiTEngine, SynthesisRequest
from lm_service.planner import ItemCodes, ItemMetadata, Planner, PlanRequest
from orchestrator.stack import DEFAULT_DIT_MODEL, DEFAULT_LM_MODEL, ensure_checkpoints, start_stack


def _params(args) -> GenerationParams:
    return GenerationParams(caption="upbeat electronic dance music with heavy bass", duration=args.duration,
                            bpm=128, keyscale="A minor", timesignature="4", thinking=True)


def in_process(planner: Planner, engine: DiTEngine, params: GenerationParams, seed: int) -> tuple[float, float]:
    """The pipeline's computation without gRPC: (wall seconds, seconds to first audio)."""
    start = time.perf_counter()
    metadata, codes = {}, None
    plan = PlanRequest(caption=params.caption, bpm=params.bpm, keyscale=params.keyscale,
                       timesignature=params.timesignature, duration=params.duration, seeds=[seed])
    for event in planner.plan(plan):
        if isinstance(event, ItemMetadata):
            metadata = event.metadata
        elif isinstance(event, ItemCodes):
            codes = [event.codes]
    request = SynthesisRequest(caption=metadata.get("caption") or params.caption, bpm=params.bpm,
                               keyscale=params.keyscale, timesignature=params.timesignature,
                               duration=params.duration, seeds=[seed], audio_codes=codes)
    first = None
    for event in engine.synthesize(request):
        if isinstance(event, AudioWindow) and first is None:
            first = time.perf_counter() - start
    return time.perf_counter() - start, first or 0.0


async def through_grpc(address: str, params: GenerationParams, seed: int) -> tuple[float, float]:
    config = GenerationConfig(batch_size=1, seeds=[seed], use_random_seed=False)
    start = time.perf_counter()
    first = None
    async with AsyncAceStepClient(address) as client:
        async for event in client.stream(params, config):
            if event.WhichOneof("event") == "audio_chunk" and first is None:
                first = time.perf_counter() - start
    return time.perf_counter() - start, first or 0.0


async def main_async(args) -> dict:
    root = ensure_checkpoints(args.checkpoints, announce=lambda line: print(line, file=sys.stderr))
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    params = _params(args)
    planner = Planner.load(root / DEFAULT_LM_MODEL, device=device, dtype=dtype)
    engine = DiTEngine.load(root, DEFAULT_DIT_MODEL, device=device, dtype=dtype)
    stack = await start_stack(root, device=args.device, dtype=args.dtype, announce=lambda line: None)
    loop = asyncio.get_running_loop()
    try:
        direct, remote = [], []
        for run in range(args.runs + 1):  # run 0 warms both paths up
            seed = 1000 + run
            d = await loop.run_in_executor(None, in_process, planner, engine, params, seed)
            r = await through_grpc(stack.address, params, seed)
            if run:
                direct.append(d)
                remote.append(r)
    finally:
        await stack.stop()
    med = {name: statistics.median(v[i] for v in values) for name, values, i in
           [("in_process_s", direct, 0), ("grpc_s", remote, 0),
            ("in_process_first_audio_s", direct, 1), ("grpc_first_audio_s", remote, 1)]}
    med["overhead_ratio"] = med["grpc_s"] / med["in_process_s"]
    return {"device": device, "dtype": str(dtype), "duration_s": args.duration, "runs": args.runs,
            "checkpoints": str(root), **med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="/tmp/acestep-bench-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = asyncio.run(main_async(args))
    for key, value in result.items():
        print(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
