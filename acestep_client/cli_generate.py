"""``acestep generate``: flags (and an upstream-style request file) -> one request, the call, files and a table.

Rules a user can rely on (also in ``--help``):
- ``--from-json FILE`` supplies values in upstream's field names; a flag given on the command line wins.
- Seeds: the batch follows the seed count (``--seeds 42`` is a batch of 1, ``--seed N`` too) unless
  ``--batch-size`` is given, and then the counts must match (-1 in ``--seeds`` = a random seed).
- Every written audio file gets a JSON sidecar with its params and audio codes (``acestep_client.sidecar``).
- Exit 2 only for input refused before any model work; a failure after it is exit 1, and a field the user
  never set is said to be the pipeline's, not theirs (``acestep_client.cli_errors``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acestep_client.cli_common import (
    add_connection_flags,
    announce,
    client_options,
    codes_or_file,
    terminal_safe,
    text_or_file,
)
from acestep_client.cli_errors import Failure, StreamWatch, describe_failure, embedded_model_problem, input_error
from acestep_client.constants import (
    AUDIO_FORMATS,
    CHUNK_MASK_MODES,
    DCW_MODES,
    DCW_WAVELETS,
    DEFAULT_DIT_MODEL,
    INFER_METHODS,
    MP3_BITRATES,
    MP3_SAMPLE_RATES,
    REPAINT_MODES,
    SAMPLER_MODES,
    STREAM_ENCODINGS,
    TASK_TYPES,
)
from acestep_client.errors import AceStepError, InvalidArgument
from acestep_client.types import GenerationConfig, GenerationParams, GenerationResult

# Flags whose dest is a GenerationParams field: (flag, type, help). Defaults are the API's.
PARAM_FLAGS: list[tuple[str, Any, str]] = [
    ("--caption", str, "text description of the music: genre, mood, instruments (default: empty; a caption "
                       "or lyrics is needed)"),
    ("--lyrics", str, "lyrics with [verse]/[chorus] tags, or '[Instrumental]'; @FILE reads a file (default: empty)"),
    ("--duration", float, "seconds of audio, 10-600; <= 0 lets the LM choose (default: -1, the LM chooses)"),
    ("--bpm", int, "beats per minute, 30-300 (default: the LM chooses)"),
    ("--keyscale", str, "key, e.g. 'C Major', 'F# minor', 'Am' (default: the LM chooses)"),
    ("--timesignature", str, "2, 3, 4 or 6 (or 2/4, 3/4, 4/4, 6/8) (default: the LM chooses)"),
    ("--vocal-language", str, "language of the lyrics, ISO 639-1 (en, zh, ja, ...) or 'unknown' (default: unknown)"),
    ("--task-type", str.lower, "what to do (default: text2music); lego, extract and complete need a base model "
                               "(--dit-model acestep-v15-base)"),
    ("--instruction", str, "task instruction; lego/extract/complete name a track, e.g. 'Extract the vocals track "
                           "from the audio:' (default: the generic instruction)"),
    ("--src-audio", str, "source audio file (wav, flac, mp3) of cover, repaint, lego, extract, complete"),
    ("--reference-audio", str, "reference audio file whose timbre and style guide the result"),
    ("--audio-codes", str, "5 Hz codes '<|audio_code_N|>...' to generate from instead of the LM's; @FILE reads a "
                           "codes file or a sidecar <key>.json written by generate (default: none)"),
    ("--inference-steps", int, "denoising steps: turbo models 1-8, base/sft 1-100 (default: 8)"),
    ("--guidance-scale", float, "CFG scale 1-15, base/sft models only (default: 7.0)"),
    ("--cfg-interval-start", float, "where CFG starts in the schedule, 0-1 (default: 0.0)"),
    ("--cfg-interval-end", float, "where CFG ends in the schedule, 0-1 (default: 1.0)"),
    ("--repainting-start", float, "repaint: start of the section, seconds (default: 0)"),
    ("--repainting-end", float, "repaint: end of the section, seconds; -1 = end of the audio (default: -1)"),
    ("--audio-cover-strength", float, "cover: how closely to follow the source, 0-1 (default: 1.0)"),
    ("--seed", int, "seed of a single item, 0-4294967295 (-1 = random); turns random seeds off, and without "
                    "--batch-size the batch is 1 (default: random)"),
    ("--lm-temperature", float, "LM sampling temperature 0-2 (default: 0.85)"),
    ("--lm-cfg-scale", float, "LM guidance scale 1-10 (default: 2.0)"),
    ("--lm-top-k", int, "LM top-k, 0 = off (default: 0)"),
    ("--lm-top-p", float, "LM nucleus sampling 0-1 (default: 0.9)"),
    ("--lm-negative-prompt", str, "LM negative prompt (default: 'NO USER INPUT')"),
    # Sampling: upstream's names and defaults (README "Sampling options")
    ("--shift", float, "timestep shift 1-5: higher spends more steps at high noise (default: 3.0)"),
    ("--infer-method", str.lower, "ode (deterministic) or sde (re-noises each step, seeded) (default: ode)"),
    ("--timesteps", str, "custom schedule, comma-separated, decreasing, in 0-1, e.g. 0.97,0.76,0.5,0.28,0 (final 0 "
                         "optional): 1-20 steps on turbo, 1-200 on base; overrides --inference-steps and --shift "
                         "(default: the model's schedule)"),
    ("--sampler-mode", str.lower, "euler, or heun (two model calls a step; ode only) (default: euler)"),
    ("--velocity-norm-threshold", float, "cap the velocity's norm at this times the latent's, 0-5, 0 = off "
                                         "(default: 0)"),
    ("--velocity-ema-factor", float, "mix this much of the previous step's velocity in, 0-0.5, 0 = off (default: 0)"),
    ("--dcw-mode", str.lower, "DCW correction band(s): low, high, double or pix (default: double)"),
    ("--dcw-scaler", float, "DCW low-band strength (the only one in low/high/pix), 0-0.1 (default: 0.05)"),
    ("--dcw-high-scaler", float, "DCW high-band strength in double mode, 0-0.1 (default: 0.02)"),
    ("--dcw-wavelet", str.lower, "DCW wavelet: haar, db2, db4, sym4, sym8 or coif2 (default: haar)"),
    # Output: upstream's names and defaults (README "Output options and file formats")
    ("--fade-in-duration", float, "linear fade-in over the first seconds, 0-10 (default: 0, none)"),
    ("--fade-out-duration", float, "linear fade-out over the last seconds, 0-10 (default: 0, none)"),
    ("--normalization-db", float, "peak level each item is normalised to, -10-0 dBFS (default: -1.0)"),
    ("--latent-shift", float, "added to the DiT latents before the VAE decodes them, -0.2-0.2 (default: 0)"),
    ("--latent-rescale", float, "multiplies the DiT latents before the VAE decodes them, 0.5-1.5 (default: 1.0)"),
    # Editing: upstream's names (README "Editing options")
    ("--retake-seed", int, "seed of the retake noise mixed in by --retake-variance; item i uses it + i "
                           "(default: -1, each item's seed + 2^33)"),
    ("--retake-variance", float, "a variation of the same seed: 0-1, 0 = the seed's own noise, 1 = the retake "
                                 "seed's (default: 0)"),
    ("--repaint-mode", str.lower, "repaint: conservative (source injected every step), balanced or aggressive "
                                  "(never injected) (default: balanced)"),
    ("--repaint-strength", float, "balanced repaint: 0-1, the higher the less the source is injected "
                                  "(default: 0.5)"),
    ("--repaint-latent-crossfade-frames", int, "repaint: 25 Hz frames blended from the source into the new audio "
                                               "inside each edge of the span, 0-100 (default: 10)"),
    ("--repaint-wav-crossfade-sec", float, "repaint: seconds crossfaded over the source's own samples next to each "
                                           "edge of the span, 0-1 (default: 0, a hard cut)"),
    ("--chunk-mask-mode", str.lower, "repaint/lego: explicit (the model is told the span) or auto (the model "
                                     "decides, upstream's default) (default: explicit)"),
    ("--cover-noise-strength", float, "0-1: start from the source audio renoised, 1 = closest to it "
                                      "(default: 0, pure noise)"),
    ("--global-caption", str, "SFT-stems (lego) models: the whole song's caption; --caption describes the track "
                              "(default: empty)"),
    ("--flow-edit-source-caption", str, "with --flow-edit-morph: what the source audio is; --caption is the target "
                                        "(default: empty)"),
    ("--flow-edit-source-lyrics", str, "with --flow-edit-morph: the source audio's lyrics; --lyrics is the target "
                                       "(default: empty)"),
    ("--flow-edit-n-min", float, "flow edit: fraction of the schedule skipped before the edit, 0-1 (default: 0)"),
    ("--flow-edit-n-max", float, "flow edit: fraction where the edit stops and the target alone denoises, "
                                 "n-min-1 (default: 1)"),
    ("--flow-edit-n-avg", int, "flow edit: noise draws averaged per edit step, 1-8 (default: 1)"),
    # Models per request (`acestep models` lists what a deployment serves)
    ("--dit-model", str, "DiT model to generate with, e.g. acestep-v15-base for more steps or lego/extract/complete; "
                         "with --target one the server lists, without it the in-process stack's DiT folder under "
                         "--checkpoints (default: the deployment's default; in-process: acestep-v15-turbo)"),
    ("--lm-model", str, "LM model that plans, e.g. acestep-5Hz-lm-0.6B; without --target the in-process stack's LM "
                        "folder (default: the deployment's default; in-process: acestep-5Hz-lm-1.7B)"),
    ("--adapter", str, "LoRA/LoKr adapter of the DiT model to apply, as `acestep models` lists it (default: none)"),
    ("--adapter-scale", float, "the adapter's strength, 0-1; 0 gives the base model's audio (default: 1.0)"),
]
_CHOICES = {"--task-type": TASK_TYPES, "--infer-method": INFER_METHODS, "--sampler-mode": SAMPLER_MODES,
            "--dcw-mode": DCW_MODES, "--dcw-wavelet": DCW_WAVELETS, "--repaint-mode": REPAINT_MODES,
            "--chunk-mask-mode": CHUNK_MASK_MODES}
# Boolean switches: (flag, params field, value stored, help).
PARAM_SWITCHES: list[tuple[str, str, bool, str]] = [
    ("--instrumental", "instrumental", True, "no vocals (default: off)"),
    ("--use-adg", "use_adg", True, "adaptive dual guidance instead of APG, base/sft models (default: off)"),
    ("--no-thinking", "thinking", False, "skip the LM's audio codes: the DiT works from the text alone "
                                         "(default: the LM plans the codes)"),
    ("--no-cot-metas", "use_cot_metas", False, "the LM leaves bpm, key, duration, ... it was not given to the "
                                               "DiT's defaults (default: the LM writes them)"),
    ("--no-cot-caption", "use_cot_caption", False, "use the caption as given; the LM does not rewrite it "
                                                   "(default: the LM rewrites it)"),
    ("--no-cot-language", "use_cot_language", False, "the LM does not detect the vocal language "
                                                     "(default: it does)"),
    ("--no-constrained-decoding", "use_constrained_decoding", False, "let the LM write freely where a grammar "
                                                                     "keeps it to valid values (default: constrained)"),
    ("--no-normalization", "enable_normalization", False, "keep the decoder's level (only a clipping item is "
                                                          "scaled down) (default: peak-normalised, as upstream)"),
    ("--flow-edit-morph", "flow_edit_morph", True, "morph --src-audio toward --caption/--lyrics (text2music, cover, "
                                                   "cover-nofsq) (default: off)"),
    ("--no-dcw", "dcw_enabled", False, "the plain sampler, without the DCW correction after each step "
                                       "(default: DCW on, as upstream)"),
]
PARAM_FIELDS = [flag[2:].replace("-", "_") for flag, _, _ in PARAM_FLAGS] + [f for _, f, _, _ in PARAM_SWITCHES]
# API field -> the flag that sets it: error messages name flags, not only fields.
FIELD_FLAGS: dict[str, str] = {
    **{flag[2:].replace("-", "_"): flag for flag, _, _ in PARAM_FLAGS},
    **{field: flag for flag, field, _, _ in PARAM_SWITCHES},
    "batch_size": "--batch-size",
    "seeds": "--seeds",
    "use_random_seed": "--use-random-seed/--no-random-seed",
    "audio_format": "--audio-format",
    "mp3_bitrate": "--mp3-bitrate",
    "mp3_sample_rate": "--mp3-sample-rate",
    "stream_encoding": "--stream-encoding",
    "from_json": "--from-json",
}

DESCRIPTION = """\
Generate music; writes the audio files and, beside each, a JSON sidecar (<key>.json: params, seed,
audio codes) to --out. Without --target an in-process stack runs from --checkpoints (tiny random
checkpoints are written into an empty folder: their audio is noise).

