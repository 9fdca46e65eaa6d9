"""The acestep CLI: flags to params, exit codes, output, and dispatch to the server entry points."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types

import pytest

from acestep_client import cli
from acestep_client.progress import ProgressPrinter
from acestep_client.proto.acestep.v1 import generation_pb2 as gen
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--caption", "x", "--bpm", "12"], "--bpm"),
        (["--caption", "x", "--duration", "5"], "--duration"),
        (["--bpm", "120"], "--caption"),
        (["--caption", "x", "--seeds", "1,two"], "--seeds"),
        (["--caption", "x", "--batch-size", "0"], "--batch-size"),
        (["--caption", "x", "--task-type", "cover", "--src-audio", "/no/such.wav"], "--src-audio"),
        (["--caption", "x", "--lyrics", "@/no/such.txt"], "--lyrics"),
        (["--caption", "x", "--lm-top-p", "1.5"], "--lm-top-p"),
        (["--caption", "x", "--seeds", "1,2,3", "--batch-size", "2"], "--seeds"),
        (["--caption", "x", "--seed", "5", "--batch-size", "3"], "--seed"),
        (["--caption", "x", "--dit-model", "../checkpoints/x", "--target", "127.0.0.1:1"], "--dit-model"),
        (["--caption", "x", "--lm-model", "/abs/lm"], "--lm-model"),
        (["--caption", "x", "--adapter", "my lora"], "--adapter"),
        (["--caption", "x", "--adapter", "lofi", "--adapter-scale", "1.5"], "--adapter-scale"),
    ],
)
def test_bad_input_exits_2_naming_the_flag_and_writes_nothing(tmp_path, capsys, argv, flag):
    out = tmp_path / "outputs"
    checkpoints = tmp_path / "checkpoints"
    code = cli.main(["generate", *argv, "--out", str(out), "--checkpoints", str(checkpoints)])
    captured = capsys.readouterr()
    assert code == 2
    assert f"error: {flag}: " in captured.err
    assert captured.out == ""
    assert not out.exists() and not checkpoints.exists()


def test_a_seed_count_that_does_not_match_the_batch_size_names_both_flags(tmp_path, capsys):
    code = cli.main(["generate", "--caption", "x", "--seeds", "1,2,3", "--batch-size", "2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--seeds: 3 seed(s), but a batch of 2 (--batch-size)" in err


@pytest.mark.parametrize(("argv", "flag"), [(["--bpm", "fast"], "--bpm"), (["--audio-format", "ogg"], "--audio-format"),
                                            (["--task-type", "remix"], "--task-type")])
def test_flag_type_errors_exit_2_naming_the_flag(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--caption", "x", *argv, "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err
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


def test_model_flags_set_the_request_params_with_or_without_a_target():
    for target in ((), ("--target", "127.0.0.1:1")):
        params, _ = _inputs("--caption", "c", "--dit-model", "acestep-v15-base", "--lm-model", "acestep-5Hz-lm-0.6B",
                            "--adapter", "lofi-v2", "--adapter-scale", "0.25", *target)
        assert (params.dit_model, params.lm_model, params.adapter, params.adapter_scale) == (
            "acestep-v15-base", "acestep-5Hz-lm-0.6B", "lofi-v2", 0.25)


def test_defaults_are_the_api_defaults():
    from acestep_client import GenerationConfig, GenerationParams

    params, config = _inputs("--caption", "c")
    assert params == GenerationParams(caption="c")
    assert config == GenerationConfig()


@pytest.mark.parametrize(
    ("argv", "seeds", "use_random", "batch"),
    [
        ((), None, True, 2),
        (("--seeds", "42"), [42], False, 1),  # the batch follows the seed count: no random item 2
        (("--seeds", "1,2,3"), [1, 2, 3], False, 3),
        (("--seeds", "4,-1", "--batch-size", "2"), [4, -1], False, 2),
        (("--seed", "5"), None, False, 1),
        (("--seeds", "1,2", "--use-random-seed"), [1, 2], True, 2),
        (("--no-random-seed",), None, False, 2),
        (("--batch-size", "4"), None, True, 4),
    ],
)
def test_seed_flags(argv, seeds, use_random, batch):
    _, config = _inputs("--caption", "c", *argv)
    assert config.seeds == seeds and config.use_random_seed is use_random and config.batch_size == batch


def test_audio_format_and_task_type_are_case_insensitive():
    params, config = _inputs("--caption", "c", "--audio-format", "WAV", "--task-type", "Text2Music")
    assert config.audio_format == "wav" and params.task_type == "text2music"


def test_generate_help_describes_every_switch_with_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--instrumental", "--use-adg", "--no-thinking", "--no-cot-metas", "--no-cot-caption",
                 "--no-cot-language", "--no-constrained-decoding", "--from-json", "--stream-encoding"):
        assert f"{flag} " in text, flag
    parser = cli._parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    undocumented = [a.option_strings for a in generate._actions if a.help in (None, "")]
    assert undocumented == []
    for flag in ("--inference-steps", "--guidance-scale", "--duration", "--batch-size", "--audio-format",
                 "--lm-temperature", "--out", "--dit-model"):
        action = next(a for a in generate._actions if flag in a.option_strings)
        assert "default" in action.help, flag
    assert "the batch follows the seed count" in text


@pytest.mark.parametrize("command", ["understand", "create-sample", "format"])
def test_text_command_help_has_a_description_and_help_for_every_flag(capsys, command):
    parser = cli._parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    assert sub.description and len(sub.description) > 40
    assert [a.option_strings for a in sub._actions if not a.help] == []


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
                     "WAV", "--stream-encoding", "pcm_s16le", "--out", str(out), "--target", server.address,
                     "--api-key", "cli-key"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    sent = server.service.calls[0]
    assert sent.request.stream_encoding == gen.STREAM_ENCODING_PCM_S16LE
    assert sent.metadata["x-api-key"] == "cli-key"
    assert list(sent.request.config.seed_list.values) == [42, 7] and sent.request.config.use_random_seed is False
    assert sent.request.config.batch_size == 2
    audio = sorted(p.name for p in out.iterdir() if p.suffix == ".wav")
    assert len(audio) == 2
    lines = captured.out.splitlines()
    assert lines[0].split() == ["#", "path", "seed", "duration_s", "key"]
    row = lines[1].split()
    assert row[0] == "0" and row[2] == "42" and row[3] == "0.50" and f"{row[4]}.wav" in audio
    assert lines[2].split()[3] == "0.40"
    assert "time costs:" in captured.out and "pipeline_total_time: 3.500 s" in captured.out
    assert "bpm=120" in captured.out
    assert "[" in captured.err and "diffusion" in captured.err  # stage lines: stderr is not a terminal


def test_every_written_file_gets_a_json_sidecar_with_its_params_and_codes(kit, server, tmp_path, capsys):
    out = tmp_path / "outputs"
    code = cli.main(["generate", "--caption", "ambient piano", "--lyrics", "[verse]\nla", "--bpm", "90",
                     "--seeds", "42,7", "--out", str(out), "--target", server.address, "--quiet"])
    assert code == 0, capsys.readouterr().err
    audio = sorted(out.glob("*.flac"))
    assert sorted(p.stem for p in out.glob("*.json")) == [p.stem for p in audio]
    sent = server.service.calls[0].request
    for item in (0, 1):
        key = kit.item_result(sent, item).key
        data = json.loads((out / f"{key}.json").read_text())
        assert data["key"] == key and data["audio_file"] == f"{key}.flac"
        assert data["seed"] == kit.SEEDS[item] and data["audio_codes"] == kit.CODES[item]
        assert (data["caption"], data["lyrics"], data["bpm"], data["task_type"]) == (
            "ambient piano", "[verse]\nla", 90, "text2music")
        assert data["sample_rate"] == 48_000 and data["num_frames"] == kit.FRAMES[item]
    # the sidecar is valid --audio-codes / understand input, and valid --from-json input
    sidecar = out / f"{kit.item_result(sent, 1).key}.json"
    params, config = _inputs("--audio-codes", f"@{sidecar}", "--caption", "c")
    assert params.audio_codes == kit.CODES[1]
    params, config = _inputs("--from-json", str(sidecar))
    assert (params.caption, params.seed, params.audio_codes, config.batch_size) == ("ambient piano", 7, kit.CODES[1], 1)
    assert params.lyrics == "[verse]\nla" and params.bpm == 90


def test_no_partial_sidecars_when_one_cannot_be_written(kit, server, tmp_path, capsys):
    out = tmp_path / "outputs"
    blocked = kit.item_result(kit.scripted_request(), 1).key  # the same params as the call below: the same key
    (out / f"{blocked}.json").mkdir(parents=True)  # a directory where item 1's sidecar must go
    code = cli.main(["generate", "--caption", "ambient piano", "--bpm", "90", "--seeds", "42,7", "--out", str(out),
                     "--target", server.address, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "sidecar" in err
    assert sorted(p.name for p in out.iterdir()) == [f"{blocked}.json"]  # no audio, no sidecar, no temporary


def test_quiet_prints_no_progress(server, tmp_path, capsys):
    code = cli.main(["generate", "--caption", "x", "--out", str(tmp_path), "--target", server.address, "--quiet"])
    assert code == 0 and capsys.readouterr().err == ""


def test_a_failure_after_model_work_is_exit_1_and_not_blamed_on_the_user(kit, server, tmp_path, capsys):
    out = tmp_path / "outputs"
    code = cli.main(["generate", "--caption", "abort", "--out", str(out), "--target", server.address, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "INVALID_ARGUMENT" in err and kit.ABORT_DETAILS.partition(": ")[2] in err
    assert "bpm is a value the pipeline produced, not one you set" in err
    assert not out.exists()
    code = cli.main(["generate", "--caption", "no-done", "--out", str(out), "--target", server.address, "--quiet"])
    assert code == 1 and "DATA_LOSS" in capsys.readouterr().err and not out.exists()


def test_a_refusal_before_model_work_is_exit_2_naming_the_flag_with_a_hint(server, tmp_path, capsys):
    out = tmp_path / "outputs"
    code = cli.main(["generate", "--caption", "refuse", "--inference-steps", "50", "--out", str(out),
                     "--target", server.address, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "error: INVALID_ARGUMENT: --inference-steps: must be between 1 and 8" in err
    assert "hint: --inference-steps above 8 needs a base model" in err
    assert "acestep serve all --dit-model acestep-v15-base" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--inference-steps", "50"], "--inference-steps: must be between 1 and 8 on acestep-v15-turbo, got 50"),
    (["--task-type", "extract", "--instruction", "Extract the drums track from the audio:"],
     "--task-type extract: acestep-v15-turbo runs only text2music, cover and repaint"),
])
def test_turbo_mistakes_in_embedded_mode_are_refused_before_the_stack_starts(kit, tmp_path, capsys, argv, message):
    from acestep_client.audio_io import write_audio

    source = write_audio(tmp_path / "song.wav", kit.raw_audio(0), 48_000, "wav")
    checkpoints = tmp_path / "checkpoints"
    code = cli.main(["generate", "--caption", "x", "--src-audio", str(source), *argv, "--out", str(tmp_path / "o"),
                     "--checkpoints", str(checkpoints)])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {message}" in err
    assert "hint:" in err and "add --dit-model acestep-v15-base" in err
    assert not checkpoints.exists() and not (tmp_path / "o").exists()  # nothing loaded, nothing written


def test_without_target_runs_the_embedded_stack(server, tmp_path, capsys, monkeypatch):
    module = types.ModuleType("orchestrator.stack")
    opened = []

    @contextlib.asynccontextmanager
    async def embedded_stack(checkpoints_dir, announce=print):
        opened.append(checkpoints_dir)
        announce("dit: listening on 127.0.0.1:1")  # start-up chatter: hidden under --quiet
        announce("WARNING: using RANDOMLY INITIALISED checkpoints")  # a warning: always shown
        yield server.address

    module.embedded_stack = embedded_stack
    monkeypatch.setitem(sys.modules, "orchestrator.stack", module)
    out = tmp_path / "outputs"
    code = cli.main(["generate", "--caption", "x", "--out", str(out), "--checkpoints", str(tmp_path / "ck"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert opened == [str(tmp_path / "ck")]
    assert "RANDOM" in captured.err and "listening" not in captured.err
    assert len(list(out.glob("*.flac"))) == 2 and len(list(out.glob("*.json"))) == 2
    assert len(server.service.calls) == 1


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
    import argparse

    from acestep_serving import preflight

    seen, checked = [], []
    module = types.ModuleType(module_name)
    setattr(module, function, lambda argv: seen.append(argv))
    parser = argparse.ArgumentParser()
    parser.add_argument("--port")
    parser.add_argument("--device")
    module.build_parser = lambda: parser
    monkeypatch.setitem(sys.modules, module_name, module)
    monkeypatch.setattr(preflight, "check_model_server", lambda kind, args: checked.append((kind, args.port)))
    assert cli.main(["serve", component, "--port", "0", "--device", "cpu"]) == 0
    assert seen == [["--port", "0", "--device", "cpu"]]
    assert checked == ([] if component == "all" else [(component, "0")])  # serve all checks in start_stack


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
