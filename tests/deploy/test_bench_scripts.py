"""The one-shot GPU session and its full-size checkpoint writer, checked on the CPU.

A GPU call is rare and cannot be retried cheaply, so its plumbing is tested here: the streamed DiT writer
must write the very file the in-memory writer writes, the full-size constants must agree with the
benchmarks and the release, and bench/gpu_session.sh must keep going past failed steps, respect its
budget and summarise whatever JSON the steps left (driven by a fake ``python``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dit_service.tiny_checkpoint import save_file_streaming, tiny_dit_config, write_dit_folder

REPO = Path(__file__).resolve().parents[2]


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_streamed_dit_folder_equals_in_memory_one(tmp_path: Path) -> None:
    config = tiny_dit_config(True, "turbo")
    write_dit_folder(tmp_path / "memory", config, seed=5)
    write_dit_folder(tmp_path / "streamed", config, seed=5, low_memory=True)
    memory = load_file(str(tmp_path / "memory" / "model.safetensors"))
    streamed = load_file(str(tmp_path / "streamed" / "model.safetensors"))
    assert memory.keys() == streamed.keys()
    assert all(torch.equal(memory[k], streamed[k]) and streamed[k].dtype == torch.bfloat16 for k in memory)
    for name in ("config.json", "silence_latent.pt"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "streamed" / name).read_bytes()


def test_streaming_writer_round_trips_and_rejects_wrong_order(tmp_path: Path) -> None:
    tensors = {"b": torch.randn(3, 5), "a": torch.arange(7, dtype=torch.float32)}
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    save_file_streaming(tmp_path / "x.safetensors", shapes, tensors.items(), torch.float32, {"format": "pt"})
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        assert all(torch.equal(handle.get_tensor(k), v) for k, v in tensors.items())
    with pytest.raises(ValueError, match="arrived where"):
        save_file_streaming(tmp_path / "y.safetensors", shapes, reversed(list(tensors.items())), torch.float32)
    with pytest.raises(ValueError, match="fewer tensors"):
        save_file_streaming(tmp_path / "z.safetensors", shapes, list(tensors.items())[:1], torch.float32)


def test_full_size_constants_match_the_benchmarks_and_the_release() -> None:
    full = load_bench("full_size_checkpoints")
    lm_config = load_bench("lm").model_config(small=False)
    for key, value in full.RELEASED_LM.items():
        if key != "initializer_range":  # the benchmark keeps transformers' default init
            assert getattr(lm_config, key) == value, key
    from orchestrator.stack import DEFAULT_LM_MODEL, RANDOM_WEIGHTS_MARKER

    assert full.RANDOM_WEIGHTS_MARKER == RANDOM_WEIGHTS_MARKER and full.LM_FOLDER == DEFAULT_LM_MODEL
    # Qwen3-Embedding-0.6B's parameter count, from the release's 1,191,586,416-byte bf16 safetensors file.
    from transformers import Qwen3Config, Qwen3Model

    with torch.device("meta"):
        text_encoder = Qwen3Model(Qwen3Config(**full.RELEASED_TEXT_ENCODER))
    assert sum(p.numel() for p in text_encoder.parameters()) == 595_776_512


# A stand-in for the device's python3: each benchmark leaves the JSON its real counterpart writes;
# FAKE_FAIL names one script that exits 3 instead. Anything else goes to the real interpreter.
FAKE_PYTHON = r"""#!/usr/bin/env bash
out=""; args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [[ ${args[i]} == --out || ${args[i]} == --report ]] && out=${args[i+1]}; done
[[ -n ${FAKE_FAIL:-} && $1 == "$FAKE_FAIL" ]] && { echo "boom from $1"; exit 3; }
case "$1" in
  bench/full_size_checkpoints.py)
    mkdir -p "$2" && echo done >"$2/RANDOM_WEIGHTS.txt"
    echo '{"total": {"seconds": 61.5, "bytes": 7660000000, "peak_rss_gib": 3.7}}' >"$out" ;;
  bench/lm.py)
    variant=cuda_graphs; [[ " $* " == *" --compile "* ]] && variant=cuda_graphs+compile
    echo '{"device": "NVIDIA H100 80GB HBM3", "dtype": "torch.bfloat16", "codes": 1200, "prompt_len": 300,
      "ours_cfg": [{"variant": "'$variant'", "songs": 1, "tokens_per_s_per_song": 294.0,
                    "seconds_per_song_batch": 4.08}],
      "hf_generate_no_cfg": [{"songs": 1, "error": "RuntimeError: no"}]}' >"$out" ;;
  bench/e2e.py)
    echo '{"device": "cuda", "dtype": "torch.bfloat16", "duration_s": 240.0, "runs": 3, "in_process_s": 4.5,
      "grpc_s": 4.7, "in_process_first_audio_s": 4.2, "grpc_first_audio_s": 4.3, "overhead_ratio": 1.04}' >"$out" ;;
  bench/throughput.py)
    echo '{"device": "cuda", "duration_s": 240.0, "end_to_end": [{"clients": 16, "songs_per_min": 96.0,
      "songs_per_min_vs_one_at_a_time": 4.8, "p50_latency_s": 8.1, "p95_latency_s": 9.9, "p50_first_audio_s": 7.0,
      "lm_codes_per_s": 1920.0}], "lm_only": [{"songs": 16, "concurrent_s": 5.0, "one_request_s": 4.6,
      "sequential_s": 40.0, "lm_codes_per_s_concurrent": 3840.0}]}' >"$out" ;;
  bench/dit.py)
    echo '{"device": "NVIDIA H100 80GB HBM3", "compile": true, "vae_mode": "fused", "init_seconds": 20.0,
      "results": [{"batch": 1, "dit_8_steps_s": 0.17, "vae_decode_s": 0.3, "time_to_first_window_s": 0.19,
      "peak_mem_gib": 9.0}]}' >"$out" ;;
  bench/adapters.py)
    echo '{"device": "cuda", "size": "real", "batch": 3, "frames": 6000, "seconds_per_step": {"none": 0.05},
      "ratio_to_none": {"lora": 1.04, "lokr": 1.02, "mixed": 1.03}}' >"$out" ;;
  -m) [[ $2 == pytest ]] && echo "3 passed in 2.00s"; exit 0 ;;
  --version) echo "Python 3.12.3" ;;
  *) exec "$REAL_PYTHON" "$@" ;;