Seeds: the batch follows the seed count (--seeds 1,2,3 is a batch of 3, --seed 42 a batch of 1) unless
--batch-size is given; then the counts must match (-1 in --seeds = a random seed for that item).

--from-json FILE reads an upstream-style request (caption or prompt, lyrics, bpm, keyscale/key_scale,
timesignature/time_signature, duration/audio_duration, vocal_language/language, thinking/think, seed,
inference_steps, ...; a sidecar works too); flags given on the command line override its values.

Exit codes: 0 success, 1 generation failed, 2 bad input (refused before any model work, nothing
written), 130 interrupted."""

EPILOG = """\
examples:
  acestep generate --caption "calm ambient piano" --duration 30 --seeds 42
  acestep generate --from-json examples/requests/with_lyrics_and_metadata.json --duration 10
  acestep understand --codes @outputs/<key>.json"""


def add_generate_command(commands: Any) -> argparse.ArgumentParser:
    gen = commands.add_parser("generate", help="generate music", description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--from-json", metavar="FILE", default=None,
                     help="upstream-style request file (JSON); flags given explicitly override its values")
    for flag, kind, text in PARAM_FLAGS:
        gen.add_argument(flag, type=kind, default=None, help=text, choices=_CHOICES.get(flag))
    for flag, dest, value, text in PARAM_SWITCHES:
        gen.add_argument(flag, dest=dest, action="store_const", const=value, default=None, help=text)
    gen.add_argument("--batch-size", type=int, default=None,
                     help="items to generate, 1-8 (default: the number of --seeds, 1 with --seed, else 2)")
    gen.add_argument("--seeds", default=None,
                     help="comma-separated seeds, one per item (-1 = random), e.g. 1,2,3: turns random seeds off "
                          "and sets the batch size; with --batch-size the counts must match")
    seeds = gen.add_mutually_exclusive_group()
    seeds.add_argument("--use-random-seed", dest="use_random_seed", action="store_const", const=True, default=None,
                       help="random seeds even when --seed/--seeds are given")
    seeds.add_argument("--no-random-seed", dest="use_random_seed", action="store_const", const=False,
                       help="use --seeds/--seed (the default when they are given)")
    gen.add_argument("--audio-format", type=str.lower, choices=AUDIO_FORMATS, default=None,
                     help="format of the files written, case-insensitive: flac, wav (float), wav32 (32-bit float "
                          "WAV), mp3, opus (Ogg Opus) or aac (.m4a; needs PyAV: pip install 'acestep-grpc[aac]') "
                          "(default: flac)")
    gen.add_argument("--mp3-bitrate", type=str.lower, choices=MP3_BITRATES, default=None,
                     help="constant bitrate of mp3 files (default: 128k)")
    gen.add_argument("--mp3-sample-rate", type=int, choices=MP3_SAMPLE_RATES, default=None,
                     help="sample rate of mp3 files in Hz; 44100 is resampled from 48000 (default: 48000)")
    gen.add_argument("--stream-encoding", type=str.lower, choices=STREAM_ENCODINGS, default=None,
                     help="how audio travels from the server: pcm_f32le (exact), pcm_s16le, flac (16-bit) or opus "
                          "(lossy); files still follow --audio-format (default: pcm_f32le)")
    gen.add_argument("--out", default="./outputs", help="folder for the audio files and their JSON sidecars "
                                                        "(default: ./outputs)")
    add_connection_flags(gen)
    gen.add_argument("--quiet", action="store_true",
                     help="no progress, start-up lines or library warnings on stderr; errors and warnings that "
                          "need you still show")
    return gen


@dataclass
class Inputs:
    """The request's params/config, where each field came from (for error messages) and notes to print."""

    params: GenerationParams
    config: GenerationConfig
    origins: dict[str, str] = field(default_factory=dict)  # API field -> "--flag" or "FILE: key"
    notes: list[str] = field(default_factory=list)


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgument("seeds", f"must be comma-separated integers like 1,2,3, got {text!r}") from None


