"""Throughput under concurrency (not a test): what the tenth user costs.

Two parts, on one stack started here (LM + DiT + orchestrator over gRPC on 127.0.0.1, the servers'
default flags unless given):

1. End to end: N concurrent clients (``--clients 1 2 4 8 16``) each ask the orchestrator for one song
   with its metadata given (so the LM writes exactly 5 codes per second of audio); reports songs/min,
   p50/p95 latency, p50 time to first audio and the LM's aggregate codes/s, and songs/min against
   the same songs one at a time.
2. LM only (Phase 2): N concurrent one-song Plan requests vs one N-song request vs N in a row.

CPU (tiny RANDOM weights, outputs are noise):
    python bench/throughput.py --checkpoints /tmp/acestep-bench-tiny --duration 40 --clients 1 2 4
GPU (released sizes, random weights: bench/full_size_checkpoints.py):
    python bench/throughput.py --checkpoints CKPT --device cuda --duration 240 --clients 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acestep_client import AsyncAceStepClient, GenerationConfig, GenerationParams
from acestep_client.convert import params_to_proto
from acestep_client.proto.acestep.v1 import lm_pb2, lm_pb2_grpc
from orchestrator.stack import ensure_checkpoints, start_stack

CAPTIONS = ("upbeat electronic dance music", "calm solo piano", "gritty blues rock", "lofi hip hop beat",
            "orchestral film score", "latin pop with brass", "ambient drone", "funk with slap bass")  # fmt: skip


def song(index: int, duration: float) -> GenerationParams:
    return GenerationParams(caption=CAPTIONS[index % len(CAPTIONS)], lyrics="[Instrumental]", duration=duration,
                            bpm=100 + index, keyscale="A minor", timesignature="4", thinking=True)  # fmt: skip


async def one_song(address: str, index: int, duration: float) -> tuple[float, float]:
    """(latency, time to first audio) of one song through the orchestrator."""
    config = GenerationConfig(batch_size=1, seeds=[1000 + index], use_random_seed=False)
    start = time.perf_counter()
    first = None
    async with AsyncAceStepClient(address) as client:
        async for event in client.stream(song(index, duration), config):
            if first is None and event.WhichOneof("event") == "audio_chunk":
                first = time.perf_counter() - start
    return time.perf_counter() - start, first or 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def end_to_end(address: str, clients: int, duration: float) -> dict:
    start = time.perf_counter()
    results = await asyncio.gather(*(one_song(address, i, duration) for i in range(clients)))
    wall = time.perf_counter() - start
    latencies = [r[0] for r in results]
    return {"clients": clients, "wall_s": wall, "songs_per_min": 60 * clients / wall,
            "p50_latency_s": statistics.median(latencies), "p95_latency_s": _pct(latencies, 0.95),
            "p50_first_audio_s": statistics.median(r[1] for r in results),
            "lm_codes_per_s": clients * int(5 * duration) / wall}  # fmt: skip


async def plan(stub, seeds: list[int], duration: float, index: int = 0) -> int:
    request = lm_pb2.PlanRequest(params=params_to_proto(song(index, duration)), seeds=seeds, generate_codes=True)
    codes = 0
    async for response in stub.Plan(request):
        if response.WhichOneof("event") == "codes":
            codes += len(response.codes.codes)
    return codes


async def lm_only(address: str, songs: int, duration: float) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = lm_pb2_grpc.LanguageModelServiceStub(channel)
        await plan(stub, [1], 10.0)  # warm up
        timings = {}
        start = time.perf_counter()
        await asyncio.gather(*(plan(stub, [i], duration, i) for i in range(songs)))
        timings["concurrent_s"] = time.perf_counter() - start
        start = time.perf_counter()
        await plan(stub, list(range(songs)), duration)
        timings["one_request_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(songs):
            await plan(stub, [i], duration, i)
        timings["sequential_s"] = time.perf_counter() - start
    return {"songs": songs, **timings, "concurrent_vs_one_request": timings["concurrent_s"] / timings["one_request_s"],
            "concurrent_vs_sequential": timings["concurrent_s"] / timings["sequential_s"],
            "lm_codes_per_s_concurrent": songs * int(5 * duration) / timings["concurrent_s"]}  # fmt: skip


async def main_async(args) -> dict:
    root = ensure_checkpoints(args.checkpoints, announce=lambda line: print(line, file=sys.stderr))
    stack = await start_stack(root, device=args.device, dtype=args.dtype, announce=lambda line: None,
                              lm_flags=args.lm_flags.split(), dit_flags=args.dit_flags.split())  # fmt: skip
    report: dict = {"device": args.device, "duration_s": args.duration, "checkpoints": str(root),
                    "lm_flags": args.lm_flags, "dit_flags": args.dit_flags,
                    "end_to_end": [], "lm_only": []}  # fmt: skip
    try:
        await one_song(stack.address, 0, 10.0)  # warm up every path
        for clients in args.clients:
            row = await end_to_end(stack.address, clients, args.duration)
            report["end_to_end"].append(row)
            print(json.dumps(row), flush=True)
        one = next((r for r in report["end_to_end"] if r["clients"] == 1), None)
        if one is not None:
            for row in report["end_to_end"]:
                row["songs_per_min_vs_one_at_a_time"] = row["songs_per_min"] / one["songs_per_min"]
        if stack.lm is not None:
            for songs in args.lm_songs:
                row = await lm_only(stack.lm.address, songs, args.duration)
                report["lm_only"].append(row)
                print(json.dumps(row), flush=True)
    finally:
        await stack.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="/tmp/acestep-bench-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of audio per song")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--lm-songs", type=int, nargs="+", default=[4])
    parser.add_argument("--lm-flags", default="", help="LM server flags, e.g. '--max-num-seqs 32'")
    parser.add_argument("--dit-flags", default="", help="DiT server flags, e.g. '--batch-wait-ms 10'")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
