"""Write RANDOM weights at the released ACE-Step 1.5 sizes, in the released folder layout (not a test).

Why: the released weights cannot be downloaded on the build or GPU machines, yet the end-to-end numbers
(``bench/e2e.py`` through the three gRPC services) must come from real-size models loaded by the real
code (``DiTEngine.load``, ``Planner.load``, the servers). This writes, through the same writers as the
tiny test checkpoints (``dit_service/tiny_checkpoint.py``, ``lm_service/tiny_checkpoint.py``):

  acestep-v15-turbo/     2B DiT (AceStepConfig defaults = the release), 2,393,872,518 params, streamed
                         (--variants acestep-v15-xl-turbo: the XL DiT, 4,987,310,726 params)
  vae/                   AutoencoderOobleck with the released config
  Qwen3-Embedding-0.6B/  Qwen3Model at the released shape; the tokenizer is the tiny byte-level one
  acestep-5Hz-lm-0.6B/   Qwen3ForCausalLM 0.6B shape, vocab 217,204; the tokenizer is the tiny LM one
                         (every id < 66,761, audio codes contiguous), so only the LM's speed is real

About 7.5 GB in bf16; peak RAM about 3 GB (the DiT never sits in memory whole). Outputs are NOISE.

    python bench/full_size_checkpoints.py /tmp/acestep-full            # bf16, seed 0, all parts
    python bench/full_size_checkpoints.py DIR --parts dit vae --variants acestep-v15-turbo acestep-v15-base
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.released import RELEASED_LM, RELEASED_TEXT_ENCODER, RELEASED_VAE
from dit_service.loading import TEXT_ENCODER_FOLDER, VAE_FOLDER
from dit_service.model.config import AceStepConfig
from dit_service.tiny_checkpoint import (
    VARIANTS,
    released_dit_config,
    write_dit_folder,
    write_text_encoder_folder,
    write_vae_folder,
)
from lm_service.tiny_checkpoint import write_tiny_lm_checkpoint
from orchestrator.stack import DEFAULT_LM_MODEL as LM_FOLDER
from orchestrator.stack import RANDOM_WEIGHTS_MARKER  # its presence makes every server warn that audio is noise

PARTS = ("dit", "vae", "text-encoder", "lm")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
BANNER = "!" * 100


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _write_dit(folder: Path, config: AceStepConfig, seed: int, dtype: torch.dtype) -> None:
    """Streamed (meta model, one tensor at a time): the 2B DiT never sits in RAM whole."""
    write_dit_folder(folder, config, seed, dtype=dtype, low_memory=True, random_marker="_random_checkpoint")


def _write_lm(folder: Path, seed: int, dtype: torch.dtype) -> None:
    write_tiny_lm_checkpoint(folder.parent, seed, folder.name, config_overrides=RELEASED_LM, dtype=dtype)


def write_full_size_checkpoints(
    root: Path,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    parts: tuple[str, ...] = PARTS,
    variants: tuple[str, ...] = ("acestep-v15-turbo",),
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """Write the requested parts under ``root``; returns seconds and bytes per written folder.

    Seeds follow ``write_tiny_dit_checkpoints`` (DiT variant i: seed+i, VAE seed+10, text encoder
    seed+20, LM seed), so a run is reproducible.
    """
    root.mkdir(parents=True, exist_ok=True)
    # The marker goes down last: its presence tells bench/gpu_session.sh that a write completed.
    (root / RANDOM_WEIGHTS_MARKER).unlink(missing_ok=True)
    writers: list[tuple[str, Callable[[Path], object]]] = []
    if "dit" in parts:
        for offset, name in enumerate(VARIANTS):
            if name in variants:
                writers.append((name, partial(_write_dit, config=released_dit_config(name), seed=seed + offset,
                                              dtype=dtype)))  # fmt: skip
    if "vae" in parts:
        writers.append((VAE_FOLDER, partial(write_vae_folder, seed=seed + 10, config=RELEASED_VAE, dtype=dtype)))
    if "text-encoder" in parts:
        writers.append((TEXT_ENCODER_FOLDER, partial(write_text_encoder_folder, seed=seed + 20,
                                                     config_overrides=RELEASED_TEXT_ENCODER, dtype=dtype)))  # fmt: skip
    if "lm" in parts:
        writers.append((LM_FOLDER, partial(_write_lm, seed=seed, dtype=dtype)))
    report: dict[str, dict[str, float]] = {}
    for name, write in writers:
        began = time.perf_counter()
        write(root / name)
        seconds = time.perf_counter() - began
        size = folder_bytes(root / name)
        report[name] = {"seconds": round(seconds, 2), "bytes": size}
        log(f"  wrote {name:24s} {size / 1e9:6.2f} GB in {seconds:6.1f} s (peak RSS so far {peak_rss_gib():.1f} GiB)")
    (root / RANDOM_WEIGHTS_MARKER).write_text(
        f"Written by bench/full_size_checkpoints.py (seed {seed}, {dtype}): RANDOMLY INITIALISED weights at the "
        "released ACE-Step 1.5 sizes, in the released layout, for benchmarks only. Their audio is noise.\n"
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="saved dtype (release: bf16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["acestep-v15-turbo"],
                        help="DiT variant folders to write (bf16: 2B ~4.8 GB, XL ~10 GB each)")  # fmt: skip
    parser.add_argument("--report", type=Path, help="also write the per-folder seconds/bytes as JSON here")
    args = parser.parse_args()
    warning = f"WARNING: RANDOM WEIGHTS at full released size in {args.root}: benchmarks only, the audio is NOISE"
    print(f"{BANNER}\n{warning}\n{BANNER}", flush=True)
    began = time.perf_counter()
    report = write_full_size_checkpoints(
        args.root, DTYPES[args.dtype], args.seed, tuple(args.parts), tuple(args.variants),
        log=lambda line: print(line, flush=True),
    )  # fmt: skip
    total = {"seconds": round(time.perf_counter() - began, 2), "bytes": sum(r["bytes"] for r in report.values()),
             "peak_rss_gib": round(peak_rss_gib(), 2)}  # fmt: skip
    print(f"total {total['bytes'] / 1e9:.2f} GB in {total['seconds']:.1f} s, peak RSS {total['peak_rss_gib']} GiB")
    print(f"{BANNER}\n{warning}\n{BANNER}", flush=True)
    if args.report:
        args.report.write_text(json.dumps({"root": str(args.root), "dtype": args.dtype, "seed": args.seed,
                                           "parts": report, "total": total}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
