"""Benchmark what a per-request adapter costs per diffusion step (not a test).

Times one DiT forward (one turbo step) through the served path (``batch_ops.run_dit``, the decoder's adapter hooks)
for: no adapter; a LoRA on q/k/v/o (self- and cross-attention, upstream's default targets); a LoKr on the same
layers; a merged batch whose rows carry the LoRA, the LoKr and no adapter (vs the same merged batch without
adapters); and the LoRA merged into the weights (the floor: what a server with one fixed adapter would pay).
Prints seconds per step and the ratio to no adapter, and writes JSON to --out.

CPU, tiny checkpoint shapes:   python bench/adapters.py --device cpu --out /tmp/adapters_tiny.json
CPU, reduced sizes:            python bench/adapters.py --device cpu --size small --out /tmp/adapters_small.json
GPU, the released 2B (bf16):   python bench/adapters.py --size real --out bench_adapters.json
GPU, the 4B XL:                python bench/adapters.py --size real --model xl --out bench_adapters_xl.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dit import SMALL_DIT, build_dit, sync
from dit_service.adapters import AdapterLibrary
from dit_service.adapters.tiny import (
    ATTENTION_TARGETS,
    lokr_tensors,
    lora_tensors,
    targeted,
    write_lycoris_lokr,
    write_peft_lora,
)
from dit_service.batch_ops import DiTCall, run_dit
from dit_service.model.config import AceStepConfig
from dit_service.tiny_checkpoint import VARIANTS, released_dit_config, tiny_dit_config


def bench_config(size: str, model: str) -> AceStepConfig:
    variant = "acestep-v15-xl-turbo" if model == "xl" else "acestep-v15-turbo"
    if size == "real":
        return released_dit_config(variant)
    if size == "small":
        return AceStepConfig(**SMALL_DIT, is_turbo=True)
    return tiny_dit_config(**VARIANTS[variant])


def write_adapters(folder: Path, decoder: torch.nn.Module, lora_rank: int, lokr_rank: int | None) -> None:
    linears = {n: (m.out_features, m.in_features) for n, m in decoder.named_modules() if isinstance(m, torch.nn.Linear)}
    attention = targeted(linears, ATTENTION_TARGETS)
    generator = torch.Generator().manual_seed(0)
    write_peft_lora(folder / "lora", lora_tensors(linears, attention, lora_rank, generator, up_std=0.01),
                    rank=lora_rank, alpha=2 * lora_rank, base_model=None, dtype=torch.bfloat16)
    tensors = lokr_tensors(linears, attention, lokr_rank, 2.0 * (lokr_rank or 1), generator, w2_std=0.01)
    write_lycoris_lokr(folder / "lokr", tensors, rank=lokr_rank or 64, alpha=2.0 * (lokr_rank or 1),
                       dtype=torch.bfloat16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=("tiny", "small", "real"), default="tiny",
                        help="tiny = make-tiny-checkpoints shapes; small = bench/dit.py --small; real = released")
    parser.add_argument("--model", choices=("2b", "xl"), default="2b")
    parser.add_argument("--seconds", type=float, default=30.0, help="song length (25 latent frames per second)")
    parser.add_argument("--batch", type=int, default=2, help="rows per forward (the mixed case splits them)")
    parser.add_argument("--encoder-tokens", type=int, default=512)
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--lokr-rank", type=int, default=None,
                        help="split w2 at this rank; default whole factors (upstream's LoKr defaults give those)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    config = bench_config(args.size, args.model)
    model = build_dit(config, device, dtype)
    decoder = model.decoder
    batch, frames = args.batch, int(args.seconds * 25)
    generator = torch.Generator(device=device).manual_seed(0)
    channels = config.audio_acoustic_hidden_dim

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device=device, dtype=dtype)

    x, context = randn(batch, frames, channels), randn(batch, frames, 2 * channels)
    t = torch.full((batch,), 0.75, device=device, dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        write_adapters(Path(tmp), decoder, args.lora_rank, args.lokr_rank)
        library = AdapterLibrary(tmp, decoder, "bench", device, dtype, cache_bytes=2**40)
        lora, lokr = library.use("lora", 1.0), library.use("lokr", 1.0)
        kv = decoder.precompute_cross_kv(randn(batch, args.encoder_tokens, config.condition_hidden_size))

        def rows(first: int, count: int):
            return [(k[first : first + count], v[first : first + count]) for k, v in kv]

        def call(first: int, count: int, adapter) -> DiTCall:
            return DiTCall(x[first : first + count], t[first : first + count], context[first : first + count],
                           rows(first, count), adapter)

        thirds = [batch // 3 + (i < batch % 3) for i in range(3)] if batch >= 3 else [1] * batch
        starts = [sum(thirds[:i]) for i in range(len(thirds))]
        uses = [lora, lokr, None][: len(thirds)]
        cases = {
            "none": lambda: run_dit(decoder, [call(0, batch, None)]),
            "lora": lambda: run_dit(decoder, [call(0, batch, lora)]),
            "lokr": lambda: run_dit(decoder, [call(0, batch, lokr)]),
            "merged_rows_none": lambda: run_dit(
                decoder, [call(s, n, None) for s, n in zip(starts, thirds, strict=True)]
            ),
            "merged_rows_mixed": lambda: run_dit(
                decoder, [call(s, n, u) for s, n, u in zip(starts, thirds, uses, strict=True)]
            ),
        }
        modules = dict(decoder.named_modules())
        originals = {name: modules[name].weight.clone() for name in lora.adapter.updates}
        merged = {name: originals[name] + update.dense() for name, update in lora.adapter.updates.items()}

        def weights(source: dict[str, torch.Tensor]) -> None:
            for name, weight in source.items():
                modules[name].weight.copy_(weight)

        cases["lora_in_weights"] = lambda: run_dit(decoder, [call(0, batch, None)])  # timed with `merged` set
        times: dict[str, list[float]] = {name: [] for name in cases}
        for run in cases.values():
            run()  # warm-up
        for _ in range(args.repeats):  # interleaved, medians: load changes hit every case alike
            for name, run in cases.items():
                weights(merged if name == "lora_in_weights" else originals)
                sync(device)
                start = time.perf_counter()
                run()
                sync(device)
                times[name].append(time.perf_counter() - start)
        weights(originals)

    seconds = {name: statistics.median(values) for name, values in times.items()}
    ratios = {name: value / seconds["none"] for name, value in seconds.items()}
    ratios["merged_rows_mixed_vs_none"] = seconds["merged_rows_mixed"] / seconds["merged_rows_none"]
    result = {
        "device": str(device), "dtype": str(dtype), "size": args.size, "model": args.model, "batch": batch,
        "frames": frames, "lora_rank": args.lora_rank, "lokr_rank": args.lokr_rank, "threads": torch.get_num_threads(),
        "hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
        "adapted_layers": {"lora": len(lora.adapter.updates), "lokr": len(lokr.adapter.updates)},
        "adapter_bytes": {"lora": lora.adapter.nbytes, "lokr": lokr.adapter.nbytes},
        "seconds_per_step": seconds, "ratio_to_none": ratios,
    }
    print(f"{args.size} {args.model} on {device} ({dtype}), batch {batch}, {frames} frames, LoRA r={args.lora_rank}, "
          f"LoKr {'whole factors' if args.lokr_rank is None else f'r={args.lokr_rank}'}")
    for name, value in seconds.items():
        print(f"  {name:<20} {value * 1e3:9.2f} ms/step  x{ratios[name]:.3f}")
    print(f"  mixed rows vs the same merge without adapters: x{ratios['merged_rows_mixed_vs_none']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