def _parse_timesteps(text: str) -> list[float] | None:
    """'0.9,0.5,0' -> [0.9, 0.5, 0.0]; '' -> None (the model's schedule)."""
    try:
        return [float(part) for part in text.split(",") if part.strip()] or None
    except ValueError:
        raise InvalidArgument("timesteps", f"must be comma-separated numbers like 0.9,0.5,0, got {text!r}") from None


def _apply_seed_rule(values: dict[str, Any], config: dict[str, Any], origins: dict[str, str]) -> None:
    """The batch follows the seed count unless a batch size was given; then a mismatch is an error."""
    batch = config.get("batch_size")
    seeds = config.get("seeds")
    if seeds is not None:
        count = len(seeds) if isinstance(seeds, list) else 1
        if batch is not None and batch != count:
            raise InvalidArgument(
                "seeds", f"{count} seed(s), but a batch of {batch} ({origins['batch_size']}): give one seed per item "
                         f"(-1 = random), or leave out the batch size and the batch follows the seeds")
        if batch is None:
            config["batch_size"] = count
            origins["batch_size"] = f"{origins['seeds']} (one item per seed)"
        return
    seed = values.get("seed", -1)
    if isinstance(seed, int) and seed >= 0 and config.get("use_random_seed") is not True:
        if batch is not None and batch != 1:
            raise InvalidArgument(
                "seed", f"seeds one item, but a batch of {batch} ({origins['batch_size']}): give every item its seed, "
                        f"e.g. --seeds {seed}{',-1' * (batch - 1)} (-1 = random)")
        if batch is None:
            config["batch_size"] = 1
            origins["batch_size"] = f"{origins['seed']} (one item)"


