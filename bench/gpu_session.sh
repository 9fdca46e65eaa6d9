#!/usr/bin/env bash
# One GPU session that measures the numbers we still lack, in a single device call (not a test).
#
# Why one script: a task that is lent a GPU gets 15 minutes of device time in all (start, idle and
# transfers included) and one call may run 10 minutes, so every measurement is prepared here, ordered by
# value, each step under its own timeout, the whole under a hard budget (default 540 s), and a step that
# fails never stops the ones after it.
#
# THE CALL (from the repo root; first `bash bench/fetch_device_wheels.sh` fills .whl with the wheels the
# device image lacks, see below):
#   run(command="bash bench/gpu_session.sh /tmp/gs; tar -czf $OUT/gpu_session.tgz -C /tmp gs; cp /tmp/gs/summary.txt $OUT/",
#       timeout_s=600, carry=[".whl"])
# Then: read summary.txt (also printed at the end of output_tail); untar gpu_session.tgz for every log and
# JSON (lm.json, e2e.json, dit.json, ...); put the numbers into README.md "Measured", naming the card the
# summary reports (H100 and H200 timings are not comparable); call give_back unless you rerun at once.
# A shorter rerun of chosen steps: prefix the command with GPU_SESSION_STEPS="e2e dit" GPU_SESSION_BUDGET_S=300.
#
# Steps, most valuable first (estimates from README "Measured" and the scripts' docstrings, H100/H200):
#   env        ~10 s  nvidia-smi -L, python/torch/CUDA versions, carried wheels into /tmp/site, import check
#   ckpt       ~60 s  bench/full_size_checkpoints.py -> $CKPT (7.7 GB bf16, RANDOM): runs in the background
#                     (nice, 4 CPU threads) while the LM benchmark runs; 75 s on the 2-core CPU machine
#   lm        ~180 s  bench/lm.py: our CFG decode (CUDA graphs; decode attention matmul and sdpa) for 1 and 8
#                     songs of 1,200 codes, then the transformers generate baseline (static cache + compile)
#   e2e       ~120 s  bench/e2e.py --device cuda --duration 240 --runs 3: SDK -> orchestrator -> LM + DiT
#                     over gRPC vs in-process, full-size random weights (target: 240 s song in <= 2 s)
#   throughput ~200 s bench/throughput.py --device cuda --duration 240 --clients 1 4 16 --lm-songs 16:
#                     songs/min and latency under concurrency (LM continuous batching, DiT batcher), full size
#   dit       ~150 s  bench/dit.py --compile (default --vae-mode fused: the fused VAE kernels, never run on a
#                     GPU yet; it falls back to compile-snake and says so in dit.json "vae_mode")
#   cuda_tests ~40 s  pytest tests/lm/test_lm_cuda.py (the only CUDA-only tests; vLLM is not installed there)
#   lm_compile ~120 s bench/lm.py --compile --no-baseline (torch.compile'd layers on top of CUDA graphs)
#   dit_snake ~120 s  bench/dit.py --compile --vae-mode compile-snake --batches 1: same-card baseline for fused
#   dit_xl    ~150 s  bench/dit.py --model xl: the 4B XL DiT (random weights), 8 steps of a 240 s song
#   adapters   ~60 s  bench/adapters.py --size real: a LoRA / LoKr per request vs none, per DiT step, 2B
# The estimates add up to more than the budget on purpose: a step starts only if its minimum still fits,
# and its timeout is cut to what is left, so the tail steps are the ones dropped.
#
# Device environment (/work/.library/device/KINDS.md): python3 there holds a CUDA torch (2.11, cu130 when
# last seen, Python 3.12); the project's venv does not travel. Missing there: diffusers, grpcio-health-checking,
# grpcio-reflection, soundfile (+cffi); grpcio/protobuf there may be older than the committed stubs need.
# Their wheels sit in .whl/ (git-ignored; carried by the call) and go to /tmp/site with --no-deps; the repo
# itself goes on PYTHONPATH (no pip install -e: it would try to resolve torch).
set -euo pipefail

OUTDIR=${1:?usage: bash bench/gpu_session.sh OUTDIR}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET=${GPU_SESSION_BUDGET_S:-540}
STEPS=${GPU_SESSION_STEPS:-"env lm e2e throughput dit cuda_tests lm_compile dit_snake dit_xl adapters"}
CKPT=${CKPT_DIR:-/tmp/acestep-full}
RESERVE=25  # seconds kept for timeout's kill grace, the summary and the caller's tar
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
STEPS_TSV="$OUTDIR/steps.tsv"
for name in env lm ckpt e2e throughput dit cuda_tests lm_compile dit_snake dit_xl adapters; do rm -f "$OUTDIR/$name.log" "$OUTDIR/$name.json"; done
rm -f "$OUTDIR/wheels.log" "$OUTDIR/summary.txt"  # a rerun into the same folder must not report stale numbers
printf 'step\tstatus\trc\tseconds\tlimit_s\n' >"$STEPS_TSV"
cd "$REPO"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
started=$SECONDS

