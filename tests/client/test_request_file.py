"""Upstream-style request files: upstream's field names and spellings map onto the API's, nothing is lost silently."""

from __future__ import annotations

import json

import pytest

from acestep_client import cli
from acestep_client.errors import InvalidArgument
from acestep_client.request_file import read_request_file


def _write(tmp_path, data, name="request.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_upstream_rest_spellings_map_onto_the_api_fields(tmp_path):
    path = _write(tmp_path, {
        "prompt": "lo-fi beat", "audio_duration": "45", "key_scale": "Am", "time_signature": 4, "vocal_language": "en",
        "think": "false", "inferenceSteps": 6, "seed": 7, "use_random_seed": False, "audio_format": "mp3",
        "batch_size": 1, "audio_code_string": ["<|audio_code_1|>", "<|audio_code_2|>"], "metas": {"bpm": "96"},
    })
    request = read_request_file(path)
    assert request.params == {
        "caption": "lo-fi beat", "duration": 45.0, "keyscale": "Am", "timesignature": "4", "vocal_language": "en",
        "thinking": False, "inference_steps": 6, "seed": 7, "audio_codes": "<|audio_code_1|><|audio_code_2|>",
        "bpm": 96,
    }
    assert request.config == {"use_random_seed": False, "audio_format": "mp3", "batch_size": 1}
    assert request.origins["keyscale"] == "request.json: key_scale"
    assert request.origins["bpm"] == "request.json: metas.bpm"
    assert request.warnings() == []


def test_unknown_and_unsupported_keys_are_named_in_a_warning_not_a_crash(tmp_path):
    path = _write(tmp_path, {"caption": "x", "lm_backend": "vllm", "model": "m", "colour": "blue", "bpm": None})
    request = read_request_file(path)
    assert request.params == {"caption": "x"}  # null = not set
    notes = request.warnings()
    assert len(notes) == 2
    assert "not support: lm_backend, model" in notes[0] and "unknown field(s): colour" in notes[1]


@pytest.mark.parametrize(("data", "message"), [
    ({"bpm": "fast"}, "request.json: bpm: must be a number, got 'fast'"),
    ({"duration": True}, "request.json: duration: must be a number"),
    ({"thinking": "maybe"}, "request.json: thinking: must be true or false"),
    ({"seeds": "1,x"}, "request.json: seeds: must be a list of integers"),
    ({"caption": ["a"]}, "request.json: caption: must be a string"),
])
def test_a_bad_value_names_the_file_and_key(tmp_path, data, message):
    with pytest.raises(InvalidArgument) as info:
        read_request_file(_write(tmp_path, data))
    assert message in str(info.value)


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, message in (("broken.json", "is not valid JSON"), ("list.json", "must hold one JSON object"),
                          ("missing.json", "file not found")):
        with pytest.raises(InvalidArgument) as info:
            read_request_file(tmp_path / name)
        assert info.value.field == "from_json" and message in str(info.value) and name in str(info.value)


def test_relative_audio_paths_are_read_from_the_files_folder(tmp_path):
    request = read_request_file(_write(tmp_path, {"task_type": "cover", "src_audio_path": "song.wav"}))
    assert request.params["src_audio"] == str(tmp_path / "song.wav")


def test_flags_given_on_the_command_line_override_the_file(tmp_path, capsys):
    path = _write(tmp_path, {"think": True, "caption": "from the file", "lyrics": "[verse]\nla", "duration": 120,
                             "bpm": 100, "language": "zh", "batch_size": 3, "colour": "blue"})
    args = cli._parser().parse_args(["generate", "--from-json", str(path), "--duration", "10", "--seeds", "5"])
    inputs = cli.gather_inputs(args)
    assert (inputs.params.caption, inputs.params.duration, inputs.params.bpm) == ("from the file", 10.0, 100)
    assert inputs.params.vocal_language == "zh" and inputs.params.thinking is True
    # --seeds on the command line beats the file's batch size: one seed, one item
    assert (inputs.config.seeds, inputs.config.batch_size, inputs.config.use_random_seed) == ([5], 1, False)
    assert inputs.origins["duration"] == "--duration" and inputs.origins["caption"] == "request.json: caption"
    assert any("colour" in note for note in inputs.notes)


def test_a_bad_value_from_the_file_is_named_by_its_key_in_the_cli_error(tmp_path, capsys):
    path = _write(tmp_path, {"caption": "x", "key_scale": "H major"})
    code = cli.main(["generate", "--from-json", str(path), "--out", str(tmp_path / "o"),
                     "--checkpoints", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    assert code == 2 and "error: request.json: key_scale: must be a key like" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "ck").exists()
