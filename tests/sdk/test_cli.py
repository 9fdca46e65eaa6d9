"""The acestep CLI: flags to params, exit codes, output, and dispatch to the server entry points."""

from __future__ import annotations

import contextlib
import io
import sys
import types

import pytest

from acestep_client import cli
from acestep_client.progress import ProgressPrinter
from acestep_client.proto.acestep.v1 import generation_pb2 as gen
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--caption", "x", "--bpm", "12"], "bpm"),
        (["--caption", "x", "--duration", "5"], "duration"),
        (["--bpm", "120"], "caption"),
        (["--caption", "x", "--seeds", "1,two"], "seeds"),
        (["--caption", "x", "--audio-format", "ogg"], "audio_format"),
        (["--caption", "x", "--batch-size", "0"], "batch_size"),
        (["--caption", "x", "--task-type", "remix"], "task_type"),
        (["--caption", "x", "--task-type", "cover", "--src-audio", "/no/such.wav"], "src_audio"),
        (["--caption", "x", "--lyrics", "@/no/such.txt"], "lyrics"),
        (["--caption", "x", "--lm-top-p", "1.5"], "lm_top_p"),
    ],
)
def test_bad_input_exits_2_naming_the_field_and_writes_nothing(tmp_path, capsys, argv, field):
    out = tmp_path / "outputs"
    checkpoints = tmp_path / "checkpoints"
    code = cli.main(["generate", *argv, "--out", str(out), "--checkpoints", str(checkpoints)])
    captured = capsys.readouterr()
    assert code == 2
    assert f"{field}: " in captured.err
    assert captured.out == ""
    assert not out.exists() and not checkpoints.exists()


def test_flag_type_errors_exit_2_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--caption", "x", "--bpm", "fast", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "--bpm" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _inputs(*argv):
    args = cli._parser().parse_args(["generate", *argv])
    return cli.build_inputs(args)


def test_flags_map_onto_params_and_config():
    params, config = _inputs(
        "--caption", "c", "--lyrics", "la", "--instrumental", "--duration", "30", "--bpm", "128", "--keyscale", "Am",
        "--timesignature", "3/4", "--vocal-language", "en", "--inference-steps", "4", "--guidance-scale", "5",
        "--use-adg", "--cfg-interval-start", "0.1", "--cfg-interval-end", "0.9", "--no-thinking",
        "--lm-temperature", "0.7", "--lm-cfg-scale", "3", "--lm-top-k", "40", "--lm-top-p", "0.95",
        "--lm-negative-prompt", "noise", "--no-cot-metas", "--no-cot-caption", "--no-cot-language",
        "--no-constrained-decoding", "--batch-size", "3", "--audio-format", "mp3",
    )
    assert (params.caption, params.lyrics, params.instrumental, params.duration, params.bpm) == ("c", "la", True, 30.0,
                                                                                               128)
    assert (params.keyscale, params.timesignature, params.vocal_language) == ("Am", "3/4", "en")
    assert (params.inference_steps, params.guidance_scale, params.use_adg) == (4, 5.0, True)
    assert (params.cfg_interval_start, params.cfg_interval_end) == (0.1, 0.9)
    assert params.thinking is False and params.use_cot_metas is False and params.use_cot_caption is False
    assert params.use_cot_language is False and params.use_constrained_decoding is False
    assert (params.lm_temperature, params.lm_cfg_scale, params.lm_top_k, params.lm_top_p) == (0.7, 3.0, 40, 0.95)
    assert params.lm_negative_prompt == "noise"
    assert (config.batch_size, config.audio_format, config.use_random_seed) == (3, "mp3", True)


def test_defaults_are_the_api_defaults():
    from acestep_client import GenerationConfig, GenerationParams

    params, config = _inputs("--caption", "c")
    assert params == GenerationParams(caption="c")
    assert config == GenerationConfig()


@pytest.mark.parametrize(
    ("argv", "seeds", "use_random"),
    [
        ((), None, True),
        (("--seeds", "1,2,3"), [1, 2, 3], False),
        (("--seed", "5"), None, False),
        (("--seeds", "1,2", "--use-random-seed"), [1, 2], True),
        (("--no-random-seed",), None, False),
    ],
)
def test_seed_flags(argv, seeds, use_random):
    _, config = _inputs("--caption", "c", *argv)
    assert config.seeds == seeds and config.use_random_seed is use_random


def test_task_flags(tmp_path):
    codes = tmp_path / "codes.txt"
    codes.write_text("<|audio_code_5|>")
    params, _ = _inputs("--caption", "c", "--task-type", "repaint", "--src-audio", "a.wav", "--reference-audio",
                        "r.wav", "--repainting-start", "10", "--repainting-end", "20", "--audio-cover-strength", "0.5",
                        "--instruction", "Extract the vocals track from the audio:", "--audio-codes", f"@{codes}",
                        "--seed", "9")
    assert (params.task_type, params.src_audio, params.reference_audio) == ("repaint", "a.wav", "r.wav")
    assert (params.repainting_start, params.repainting_end, params.audio_cover_strength) == (10.0, 20.0, 0.5)
    assert params.instruction.startswith("Extract") and params.audio_codes == "<|audio_code_5|>" and params.seed == 9