remaining() { echo $((BUDGET - (SECONDS - started))); }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }
note() { echo "[gpu_session +$((SECONDS - started))s] $*"; }

# run_step NAME CAP_S MIN_S CMD...: run CMD under timeout (CAP_S, cut to the budget left) into NAME.log;
# skip it when fewer than MIN_S seconds are left. Never fails, so later steps always get their turn.
run_step() {
    local name=$1 cap=$2 min=$3
    shift 3
    if ! wanted "$name"; then
        printf '%s\tnot selected\t-\t0\t0\n' "$name" >>"$STEPS_TSV"
        return 0
    fi
    local left=$(($(remaining) - RESERVE))
    local limit=$((cap < left ? cap : left))
    if ((limit < min)); then
        note "skip $name: ${left}s left, it needs ${min}s"
        printf '%s\tskipped (budget)\t-\t0\t%s\n' "$name" "$limit" >>"$STEPS_TSV"
        return 0
    fi
    note "start $name (limit ${limit}s): $*"
    local began=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" >"$OUTDIR/$name.log" 2>&1 || rc=$?
    local status=ok
    ((rc == 124 || rc == 137)) && status=timeout
    ((rc != 0 && rc != 124 && rc != 137)) && status=failed
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - began))" "$limit" >>"$STEPS_TSV"
    note "end $name: $status (rc $rc) in $((SECONDS - began))s; last line: $(tail -n 1 "$OUTDIR/$name.log" | cut -c1-160)"
}

# Always runs (a rerun may select steps without env): the carried wheels into /tmp/site, --no-deps.
install_wheels() {
    local wheels=()
    for wheel in "$REPO"/.whl/*.whl; do
        # importlib_metadata 10.x imports lazy_importer (absent there) and diffusers needs it only below 3.8.
        [[ -e $wheel && $(basename "$wheel") != importlib_metadata-* ]] && wheels+=("$wheel")
    done
    if ((${#wheels[@]} == 0)); then
        echo "no .whl/*.whl carried: using the image's packages only (carry=[\".whl\"] in the run call)"
        return 0
    fi
    echo "installing ${#wheels[@]} carried wheels into /tmp/site: ${wheels[*]##*/}"
    local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site)
    timeout 90 "${pip[@]}" "${wheels[@]}" && return 0
    # All or nothing failed (say a cp312 wheel on another Python): install one by one, keep what fits.
    for wheel in "${wheels[@]}"; do
        timeout 30 "${pip[@]}" "$wheel" >/dev/null 2>&1 || echo "WHEEL INSTALL FAILED: ${wheel##*/}"
    done
}

env_step() {
    set +e
    echo "== nvidia-smi -L"; nvidia-smi -L
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    echo "== $(command -v "$PY") ($("$PY" --version 2>&1)); nproc $(nproc); memory/disk:"; free -g; df -h /tmp
    echo "== carried wheels"; cat "$OUTDIR/wheels.log" 2>/dev/null
    "$PY" - <<'EOF'
import importlib, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"available {torch.cuda.is_available()}, device {torch.cuda.get_device_name() if torch.cuda.is_available() else '-'}")
missing = []
for name in ("transformers", "tokenizers", "safetensors", "diffusers", "grpc", "google.protobuf", "grpc_health",
             "grpc_reflection", "soundfile", "prometheus_client", "numpy", "triton", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:18s} {getattr(module, '__version__', '?'):12s} {getattr(module, '__file__', '')}")
    except Exception as error:  # report every missing package, not just the first
        missing.append(name)
        print(f"  {name:18s} MISSING ({type(error).__name__}: {error})")
for name in ("orchestrator.stack", "dit_service.engine", "lm_service.planner", "acestep_client.client"):
    try:
        importlib.import_module(name)
        print(f"  import {name}: ok")
    except Exception as error:
        missing.append(name)
        print(f"  import {name}: FAILED ({type(error).__name__}: {error})")
raise SystemExit(1 if missing or not torch.cuda.is_available() else 0)
EOF
}

