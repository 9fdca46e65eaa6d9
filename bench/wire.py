"""Bytes on the wire per song for each stream encoding, and what encoding/decoding costs (not a test).

Each source is cut into the DiT's VAE windows (15.36 s cores) and every window goes through the DiT
service's own chunker (dit_service.server._chunks, default chunk size), exactly as a Synthesize stream
sends it; the orchestrator forwards those messages untouched. Bytes are the serialized
GenerateMusicResponse messages plus gRPC's 5-byte message prefix (HTTP/2 framing adds ~9 bytes per
16 KiB frame on top), per item, scaled to ``--seconds`` when a source is shorter. Encode times are one
core's (the chunks of a window one after the other); the service encodes a window's chunks on parallel
threads, so its wall time per window is lower on a machine with free cores. Decode times are the SDK's
decode_chunk, one core.

Sources:
- ``model``: the tiny random DiT's output (in-process DiTEngine, CPU). It is broadband noise plus a DC
  offset, which no audio codec compresses well (and Opus drops the DC): a worst case, not music.
- ``music``: a synthetic music-like signal (chords of a few harmonics under note envelopes, a bass line,
  soft noise hats, slightly different channels), peak 0.9.

CPU:  python bench/wire.py --out /tmp/wire.json                   (both sources, 240 s)
      python bench/wire.py --sources music --seconds 30           (quick)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acestep_client.constants import SAMPLE_RATE, STREAM_ENCODINGS
from acestep_client.proto.acestep.v1 import orchestrator_pb2
from acestep_client.wire_audio import decode_chunk
from dit_service.engine import AudioWindow, DiTEngine, SynthesisRequest
from dit_service.server import DEFAULT_CHUNK_FRAMES, _chunks
from dit_service.vae_decode import plan_windows
from orchestrator.stack import DEFAULT_DIT_MODEL, ensure_checkpoints

HOP = 1920  # samples per VAE latent frame (25 Hz at 48 kHz)
GRPC_PREFIX = 5  # compressed flag + length of every gRPC message


def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """[2, samples] float32: four-beat chords (harmonics 1-6, 1/k), a bass line and noise hats at 120 bpm."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    beat = 0.5
    since_beat = t % beat
    chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (164.8, 207.7, 246.9))
    left = np.zeros(n)
    right = np.zeros(n)
    bar = (t // (4 * beat)).astype(int) % len(chords)
    for which, chord in enumerate(chords):
        mask = bar == which
        for voice, f0 in enumerate(chord):
            tone = sum(np.sin(2 * np.pi * f0 * k * t[mask] + voice * k) / k for k in range(1, 7))
            envelope = np.exp(-since_beat[mask] * 3.0)
            left[mask] += tone * envelope * (1.0 - 0.2 * voice)
            right[mask] += tone * envelope * (0.6 + 0.2 * voice)
        bass = np.sin(2 * np.pi * chord[0] / 2 * t[mask]) * np.exp(-since_beat[mask] * 1.5)
        left[mask] += 1.2 * bass
        right[mask] += 1.2 * bass
    hats = rng.normal(0, 1, n) * np.exp(-((t + beat / 2) % beat) * 40.0) * 0.15
    audio = np.stack([left + hats, right + np.roll(hats, 11)])
    return (audio * 0.9 / np.abs(audio).max()).astype(np.float32)


def windows_of(audio: np.ndarray) -> Iterator[AudioWindow]:
    """The VAE windows' kept cores, as the engine yields them for one item."""
    latent_frames = -(-audio.shape[1] // HOP)
    for window in plan_windows(latent_frames):
        start, end = window.core_start * HOP, min(window.core_end * HOP, audio.shape[1])
        yield AudioWindow(item=0, start_sample=start, pcm=torch.from_numpy(np.ascontiguousarray(audio[:, start:end])))


def model_windows(checkpoints: str, seconds: float, seed: int) -> list[AudioWindow]:
    root = ensure_checkpoints(checkpoints, announce=lambda line: print(line, file=sys.stderr))
    engine = DiTEngine.load(root, DEFAULT_DIT_MODEL, device="cpu", dtype=torch.float32)
    request = SynthesisRequest(caption="upbeat electronic dance music", bpm=128, keyscale="A minor",
                               timesignature="4", duration=seconds, seeds=[seed])
    return [event for event in engine.synthesize(request) if isinstance(event, AudioWindow)]


def measure(windows: list[AudioWindow], scale_to: float) -> dict[str, dict]:
    """Per encoding: wire bytes (scaled to ``scale_to`` seconds), encode time per window, decode time."""
    seconds = sum(w.pcm.shape[1] for w in windows) / SAMPLE_RATE
    results: dict[str, dict] = {}
    for name in STREAM_ENCODINGS:
        wire = payload = 0
        encode_s: list[float] = []
        chunks = []
        for window in windows:
            start = time.perf_counter()
            responses = list(_chunks(window, DEFAULT_CHUNK_FRAMES, name))
            encode_s.append(time.perf_counter() - start)
            for response in responses:
                message = orchestrator_pb2.GenerateMusicResponse(audio_chunk=response.audio_chunk)
                wire += message.ByteSize() + GRPC_PREFIX
                payload += len(response.audio_chunk.pcm_f32le) + len(response.audio_chunk.data)
                chunks.append(response.audio_chunk)
        start = time.perf_counter()
        for chunk in chunks:
            decode_chunk(chunk)
        decode_s = time.perf_counter() - start
        factor = scale_to / seconds
        results[name] = {
            "wire_bytes": round(wire * factor),
            "payload_bytes": round(payload * factor),
            "chunks": len(chunks),
            "encode_ms_per_window_mean": 1000 * statistics.mean(encode_s),
            "encode_ms_per_window_max": 1000 * max(encode_s),
            "window_seconds": statistics.mean(w.pcm.shape[1] for w in windows) / SAMPLE_RATE,
            "encode_s_per_song": sum(encode_s) * factor,
            "decode_s_per_song": decode_s * factor,
        }
    base = results["pcm_f32le"]["wire_bytes"]
    for row in results.values():
        row["ratio_to_f32"] = row["wire_bytes"] / base
    return results


def table(source: str, seconds: float, results: dict[str, dict]) -> str:
    lines = [f"{source}: bytes per {seconds:g} s stereo item",
             f"  {'encoding':10s} {'wire bytes':>12s} {'MB':>7s} {'ratio':>6s} {'enc ms/window':>14s} "
             f"{'enc s/song':>10s} {'dec s/song':>10s}"]
    for name, row in results.items():
        lines.append(f"  {name:10s} {row['wire_bytes']:12,d} {row['wire_bytes'] / 1e6:7.2f} {row['ratio_to_f32']:6.3f} "
                     f"{row['encode_ms_per_window_mean']:14.1f} {row['encode_s_per_song']:10.2f} "
                     f"{row['decode_s_per_song']:10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default="model,music", help="comma-separated: model, music")
    parser.add_argument("--seconds", type=float, default=240.0, help="song length the bytes are reported for")
    parser.add_argument("--model-seconds", type=float, default=None,
                        help="length actually generated by the tiny model (default --seconds); bytes are scaled")
    parser.add_argument("--checkpoints", default="/tmp/acestep-bench-tiny")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report: dict = {"seconds": args.seconds, "chunk_frames": DEFAULT_CHUNK_FRAMES, "sources": {}}
    for source in [s.strip() for s in args.sources.split(",") if s.strip()]:
        if source == "model":
            windows = model_windows(args.checkpoints, args.model_seconds or args.seconds, args.seed)
        elif source == "music":
            windows = list(windows_of(music_like(args.seconds)))
        else:
            parser.error(f"--sources: unknown source {source!r} (model, music)")
        report["sources"][source] = measure(windows, args.seconds)
        print(table(source, args.seconds, report["sources"][source]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