def gather_inputs(args: argparse.Namespace) -> Inputs:
    """GenerationParams/Config from --from-json and the flags; what neither gives keeps the API default."""
    from acestep_client.request_file import read_request_file

    values: dict[str, Any] = {}
    config: dict[str, Any] = {}
    origins: dict[str, str] = {}
    notes: list[str] = []
    if getattr(args, "from_json", None):
        request_file = read_request_file(args.from_json)
        values.update(request_file.params)
        config.update(request_file.config)
        origins.update(request_file.origins)
        notes.extend(request_file.warnings())
    for name in PARAM_FIELDS:
        value = getattr(args, name)
        if value is None:
            continue
        if name == "lyrics":
            value = text_or_file(name, value)
        elif name == "audio_codes":
            value = codes_or_file(name, value)
        elif name == "timesteps":
            value = _parse_timesteps(value)
        values[name] = value
        origins[name] = FIELD_FLAGS[name]
    flagged = {"batch_size": args.batch_size, "audio_format": args.audio_format,
               "seeds": _parse_seeds(args.seeds) if args.seeds is not None else None,
               "use_random_seed": args.use_random_seed, "mp3_bitrate": args.mp3_bitrate,
               "mp3_sample_rate": args.mp3_sample_rate}
    for name, value in flagged.items():
        if value is not None:
            config[name] = value
            origins[name] = FIELD_FLAGS[name]
    seeds_flagged = origins.get("seeds", "").startswith("--") or origins.get("seed", "").startswith("--")
    if seeds_flagged and not origins.get("batch_size", "--").startswith("--"):
        del config["batch_size"]  # seeds typed on the command line override the file's batch size
    for name in ("audio_format", "mp3_bitrate"):  # "MP3", "128K": upstream lower-cases them too
        if isinstance(config.get(name), str):
            config[name] = config[name].strip().lower()
    if isinstance(values.get("task_type"), str):
        values["task_type"] = values["task_type"].lower()
    try:
        _apply_seed_rule(values, config, origins)
    except InvalidArgument as exc:
        exc.origins = origins  # the error names what the user typed, flag or file key
        raise
    if "use_random_seed" not in config:
        seed_given = isinstance(values.get("seed"), int) and values["seed"] >= 0
        config["use_random_seed"] = config.get("seeds") is None and not seed_given
    return Inputs(GenerationParams(**values), GenerationConfig(**config), origins, notes)