def test_generate_against_a_server_prints_the_table(kit, server, tmp_path, capsys):
    out = tmp_path / "outputs"
    code = cli.main(["generate", "--caption", "ambient piano", "--bpm", "90", "--seeds", "42,7", "--audio-format",
                     "wav", "--out", str(out), "--target", server.address, "--api-key", "cli-key"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    sent = server.service.calls[0]
    assert sent.metadata["x-api-key"] == "cli-key"
    assert list(sent.request.config.seed_list.values) == [42, 7] and sent.request.config.use_random_seed is False
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2 and all(name.endswith(".wav") for name in files)
    lines = captured.out.splitlines()
    assert lines[0].split() == ["#", "path", "seed", "duration_s", "key"]
    row = lines[1].split()
    assert row[0] == "0" and row[2] == "42" and row[3] == "0.50" and f"{row[4]}.wav" in files
    assert lines[2].split()[3] == "0.40"
    assert "time costs:" in captured.out and "pipeline_total_time: 3.500 s" in captured.out
    assert "bpm=120" in captured.out
    assert "[" in captured.err and "diffusion" in captured.err  # stage lines: stderr is not a terminal


def test_quiet_prints_no_progress(server, tmp_path, capsys):
    code = cli.main(["generate", "--caption", "x", "--out", str(tmp_path), "--target", server.address, "--quiet"])
    assert code == 0 and capsys.readouterr().err == ""


def test_a_server_error_exits_nonzero_and_writes_nothing(kit, server, tmp_path, capsys):
    out = tmp_path / "outputs"
    code = cli.main(["generate", "--caption", "abort", "--out", str(out), "--target", server.address, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "INVALID_ARGUMENT" in err and kit.ABORT_DETAILS in err
    assert not out.exists()
    code = cli.main(["generate", "--caption", "no-done", "--out", str(out), "--target", server.address, "--quiet"])
    assert code == 1 and "DATA_LOSS" in capsys.readouterr().err and not out.exists()


def test_without_target_runs_the_embedded_stack(server, tmp_path, capsys, monkeypatch):
    module = types.ModuleType("orchestrator.stack")
    opened = []

    @contextlib.asynccontextmanager
    async def embedded_stack(checkpoints_dir, announce=print):
        opened.append(checkpoints_dir)
        announce("using tiny RANDOM checkpoints")
        yield server.address

    module.embedded_stack = embedded_stack
    monkeypatch.setitem(sys.modules, "orchestrator.stack", module)
    out = tmp_path / "outputs"
    code = cli.main(["generate", "--caption", "x", "--out", str(out), "--checkpoints", str(tmp_path / "ck"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert opened == [str(tmp_path / "ck")]
    assert "RANDOM" in captured.err
    assert len(list(out.iterdir())) == 2 and len(server.service.calls) == 1


@pytest.mark.parametrize(
    ("component", "module_name", "function"),
    [
        ("lm", "lm_service.server", "main"),
        ("dit", "dit_service.server", "main"),
        ("orchestrator", "orchestrator.server", "main"),
        ("all", "orchestrator.stack", "serve_all_main"),
    ],
)
def test_serve_passes_the_remaining_flags(monkeypatch, component, module_name, function):
    seen = []
    module = types.ModuleType(module_name)
    setattr(module, function, lambda argv: seen.append(argv))
    monkeypatch.setitem(sys.modules, module_name, module)
    assert cli.main(["serve", component, "--port", "0", "--device", "cpu"]) == 0
    assert seen == [["--port", "0", "--device", "cpu"]]


def test_make_tiny_checkpoints_says_the_weights_are_random(monkeypatch, tmp_path, capsys):
    seen = []
    module = types.ModuleType("orchestrator.stack")
    module.write_tiny_checkpoints = lambda directory, seed: seen.append((directory, seed))
    monkeypatch.setitem(sys.modules, "orchestrator.stack", module)
    assert cli.main(["make-tiny-checkpoints", str(tmp_path / "ck"), "--seed", "3"]) == 0
    assert seen == [(str(tmp_path / "ck"), 3)]
    assert "RANDOM" in capsys.readouterr().out


def _progress(stage, fraction, step=0, total=0):
    return orch.GenerateMusicResponse(
        progress=gen.Progress(stage=stage, fraction=fraction, step=step, total_steps=total)
    )


def test_progress_bar_on_a_terminal_redraws_one_line():
    stream = io.StringIO()
    printer = ProgressPrinter(stream, bar=True)
    for event in [_progress(gen.STAGE_DIFFUSION, 0.2, 1, 8), _progress(gen.STAGE_DIFFUSION, 0.4, 2, 8)]:
        printer.observe(event)
    printer.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert " 40% diffusion 2/8" in text


def test_progress_in_a_pipe_prints_one_line_per_stage():
    stream = io.StringIO()
    printer = ProgressPrinter(stream, bar=False)
    for event in [_progress(gen.STAGE_DIFFUSION, 0.2, 1, 8), _progress(gen.STAGE_DIFFUSION, 0.4, 2, 8),
                  _progress(gen.STAGE_DECODE, 0.9, 1, 2)]:
        printer.observe(event)
    printer.close()
    assert stream.getvalue().splitlines() == ["[ 20%] diffusion 1/8", "[ 90%] decode 1/2"]


def test_the_table_cuts_long_lm_values():
    from acestep_client import GenerationResult

    result = GenerationResult(extra_outputs={"lm_metadata": {"caption": "x" * 500 + "\x00", "bpm": None}})
    out = io.StringIO()
    cli.print_result(result, out)
    line = next(line for line in out.getvalue().splitlines() if line.startswith("lm metadata"))
    assert len(line) < 120 and line.endswith("…") and "bpm" not in line