writer_pid=""
ckpt_began=0
start_checkpoint_writer() {
    # Background: CPU and disk bound, so it overlaps the GPU-bound LM benchmark (noted in the summary).
    # The writer puts RANDOM_WEIGHTS.txt down last, so its presence means a complete earlier write: reuse it.
    if [[ -f $CKPT/RANDOM_WEIGHTS.txt ]]; then
        note "ckpt: reusing the complete checkpoints in $CKPT"
        printf 'ckpt\treused\t0\t0\t0\n' >>"$STEPS_TSV"
        return 0
    fi
    note "start ckpt in the background -> $CKPT"
    rm -rf "$CKPT"
    OMP_NUM_THREADS=4 nice -n 10 timeout --kill-after=10 300 "$PY" bench/full_size_checkpoints.py "$CKPT" \
        --report "$OUTDIR/ckpt.json" >"$OUTDIR/ckpt.log" 2>&1 &
    writer_pid=$!
    ckpt_began=$SECONDS
}

# Succeeds when complete checkpoints are in $CKPT (written now or reused).
wait_checkpoint_writer() {
    if [[ -z $writer_pid ]]; then
        [[ -f $CKPT/RANDOM_WEIGHTS.txt ]]
        return
    fi
    local rc=0
    wait "$writer_pid" || rc=$?
    writer_pid=""
    local status=ok
    ((rc != 0)) && status=failed
    printf 'ckpt\t%s\t%s\t%s\t300\n' "$status" "$rc" "$((SECONDS - ckpt_began))" >>"$STEPS_TSV"
    note "ckpt: $status (rc $rc), $((SECONDS - ckpt_began))s since it started"
    return "$rc"
}

cleanup() {
    if [[ -n $writer_pid ]] && kill -0 "$writer_pid" 2>/dev/null; then kill "$writer_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
export -f env_step
export REPO PY OUTDIR

note "repo $REPO, outputs $OUTDIR, budget ${BUDGET}s, steps: $STEPS"
install_wheels >"$OUTDIR/wheels.log" 2>&1 || true
note "$(tail -n 1 "$OUTDIR/wheels.log")"
run_step env 60 5 bash -c env_step
head -n 40 "$OUTDIR/env.log" 2>/dev/null || true

ckpt_ok=0
if wanted e2e; then start_checkpoint_writer; fi
run_step lm 240 60 "$PY" bench/lm.py --out "$OUTDIR/lm.json"
if wanted e2e; then wait_checkpoint_writer && ckpt_ok=1 || true; fi
if ((ckpt_ok)); then
    run_step e2e 240 90 "$PY" bench/e2e.py --checkpoints "$CKPT" --device cuda --duration 240 --runs 3 \
        --out "$OUTDIR/e2e.json"
    run_step throughput 200 120 "$PY" bench/throughput.py --checkpoints "$CKPT" --device cuda --duration 240 \
        --clients 1 4 16 --lm-songs 16 --lm-flags "--max-num-seqs 32" --out "$OUTDIR/throughput.json"
elif wanted e2e; then
    printf 'e2e\tskipped (no checkpoints)\t-\t0\t0\n' >>"$STEPS_TSV"
fi
run_step dit 210 90 "$PY" bench/dit.py --compile --out "$OUTDIR/dit.json"
run_step cuda_tests 90 30 "$PY" -m pytest -q -p no:cacheprovider tests/lm/test_lm_cuda.py
run_step lm_compile 200 100 "$PY" bench/lm.py --compile --no-baseline --out "$OUTDIR/lm_compile.json"
run_step dit_snake 150 90 "$PY" bench/dit.py --compile --vae-mode compile-snake --batches 1 \
    --out "$OUTDIR/dit_snake.json"
run_step dit_xl 180 90 "$PY" bench/dit.py --model xl --compile --vae-mode compile-snake --batches 1 \
    --out "$OUTDIR/dit_xl.json"
run_step adapters 120 45 "$PY" bench/adapters.py --size real --batch 3 --seconds 240 --out "$OUTDIR/adapters.json"

"$PY" - "$OUTDIR" "$((SECONDS - started))" >"$OUTDIR/summary.txt" 2>&1 <<'EOF' || true
"""Condense every step's JSON/log into summary.txt (each part guarded: a missing file is reported, not fatal)."""
import csv, json, sys
from pathlib import Path

out, elapsed = Path(sys.argv[1]), sys.argv[2]

def load(name):
    path = out / name
    try:
        return json.loads(path.read_text())
    except Exception as error:
        print(f"{name}: not available ({type(error).__name__})")
        return None

print(f"gpu_session summary ({elapsed} s of script time)")
env = (out / "env.log").read_text(errors="replace").splitlines() if (out / "env.log").exists() else []
print(next((line for line in env if line.startswith("python ")), "env: no python/torch line"))
print(next((line for line in env if line.startswith("GPU ")), "env: no nvidia-smi -L line"))
print("\nsteps:")
for row in csv.DictReader((out / "steps.tsv").open(), delimiter="\t"):
    print(f"  {row['step']:11s} {row['status']:26s} rc {row['rc']:>4s} {row['seconds']:>4s} s (limit {row['limit_s']} s)")
ckpt = load("ckpt.json")
if ckpt:
    total = ckpt["total"]
    print(f"\nfull-size RANDOM checkpoints: {total['bytes'] / 1e9:.2f} GB written in {total['seconds']} s "
          f"(ran concurrently with the lm step)")
for name in ("lm.json", "lm_compile.json"):
    lm = load(name)
    log = out / name.replace(".json", ".log")
    if lm is None and log.exists():  # a timed-out run still printed the rows it finished
        rows = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(("ours [", "HF generate"))]
        print("".join(f"  (from {log.name}) {line}\n" for line in rows), end="")
    if lm:
        print(f"\n{name}: {lm['device']} {lm['dtype']}, {lm['codes']} codes, prompt {lm['prompt_len']}")
        for row in lm["ours_cfg"]:
            print(f"  ours [{row['variant']}] CFG songs={row['songs']}: {row['tokens_per_s_per_song']:.0f} tok/s per song,"
                  f" {row['seconds_per_song_batch']:.2f} s per batch")
        for row in lm["hf_generate_no_cfg"]:
            if "error" in row:
                print(f"  HF generate songs={row['songs']}: ERROR {row['error'][:200]}")
            else:
                print(f"  HF generate (no CFG) songs={row['songs']}: {row['tokens_per_s_per_song']:.0f} tok/s per song,"
                      f" {row['seconds_per_song_batch']:.2f} s")