def build_inputs(args: argparse.Namespace) -> tuple[GenerationParams, GenerationConfig]:
    inputs = gather_inputs(args)
    return inputs.params, inputs.config


def _observed(events: Iterator[Any], watch: StreamWatch) -> Iterator[Any]:
    try:
        for event in events:
            watch.observe(event)
            yield event
    finally:
        getattr(events, "close", lambda: None)()


async def _observed_async(events: AsyncIterator[Any], watch: StreamWatch) -> AsyncIterator[Any]:
    try:
        async for event in events:
            watch.observe(event)
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _generate_remote(args: argparse.Namespace, request: Any, watch: StreamWatch) -> GenerationResult:
    from acestep_client.assemble import assemble
    from acestep_client.client import AceStepClient
    from acestep_client.request import caller_paths, output_frames_limit, request_file_format

    with AceStepClient(args.target, **client_options(args)) as client:
        events = _observed(client.stream_request(request), watch)
        return assemble(events, args.out, request_file_format(request), max_frames=output_frames_limit(request),
                        paths=caller_paths(request))


def _stack_announce(quiet: bool) -> Any:
    """Start-up lines of the in-process stack; under --quiet only the warnings (random weights)."""
    if not quiet:
        return announce
    return lambda line: announce(line) if line.startswith("WARNING") else None


