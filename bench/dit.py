"""Benchmark the DiT side at real size with random weights (not a test).

Measures, for a 240 s song: 8 turbo DiT steps, the windowed VAE decode, time to the first audio window
and peak GPU memory, at batch 1 and 4. Prints a table and writes JSON to --out.

GPU:  python bench/dit.py --out bench_dit.json            (bf16, real sizes, ~1-3 min incl. init)
      python bench/dit.py --model xl --out bench_dit_xl.json  (the 4B XL DiT: 32 layers x 2560)
CPU:  python bench/dit.py --device cpu --small --out /tmp/dit_small.json
VAE batch of 4 vs 4 single items (CPU, the tiny-checkpoint VAE, 30 s songs, no DiT):
      python bench/dit.py --device cpu --tiny-vae --vae-only --vae-batch 4 --seconds 30 --vae-mode fast \
        --out /tmp/vae_batch.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.released import RELEASED_VAE
from dit_service.model.acestep_model import AceStepModel, build_model_on_meta
from dit_service.model.config import AceStepConfig
from dit_service.model.vae import fold_weight_norm, optimize_vae_for_inference
from dit_service.samplers import SamplerResult, turbo_sample, turbo_schedule
from dit_service.tiny_checkpoint import TINY_VAE_CONFIG, released_dit_config
from dit_service.vae_decode import iter_decoded_windows

REAL_VAE = RELEASED_VAE
SMALL_VAE = {**REAL_VAE, "channel_multiples": [1, 1, 2, 2, 4], "decoder_channels": 16}
SMALL_DIT = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "num_lyric_encoder_hidden_layers": 2,
    "num_timbre_encoder_hidden_layers": 2,
    "fsq_dim": 256,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_init_(module: torch.nn.Module) -> None:
    """Fast in-place random weights on the target device (no per-layer default init)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() == 1 and ("norm" in name or name.endswith("weight_g")):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02)


def build_dit(config: AceStepConfig, device: torch.device, dtype: torch.dtype) -> AceStepModel:
    model = build_model_on_meta(config).to_empty(device=device)
    model.init_non_persistent_buffers()
    model = model.to(dtype)
    random_init_(model)
    return model.eval()


def build_vae(vae_config: dict, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderOobleck

    with torch.device(device):
        vae = AutoencoderOobleck(**vae_config)
    fold_weight_norm(vae)
    vae = vae.to(dtype).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if "alpha" in name or "beta" in name:
                param.zero_()
            elif param.dim() > 1:
                fan_in = param.shape[1] * param.shape[2]
                param.normal_(0.0, (1.0 / fan_in) ** 0.5)
    return vae


def time_dit(model, batch, frames, encoder_tokens, device, dtype, repeats) -> dict:
    config = model.config
    channels = config.audio_acoustic_hidden_dim
    generator = torch.Generator(device=device).manual_seed(0)
    noise = torch.randn(batch, frames, channels, device=device, dtype=dtype, generator=generator)
    context = torch.randn(batch, frames, 2 * channels, device=device, dtype=dtype, generator=generator)
    encoder_hidden = torch.randn(batch, encoder_tokens, config.condition_hidden_size, device=device, dtype=dtype)
    decoder = model.decoder

    schedule = turbo_schedule(8, 3.0)

    def run() -> torch.Tensor:
        cross_kv = decoder.precompute_cross_kv(encoder_hidden)
        result = SamplerResult()
        for _ in turbo_sample(lambda x, t, step, guided: decoder(x, t, context, cross_kv), noise, schedule, result):
            pass
        return result.latents

    times = []
    with torch.inference_mode():
        run()  # warm-up (kernel selection / compile)
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            latents = run()
            sync(device)
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "all": times, "latents": latents}


def time_vae(vae, latents, device, repeats, chunk, overlap) -> dict:
    hop = 1
    for ratio in vae.config.downsampling_ratios:
        hop *= ratio
    totals, firsts = [], []
    with torch.inference_mode():
        for _ in iter_decoded_windows(vae, latents[:, :chunk], hop, chunk=chunk, overlap=overlap):
            pass
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            first = None
            samples = 0
            for _, audio in iter_decoded_windows(vae, latents, hop, chunk=chunk, overlap=overlap):
                samples += audio.shape[-1]
                if first is None:
                    sync(device)
                    first = time.perf_counter() - start
            sync(device)
            totals.append(time.perf_counter() - start)
            firsts.append(first)
    assert samples == latents.shape[1] * hop
    return {"seconds": statistics.median(totals), "first_window_seconds": statistics.median(firsts), "all": totals}