e2e = load("e2e.json")
if e2e:
    verdict = "MEETS" if e2e["grpc_s"] <= 2.0 else "MISSES"
    print(f"\ne2e ({e2e['device']}, {e2e['dtype']}, {e2e['duration_s']:.0f} s song, median of {e2e['runs']}): "
          f"gRPC {e2e['grpc_s']:.3f} s ({verdict} the 2 s target), in-process {e2e['in_process_s']:.3f} s, "
          f"ratio {e2e['overhead_ratio']:.3f}; first audio gRPC {e2e['grpc_first_audio_s']:.3f} s, "
          f"in-process {e2e['in_process_first_audio_s']:.3f} s")
throughput = load("throughput.json")
if throughput:
    print(f"\nthroughput ({throughput['device']}, {throughput['duration_s']:.0f} s songs, one song per client):")
    for row in throughput["end_to_end"]:
        print(f"  {row['clients']:2d} clients: {row['songs_per_min']:.1f} songs/min "
              f"({row.get('songs_per_min_vs_one_at_a_time', 0):.2f}x one at a time), p50 {row['p50_latency_s']:.2f} s, "
              f"p95 {row['p95_latency_s']:.2f} s, first audio p50 {row['p50_first_audio_s']:.2f} s, "
              f"LM {row['lm_codes_per_s']:.0f} codes/s")
    for row in throughput["lm_only"]:
        print(f"  LM only, {row['songs']} songs: concurrent {row['concurrent_s']:.2f} s, one request "
              f"{row['one_request_s']:.2f} s, in a row {row['sequential_s']:.2f} s; "
              f"{row['lm_codes_per_s_concurrent']:.0f} codes/s concurrent")
for name in ("dit.json", "dit_snake.json", "dit_xl.json"):
    dit = load(name)
    if dit:
        print(f"\n{name}: {dit['device']}, compile={dit['compile']}, vae_mode={dit['vae_mode']}, "
              f"init {dit['init_seconds']:.1f} s")
        for row in dit["results"]:
            print(f"  batch {row['batch']}: 8 steps {row['dit_8_steps_s']:.3f} s, VAE {row['vae_decode_s']:.3f} s, "
                  f"first window {row['time_to_first_window_s']:.3f} s, peak {row['peak_mem_gib']:.1f} GiB")
adapters = load("adapters.json")
if adapters:
    ratios = ", ".join(f"{k} x{v:.3f}" for k, v in adapters["ratio_to_none"].items())
    print(f"\nadapters ({adapters['device']}, {adapters['size']}, batch {adapters['batch']}, {adapters['frames']} "
          f"frames): {adapters['seconds_per_step']['none'] * 1e3:.1f} ms/step without; {ratios}")
tests = out / "cuda_tests.log"
if tests.exists():
    lines = [line for line in tests.read_text(errors="replace").splitlines() if line.strip()]
    print(f"\ncuda tests: {lines[-1] if lines else 'no output'}")
EOF
note "done in $((SECONDS - started))s; outputs in $OUTDIR"
cat "$OUTDIR/summary.txt"