async def _generate_embedded(args: argparse.Namespace, request: Any, watch: StreamWatch) -> GenerationResult:
    from acestep_client.assemble import assemble_async
    from acestep_client.client import AsyncAceStepClient
    from acestep_client.request import caller_paths, output_frames_limit, request_file_format
    from orchestrator.stack import embedded_stack

    # The request's models are also the ones the stack loads (it serves one DiT and one LM).
    options = {name: value for name in ("dit_model", "lm_model") if (value := getattr(request.params, name))}
    async with (
        embedded_stack(args.checkpoints, announce=_stack_announce(args.quiet), **options) as address,
        AsyncAceStepClient(address, timeout=args.timeout) as client,
    ):
        events = _observed_async(client.stream_request(request), watch)
        return await assemble_async(events, args.out, request_file_format(request),
                                    max_frames=output_frames_limit(request), paths=caller_paths(request))


def _short(text: str, limit: int = 80) -> str:
    """One printable line, cut at ``limit`` (random-weight LMs write long garbage)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text.replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_result(result: GenerationResult, out: Any = None) -> None:
    """The table of items, the LM metadata and the time costs."""
    out = out or sys.stdout
    rows = [("#", "path", "seed", "duration_s", "key")]
    for i, audio in enumerate(result.audios):
        samples = audio["tensor"].shape[-1]
        path = audio["path"] or ("(silent, not written)" if audio.get("silent") else "(not written)")
        rows.append((str(i), path, str(audio["params"].get("seed")), f"{samples / audio['sample_rate']:.2f}",
                     audio["key"]))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if any(audio["path"] for audio in result.audios):
        print("params + audio codes of each file: the .json beside it (acestep understand --codes @FILE.json)",
              file=out)
    lm = result.extra_outputs.get("lm_metadata")
    if lm:
        shown = {k: _short(str(v)) for k, v in lm.items() if v not in (None, "")}
        print(terminal_safe("lm metadata: " + ", ".join(f"{k}={v}" for k, v in shown.items())), file=out)
    costs = result.extra_outputs.get("time_costs") or {}
    if costs:
        print("time costs:", file=out)
        for name in sorted(costs):
            print(f"  {name}: {costs[name]:.3f} s", file=out)
    if result.status_message:
        print(terminal_safe(result.status_message), file=out)


def _remove_written(result: GenerationResult) -> None:
    for audio in result.audios:
        if audio.get("path"):
            Path(audio["path"]).unlink(missing_ok=True)
            audio["path"] = None


def run_generate(args: argparse.Namespace) -> int:
    from acestep_client.progress import ProgressPrinter
    from acestep_client.request import build_request
    from acestep_client.sidecar import write_sidecars

    inputs: Inputs | None = None
    try:
        inputs = gather_inputs(args)
        options = {"stream_encoding": args.stream_encoding} if args.stream_encoding else {}
        request = build_request(inputs.params, inputs.config, **options)  # validates and reads uploads
    except InvalidArgument as exc:
        origins = inputs.origins if inputs is not None else getattr(exc, "origins", {})
        print(f"acestep generate: error: {input_error(exc, origins, FIELD_FLAGS)}", file=sys.stderr)
        return 2
    for note in inputs.notes:
        print(f"acestep generate: warning: {note}", file=sys.stderr)
    if not args.target:
        dit_model = inputs.params.dit_model or DEFAULT_DIT_MODEL
        problem = embedded_model_problem(inputs.params, args.checkpoints, dit_model)
        if problem is not None:
            for line in problem.lines:
                print(line, file=sys.stderr)
            return problem.exit_code
    watch = StreamWatch(ProgressPrinter(quiet=args.quiet))
    try:
        if args.target:
            result = _generate_remote(args, request, watch)
        else:
            result = asyncio.run(_generate_embedded(args, request, watch))
    except AceStepError as exc:  # the in-process stack could not start (a missing model folder, a device...)
        print(f"acestep generate: error: {exc}", file=sys.stderr)
        return 1
    finally:
        watch.printer.close()
    if result.success:
        try:
            write_sidecars(result)
        except OSError as exc:
            _remove_written(result)
            print(f"acestep generate: failed: writing the JSON sidecars: {exc}; no files kept", file=sys.stderr)
            return 1
        print_result(result)
        return 0
    failure: Failure = describe_failure(
        result.error or "UNKNOWN: no error text", inputs.params, inputs.origins, FIELD_FLAGS,
        work_started=watch.work_started, target=args.target, dit_model=inputs.params.dit_model or DEFAULT_DIT_MODEL,
    )
    for line in failure.lines:
        print(terminal_safe(line), file=sys.stderr)
    return failure.exit_code
