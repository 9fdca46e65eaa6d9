"""Many users at once through the three real services: requests share the LM's decode batch and the
DiT's forwards, and no request can tell. Tiny random checkpoints (audio is noise), CPU, fp32."""

from __future__ import annotations

import threading
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from acestep_client import AceStepClient, GenerationConfig, GenerationParams

SONGS = [
    (GenerationParams(caption="calm piano", lyrics="[Verse]\nla la la", duration=10),
     GenerationConfig(batch_size=1, seeds=[1], use_random_seed=False)),
    (GenerationParams(caption="loud rock anthem", lyrics="[Chorus]\n" + "yeah " * 60, duration=12, lm_cfg_scale=2.5),
     GenerationConfig(batch_size=1, seeds=[2], use_random_seed=False)),
    (GenerationParams(caption="jazz trio", thinking=False, duration=10, bpm=90, keyscale="F major", timesignature="3"),
     GenerationConfig(batch_size=1, seeds=[4], use_random_seed=False)),
    (GenerationParams(caption="ambient", lyrics="[Instrumental]", thinking=False, duration=10, bpm=70,
                      keyscale="C major", timesignature="4"),
     GenerationConfig(batch_size=2, seeds=[5, 6], use_random_seed=False)),
]  # fmt: skip


def _song(address: str, params: GenerationParams, config: GenerationConfig) -> dict:
    with AceStepClient(address) as client:
        result = client.generate(params, config)
    assert result.success, result.error
    return {
        "audio": [a["tensor"].numpy() for a in result.audios],
        "codes": [a["params"].get("audio_codes") for a in result.audios],
        "metadata": result.extra_outputs.get("lm_metadata"),
    }


def _sample(address: str) -> tuple:
    with AceStepClient(address) as client:
        sample = client.create_sample("a sad waltz", seed=11, max_new_tokens=40)
    assert sample.success, sample.error
    return sample.caption, sample.lyrics, sample.bpm, sample.duration, sample.keyscale


# More than any one request of SONGS fills alone: 2 LM rows (a CFG pair), 2 DiT items. The three LM users
# start their CoTs together (3 rows); the two requests without LM planning reach the DiT together (3 rows).
ALONE_AT_MOST = {"acestep_lm_batch_rows": "2.0", "acestep_dit_batch_items": "2.0"}


def _merged_counts(address: str) -> dict[str, float]:
    """Observations of LM decode steps / DiT forwards larger than any single request's."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        if family.name in ALONE_AT_MOST:
            samples = family.samples
            total = sum(s.value for s in samples if s.name.endswith("_count"))
            small = sum(s.value for s in samples if s.name.endswith("_bucket") and s.labels["le"] == ALONE_AT_MOST[
                family.name])
            counts[family.name] = total - small
    return counts


def test_concurrent_users_get_exactly_what_they_get_alone(stack):
    metrics = f"127.0.0.1:{stack.stack.metrics_port}"
    alone = [_song(stack.address, *job) for job in SONGS]
    sample_alone = _sample(stack.address)
    before = _merged_counts(metrics)

    results: list = [None] * (len(SONGS) + 1)

    def work(index: int) -> None:
        results[index] = _sample(stack.address) if index == len(SONGS) else _song(stack.address, *SONGS[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    after = _merged_counts(metrics)

    assert results[-1] == sample_alone
    for together, single in zip(results[:-1], alone, strict=True):
        assert together["codes"] == single["codes"] and together["metadata"] == single["metadata"]
        for a, b in zip(together["audio"], single["audio"], strict=True):
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
    # Steps really were shared: LM decode steps with rows of several requests, DiT forwards of several items.
    assert after["acestep_lm_batch_rows"] > before["acestep_lm_batch_rows"]
    assert after["acestep_dit_batch_items"] > before["acestep_dit_batch_items"]


def test_overload_beyond_kv_slots_and_queue_is_refused_and_loses_nothing(tiny_root):
    """2 KV slots, 2 running requests, 1 queued: of 6 CFG songs at once, 3 finish whole and 3 are refused."""
    import asyncio

    import grpc

    from acestep_client.convert import params_to_proto
    from acestep_client.proto.acestep.v1 import lm_pb2, lm_pb2_grpc
    from lm_service import server as lm_server

    args = lm_server.build_parser().parse_args(
        ["--checkpoints", str(tiny_root), "--device", "cpu", "--dtype", "float32", "--port", "0",
         "--max-num-seqs", "2", "--max-concurrency", "2", "--queue-size", "1"])  # fmt: skip
    params = params_to_proto(GenerationParams(caption="x", duration=10, bpm=100, keyscale="C major", timesignature="4"))

    async def plan(stub, seed: int):
        codes = []
        try:
            async for response in stub.Plan(lm_pb2.PlanRequest(params=params, seeds=[seed], generate_codes=True)):
                if response.WhichOneof("event") == "codes":
                    codes.append(list(response.codes.codes))
        except grpc.aio.AioRpcError as error:
            return error
        return codes

    async def scenario():
        running = await lm_server.start(args, announce=lambda line: None)
        await running.loaded
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = lm_pb2_grpc.LanguageModelServiceStub(channel)
            outcomes = await asyncio.gather(*(plan(stub, seed) for seed in range(6)))
        pool = running.servicer.planner.engine.pool
        await running.stop()
        return outcomes, pool.active

    outcomes, active = asyncio.run(scenario())
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    finished = [o for o in outcomes if not isinstance(o, grpc.aio.AioRpcError)]
    assert len(refused) == 3 and len(finished) == 3
    assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue size 1" in e.details() for e in refused)
    assert all(len(codes) == 1 and len(codes[0]) == 50 for codes in finished)  # 10 s = 50 codes, none lost
    assert active == 0


def _kv_usage(metrics_address: str) -> float:
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5).read().decode()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "acestep_lm_kv_cache_usage_ratio")
    return family.samples[0].value


def test_cancelling_one_of_four_plans_frees_its_kv_slots_and_changes_no_other(stack):
    import asyncio
    import time

    import grpc

    from acestep_client.convert import params_to_proto
    from acestep_client.proto.acestep.v1 import lm_pb2, lm_pb2_grpc

    metrics = f"127.0.0.1:{stack.stack.metrics_port}"
    requests = [
        lm_pb2.PlanRequest(params=params_to_proto(GenerationParams(
            caption=f"song {i}", duration=10 + i, bpm=90 + i, keyscale="E minor", timesignature="4")),
            seeds=[i], generate_codes=True)
        for i in range(4)
    ]  # fmt: skip

    async def plan(stub, request, cancel_after: int | None = None):
        """The plan's metadata and codes (progress and timings vary); None once cancelled."""
        call = stub.Plan(request)
        results, seen = [], 0
        async for response in call:
            seen += 1
            if cancel_after is not None and seen >= cancel_after:
                call.cancel()
                return None
            if response.WhichOneof("event") in ("metadata", "codes"):
                results.append(response.SerializeToString())
        return results

    async def scenario():
        async with grpc.aio.insecure_channel(stack.stack.lm.address) as channel:
            stub = lm_pb2_grpc.LanguageModelServiceStub(channel)
            alone = [await plan(stub, r) for r in requests[:3]]
            before = _kv_usage(metrics)
            together = await asyncio.gather(*(plan(stub, r) for r in requests[:3]), plan(stub, requests[3], 2))
        return alone, together, before

    alone, together, before = asyncio.run(scenario())
    assert together[:3] == alone and together[3] is None
    deadline = time.monotonic() + 5
    while _kv_usage(metrics) != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _kv_usage(metrics) == before == 0.0
