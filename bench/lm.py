"""Benchmark of the LM Phase-2 decode loop (not a test).

0.6B-shaped Qwen3 (28 layers, hidden 1024, 16/8 heads, head_dim 128, MLP 3072) with the real vocabulary
(217,204), random bf16 weights on the GPU: a ~300-token prompt, then 1,200 audio codes with the CFG
pair (cond + uncond rows), for 1 and 8 songs, through the continuous-batching engine (the songs are
submitted together, as one request's items). Baseline in the same run: transformers ``generate`` with
a static cache and torch.compile, no CFG. Outputs are noise: the weights are random.

    python bench/lm.py --out lm_bench.json            # GPU, full size; decode attention matmul vs sdpa
    python bench/lm.py --device cpu --small           # reduced CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.released import RELEASED_LM
from lm_service.backends.torch_backend import TorchQwen3Backend
from lm_service.decoding import SamplingParams
from lm_service.engine import EngineOptions, GroupSpec, Head, LMEngine
from lm_service.engine.runner import LockstepBatch
from lm_service.vocab import TokenTable

REAL_VOCAB = RELEASED_LM["vocab_size"]
QWEN_BASE_VOCAB = 151_669  # <|audio_code_0|> id in the release


def model_config(small: bool) -> Qwen3Config:
    if small:
        shape = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32)  # fmt: skip
    else:
        shape = {k: v for k, v in RELEASED_LM.items() if k not in ("vocab_size", "max_position_embeddings")}
    return Qwen3Config(
        vocab_size=REAL_VOCAB,
        max_position_embeddings=RELEASED_LM["max_position_embeddings"],
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        eos_token_id=151645,
        pad_token_id=151643,
        **shape,
    )


def build_model(config: Qwen3Config, device: str, dtype: torch.dtype) -> Qwen3ForCausalLM:
    """Random weights created directly on the device (no slow CPU init)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def token_table() -> TokenTable:
    return TokenTable(
        vocab_size=REAL_VOCAB, eos_id=151645, pad_id=151643, newline_id=198, think_start_id=151667,
        think_end_id=151668, audio_code_base=QWEN_BASE_VOCAB, backtick_ids=(63,), special_ids=(),
    )  # fmt: skip


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_ours(backend, songs: int, prompt_len: int, codes: int, device: str, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randint(0, QWEN_BASE_VOCAB, (prompt_len,), generator=gen).tolist()
    uncond = cond[: prompt_len - 40]  # the negative prompt is shorter (empty CoT)
    params = SamplingParams(temperature=0.85, top_k=0, top_p=0.9, cfg_scale=2.0)
    engine = LMEngine(backend, token_table(), torch.tensor([0]),
                      EngineOptions(max_num_seqs=max(2, 2 * songs), max_model_len=prompt_len + codes + 8))  # fmt: skip
    specs = [
        GroupSpec(cond, torch.Generator(device=device).manual_seed(seed + i), params, codes, head=Head.CODES,
                  uncond_prompt=uncond, exact_tokens=codes)
        for i in range(songs)
    ]  # fmt: skip
    sync(device)
    began = time.perf_counter()
    result = None
    for kind, value in engine.run(specs, lambda: False):
        if kind == "done":
            result = value
    sync(device)
    seconds = time.perf_counter() - began
    engine.close()
    assert result is not None and all(len(r) == codes for r in result)
    return {"songs": songs, "codes": codes, "seconds_per_song_batch": seconds,
            "tokens_per_s_per_song": codes / seconds, "seconds_per_song": seconds / songs}  # fmt: skip


def bench_hf_generate(model, songs: int, prompt_len: int, codes: int, device: str) -> dict:
    """transformers generate, static cache + torch.compile, no CFG, no constraints."""
    ids = torch.randint(0, QWEN_BASE_VOCAB, (songs, prompt_len), device=device)
    kwargs = dict(max_new_tokens=codes, min_new_tokens=codes, do_sample=True, temperature=0.85, top_p=0.9,
                  cache_implementation="static", pad_token_id=151643)  # fmt: skip
    model.generate(ids, **{**kwargs, "max_new_tokens": 16, "min_new_tokens": 16})  # compile + warm up
    sync(device)
    began = time.perf_counter()
    out = model.generate(ids, **kwargs)
    sync(device)
    seconds = time.perf_counter() - began
    generated = out.shape[1] - prompt_len
    return {"songs": songs, "codes": generated, "seconds_per_song_batch": seconds,
            "tokens_per_s_per_song": generated / seconds}  # fmt: skip


def profile_steps(backend, prompt_len: int, device: str, steps: int = 64) -> None:
    """Where a decode step's time goes: per-step wall time with/without sampling, top kernels."""
    from torch.profiler import ProfilerActivity, profile

    from lm_service.sampling import cfg_combine, sample_from_logits

    code_ids = torch.arange(QWEN_BASE_VOCAB, QWEN_BASE_VOCAB + 64000, device=device)
    batch = LockstepBatch(backend, [list(range(1000, 1000 + prompt_len))] * 2, 3 * steps + 16, code_ids)
    batch.prefill(codes_only=True)
    tokens = torch.zeros(2, dtype=torch.long, device=device)
    noise = torch.rand(1, 64000, device=device) + 0.5

    def step(sampling: bool) -> None:
        logits = batch.step(tokens, codes_only=True)
        if sampling:
            sample_from_logits(cfg_combine(logits[:1], logits[1:], 2.0), 0.85, 0, 0.9, noise)

    for label, sampling in (("forward only", False), ("forward+sampling", True)):
        for _ in range(4):
            step(sampling)
        sync(device)
        began = time.perf_counter()
        for _ in range(steps // 2):
            step(sampling)
        sync(device)
        print(f"{label}: {(time.perf_counter() - began) / (steps // 2) * 1e3:.3f} ms/step", flush=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(8):
            step(True)
        sync(device)
    sort_key = "cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_key, row_limit=25), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="2-layer model, fewer tokens (CPU smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--songs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-graphs", action="store_true", help="eager decode step (for comparison)")
    parser.add_argument("--profile", action="store_true", help="only profile decode steps, then exit")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd layers")
    parser.add_argument("--decode-attention", nargs="+", default=["matmul", "sdpa"], choices=["matmul", "sdpa"],
                        help="decode attention kernels to compare (TorchQwen3Backend decode_attention)")
    args = parser.parse_args()
    small = args.small or args.device == "cpu"
    prompt_len, codes = (300, 64) if small else (300, 1200)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    began = time.perf_counter()
    model = build_model(model_config(small), args.device, dtype)
    sync(args.device)
    report: dict = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                    "dtype": str(dtype), "small": small, "prompt_len": prompt_len, "codes": codes,
                    "init_seconds": time.perf_counter() - began, "ours_cfg": [], "hf_generate_no_cfg": []}  # fmt: skip
    use_graphs = args.device.startswith("cuda") and not args.no_graphs
    backend = TorchQwen3Backend(model, torch.device(args.device), use_cuda_graphs=use_graphs)
    if args.profile:
        profile_steps(backend, prompt_len, args.device)
        backend.use_cuda_graphs = False
        profile_steps(backend, prompt_len, args.device)
        return
    base_variant = "cuda_graphs" if use_graphs else "eager"
    variants = [f"{base_variant}+{attention}" for attention in args.decode_attention]
    variants += [f"{v}+compile" for v in variants] if use_graphs and args.compile else []
    for variant in variants:
        backend.sdpa_decode = "+sdpa" in variant
        if variant.endswith("compile") and not backend.compiled:
            backend.enable_compile()
        warm = time.perf_counter()
        bench_ours(backend, 1, prompt_len, 32, args.device)  # warm up kernels / compile
        report.setdefault("warmup_seconds", {})[variant] = time.perf_counter() - warm
        for songs in args.songs:
            row = {"variant": variant, **bench_ours(backend, songs, prompt_len, codes, args.device)}
            report["ours_cfg"].append(row)
            print(f"ours [{variant}] (CFG pair) songs={songs}: {row['tokens_per_s_per_song']:.0f} tok/s per song, "
                  f"{row['seconds_per_song_batch']:.2f} s for the batch", flush=True)  # fmt: skip
    if not args.no_baseline:
        for songs in args.songs:
            try:
                row = bench_hf_generate(model, songs, prompt_len, codes, args.device)
            except Exception as error:  # the baseline is best effort; report why it failed
                row = {"songs": songs, "error": f"{type(error).__name__}: {error}"[:500]}
            report["hf_generate_no_cfg"].append(row)
            print(f"HF generate (no CFG) songs={songs}: {row}", flush=True)
    report["total_seconds"] = time.perf_counter() - began
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