def time_vae_batch(vae, batch, frames, device, dtype, repeats, chunk, overlap) -> dict:
    """Windowed decode of 1 item, of ``batch`` items in one request, and of the same items one by one.

    The three are interleaved within each repeat (medians reported) so that load changes hit all alike.
    A batch should cost at most ``batch`` single items: batch/singles <= 1.
    """
    hop = 1
    for ratio in vae.config.downsampling_ratios:
        hop *= ratio
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, frames, vae.config.decoder_input_channels, generator=generator)
    latents = latents.to(device=device, dtype=dtype)

    def decode(items: torch.Tensor) -> None:
        for _ in iter_decoded_windows(vae, items, hop, chunk=chunk, overlap=overlap):
            pass

    cases = {
        "one_item_s": lambda: decode(latents[:1]),
        "batch_s": lambda: decode(latents),
        "singles_s": lambda: [decode(latents[i : i + 1]) for i in range(batch)],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        decode(latents[:1, :chunk])  # warm-up
        for _ in range(repeats):
            for name, run in cases.items():
                sync(device)
                start = time.perf_counter()
                run()
                sync(device)
                times[name].append(time.perf_counter() - start)
    result: dict = {name: statistics.median(values) for name, values in times.items()}
    result.update(
        batch=batch,
        frames=frames,
        batch_over_one=result["batch_s"] / result["one_item_s"],
        batch_over_singles=result["batch_s"] / result["singles_s"],
        all=times,
    )
    return result


def engine_smoke(device: torch.device) -> None:
    """End-to-end check of the real loading + synthesis path on this device with tiny random checkpoints."""
    import tempfile

    from dit_service.engine import AudioWindow, DiTEngine, SynthesisRequest, TimeCosts
    from dit_service.tiny_checkpoint import write_tiny_dit_checkpoints

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as root:
        write_tiny_dit_checkpoints(Path(root))
        for variant, task in (("acestep-v15-turbo", "text2music"), ("acestep-v15-base", "text2music")):
            engine = DiTEngine.load(root, variant, device=str(device), dtype=dtype)
            req = SynthesisRequest(task_type=task, caption="smoke", duration=30, seeds=[1, 2], inference_steps=8)
            events = list(engine.synthesize(req))
            samples = sum(e.pcm.shape[-1] for e in events if isinstance(e, AudioWindow) and e.item == 0)
            costs = next(e for e in events if isinstance(e, TimeCosts)).values
            print(f"engine smoke {variant} on {device}: {samples} samples, total {costs['total_time_cost']:.3f}s")


def profile(model, vae, frames, args, device, dtype) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    latents = time_dit(model, 1, frames, args.encoder_tokens, device, dtype, 1)["latents"]
    time_vae(vae, latents, device, 1, args.vae_chunk, args.vae_overlap)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    with torch_profile(activities=activities) as prof:
        time_dit(model, 1, frames, args.encoder_tokens, device, dtype, 1)
    print("== DiT (2 runs of 8 steps) ==")
    print(prof.key_averages().table(sort_by=sort_key, row_limit=14, max_name_column_width=60))
    with torch_profile(activities=activities) as prof:
        time_vae(vae, latents, device, 1, args.vae_chunk, args.vae_overlap)
    print("== VAE (2 decodes) ==")
    print(prof.key_averages().table(sort_by=sort_key, row_limit=14, max_name_column_width=60))


def gib(value: int) -> float:
    return value / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="reduced model sizes (for CPU smoke runs)")
    parser.add_argument("--model", choices=("2b", "xl"), default="2b", help="released DiT size (random weights)")
    parser.add_argument("--seconds", type=float, default=None, help="song length (default 240, --small 20)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--encoder-tokens", type=int, default=512, help="packed condition length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vae-chunk", type=int, default=512)
    parser.add_argument("--vae-overlap", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="torch.compile each DiT layer")
    parser.add_argument(
        "--vae-mode",
        choices=["plain", "fast", "compile-snake", "fused", "compile-decoder"],
        default="fused",
        help="plain = diffusers (weight norm folded); fast = precomputed Snake; compile-snake = fused Snake; "
        "fused = fused Snake + conv-bias + residual kernels (falls back to compile-snake if it fails)",
    )
    parser.add_argument("--profile", action="store_true", help="print the top GPU kernels of one b1 run")
    parser.add_argument("--engine-smoke", action="store_true", help="also run the tiny-checkpoint engine here")
    parser.add_argument(
        "--vae-batch", type=int, default=0, help="also time a VAE decode of B items together vs B single items"
    )
    parser.add_argument("--vae-only", action="store_true", help="skip the DiT (only the --vae-batch section)")
    parser.add_argument("--tiny-vae", action="store_true", help="the tiny-checkpoint VAE config (tests / CPU)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.engine_smoke:
        engine_smoke(torch.device(args.device))

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    seconds = args.seconds or (20.0 if args.small else 240.0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    init_start = time.perf_counter()
    if args.small:
        dit_config = AceStepConfig(**SMALL_DIT)
    else:  # the released shapes: 2B (turbo/base/sft) or XL (4B, 2560-wide decoder)
        dit_config = released_dit_config("acestep-v15-xl-turbo" if args.model == "xl" else "acestep-v15-turbo")
    model = None if args.vae_only else build_dit(dit_config, device, dtype)
    vae_config = TINY_VAE_CONFIG if args.tiny_vae else SMALL_VAE if args.small else REAL_VAE
    vae = build_vae(vae_config, device, dtype)
    if args.vae_mode != "plain":
        mode = {"fast": "eager", "compile-decoder": "eager"}.get(args.vae_mode, args.vae_mode)
        optimize_vae_for_inference(vae, mode=mode)
        if mode == "fused":
            try:
                with torch.inference_mode():
                    vae.decode(torch.zeros(1, vae.config.decoder_input_channels, 8, device=device, dtype=dtype))
            except Exception as error:  # keep the benchmark usable if a fused kernel fails to build
                print(f"fused VAE kernels failed ({type(error).__name__}: {error}); using compile-snake")
                vae = build_vae(vae_config, device, dtype)
                optimize_vae_for_inference(vae, mode="compile-snake")
                args.vae_mode = "compile-snake (fused failed)"
    if args.vae_mode == "compile-decoder":
        vae.decoder.compile(dynamic=True)
    if args.compile and model is not None:
        for layer in model.decoder.layers:
            layer.compile(dynamic=False)
    sync(device)
    init_seconds = time.perf_counter() - init_start
    dit_params = sum(p.numel() for p in model.parameters()) if model is not None else 0
    vae_params = sum(p.numel() for p in vae.parameters())
    weights_bytes = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0

    frames = int(seconds * 25)
    vae_batch = None
    if args.vae_batch:
        vae_batch = time_vae_batch(
            vae, args.vae_batch, frames, device, dtype, args.repeats, args.vae_chunk, args.vae_overlap
        )
        b, one = args.vae_batch, vae_batch["one_item_s"]
        print(f"VAE decode, {seconds:.0f} s songs, {torch.get_num_threads()} threads, vae_mode={args.vae_mode}")
        print(f"{'case':>12} {'seconds':>8} {'x 1 item':>8}")
        for label, key in (("1 item", "one_item_s"), (f"batch of {b}", "batch_s"), (f"{b} singles", "singles_s")):
            print(f"{label:>12} {vae_batch[key]:>8.3f} {vae_batch[key] / one:>8.2f}")
        print(f"batch / singles = {vae_batch['batch_over_singles']:.2f} (a batch should cost <= its items one by one)")
    if args.vae_only:
        report = {"device": str(device), "torch": torch.__version__, "dtype": str(dtype), "vae_mode": args.vae_mode}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**report, "vae_config": vae_config, "vae_batch": vae_batch}, indent=2))
        return
    if args.profile:
        profile(model, vae, frames, args, device, dtype)
    rows = []
    for batch in args.batches:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        dit = time_dit(model, batch, frames, args.encoder_tokens, device, dtype, args.repeats)
        vae_result = time_vae(vae, dit["latents"], device, args.repeats, args.vae_chunk, args.vae_overlap)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        rows.append(
            {
                "batch": batch,
                "song_seconds": seconds,
                "latent_frames": frames,
                "dit_8_steps_s": dit["seconds"],
                "dit_per_step_s": dit["seconds"] / 8,
                "vae_decode_s": vae_result["seconds"],
                "time_to_first_window_s": dit["seconds"] + vae_result["first_window_seconds"],
                "vae_first_window_s": vae_result["first_window_seconds"],
                "peak_mem_gib": gib(peak),
                "peak_mem_above_weights_gib": gib(max(peak - weights_bytes, 0)),
                "dit_runs_s": dit["all"],
                "vae_runs_s": vae_result["all"],
            }
        )
        del dit, vae_result

    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "small": args.small,
        "model": args.model,
        "compile": args.compile,
        "vae_mode": args.vae_mode,
        "dit_params": dit_params,
        "vae_params": vae_params,
        "weights_gib": gib(weights_bytes),
        "init_seconds": init_seconds,
        "vae_chunk": args.vae_chunk,
        "vae_overlap": args.vae_overlap,
        "vae_batch": vae_batch,
        "results": rows,
    }
    print(f"device={report['device']} dtype={dtype} dit_params={dit_params:,} vae_params={vae_params:,}")
    print(
        f"init {init_seconds:.1f}s, weights {report['weights_gib']:.2f} GiB, "
        f"compile={args.compile}, vae_mode={args.vae_mode}, vae_chunk={args.vae_chunk}"
    )
    header = f"{'batch':>5} {'song_s':>6} {'dit8_s':>8} {'vae_s':>8} {'first_win_s':>11} {'peak_GiB':>9} {'act_GiB':>8}"
    print(header)
    for row in rows:
        print(
            f"{row['batch']:>5} {row['song_seconds']:>6.0f} {row['dit_8_steps_s']:>8.3f} {row['vae_decode_s']:>8.3f} "
            f"{row['time_to_first_window_s']:>11.3f} {row['peak_mem_gib']:>9.2f} "
            f"{row['peak_mem_above_weights_gib']:>8.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