esac
"""


def run_session(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    full_env = {**os.environ, "PYTHON": str(fake), "REAL_PYTHON": sys.executable,
                "CKPT_DIR": str(tmp_path / "ckpt"), **env}  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "bench" / "gpu_session.sh"), str(out)], env=full_env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    return result, out


def steps(out: Path) -> dict[str, str]:
    rows = (out / "steps.tsv").read_text().splitlines()[1:]
    return {row.split("\t")[0]: row.split("\t")[1] for row in rows}


needs_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "timeout", "nice")), reason="needs bash, timeout and nice"
)


@needs_tools
def test_gpu_session_runs_every_step_and_summarises(tmp_path: Path) -> None:
    result, out = run_session(tmp_path)
    assert result.returncode == 0, result.stderr
    status = steps(out)
    assert status["env"] == "failed"  # no CUDA here: reported, and the session goes on
    assert {k: v for k, v in status.items() if k != "env"} == {
        "lm": "ok", "ckpt": "ok", "e2e": "ok", "throughput": "ok", "dit": "ok", "cuda_tests": "ok", "lm_compile": "ok",
        "dit_snake": "ok", "dit_xl": "ok", "adapters": "ok",
    }  # fmt: skip
    summary = (out / "summary.txt").read_text()
    assert summary in result.stdout
    assert "gRPC 4.700 s (MISSES the 2 s target)" in summary
    assert "ours [cuda_graphs] CFG songs=1: 294 tok/s per song" in summary
    assert "ours [cuda_graphs+compile]" in summary and "HF generate songs=1: ERROR RuntimeError" in summary
    assert "vae_mode=fused" in summary and "cuda tests: 3 passed" in summary
    assert "7.66 GB written in 61.5 s" in summary
    assert "16 clients: 96.0 songs/min (4.80x one at a time)" in summary and "3840 codes/s concurrent" in summary


@needs_tools
def test_gpu_session_continues_past_a_failed_step_and_reuses_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "RANDOM_WEIGHTS.txt").write_text("complete\n")
    result, out = run_session(tmp_path, FAKE_FAIL="bench/lm.py", GPU_SESSION_STEPS="lm e2e dit")
    assert result.returncode == 0, result.stderr
    status = steps(out)
    assert status["lm"] == "failed" and status["ckpt"] == "reused"
    assert status["e2e"] == "ok" and status["dit"] == "ok" and status["env"] == "not selected"
    assert "lm.json: not available" in (out / "summary.txt").read_text()


@needs_tools
def test_gpu_session_skips_what_the_budget_cannot_fit(tmp_path: Path) -> None:
    all_but_env = "lm e2e dit cuda_tests lm_compile dit_snake"
    result, out = run_session(tmp_path, GPU_SESSION_BUDGET_S="100", GPU_SESSION_STEPS=all_but_env)
    assert result.returncode == 0, result.stderr
    status = steps(out)
    # 100 s minus the 25 s reserve leaves 75 s: lm (needs 60) and cuda_tests (30) start, the 90 s ones cannot.
    assert status["lm"] == "ok"
    assert status["e2e"] == status["dit"] == status["dit_snake"] == status["lm_compile"] == "skipped (budget)"
    assert status["cuda_tests"] == "ok"
    assert json.loads((out / "lm.json").read_text())["codes"] == 1200


def test_wire_bench_reports_bytes_per_song_for_every_stream_encoding(tmp_path: Path) -> None:
    report = load_bench("wire").main(["--sources", "music", "--seconds", "16", "--out", str(tmp_path / "w.json")])
    assert json.loads((tmp_path / "w.json").read_text()) == report
    rows = report["sources"]["music"]
    assert list(rows) == ["pcm_f32le", "pcm_s16le", "flac", "opus"]
    samples = 16 * 48_000 * 2
    assert samples * 4 < rows["pcm_f32le"]["wire_bytes"] < samples * 4 * 1.001  # float32 plus message overhead
    assert rows["pcm_s16le"]["ratio_to_f32"] == pytest.approx(0.5, abs=0.001)
    assert rows["opus"]["wire_bytes"] < rows["flac"]["wire_bytes"] < rows["pcm_s16le"]["wire_bytes"]
    assert all(row["encode_ms_per_window_mean"] > 0 and row["chunks"] >= 2 for row in rows.values())
