"""Upstream's output options as API fields: fades, normalisation, latent shift/rescale (GenerationParams) and the
mp3 options and new formats (GenerationConfig): defaults, range errors naming the field, the wire, keys, request
files and CLI flags. (The audio side: tests/dit/test_output_options.py, tests/e2e/test_output_options.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest

from acestep_client import GenerationConfig, GenerationParams, cli
from acestep_client.cli_generate import FIELD_FLAGS, gather_inputs
from acestep_client.constants import AUDIO_FORMATS
from acestep_client.convert import config_from_proto, config_to_proto, params_from_proto, params_to_proto
from acestep_client.errors import InvalidArgument
from acestep_client.keys import LATER_DEFAULTS, audio_key
from acestep_client.proto.acestep.v1 import generation_pb2 as pb
from acestep_client.request_file import read_request_file

# upstream 6d467e4: inference.GenerationParams / GenerationConfig defaults
OUTPUT_DEFAULTS = {"fade_in_duration": 0.0, "fade_out_duration": 0.0, "enable_normalization": True,
                   "normalization_db": -1.0, "latent_shift": 0.0, "latent_rescale": 1.0}
CUSTOM = {"fade_in_duration": 1.5, "fade_out_duration": 10.0, "enable_normalization": False,
          "normalization_db": -6.0, "latent_shift": -0.2, "latent_rescale": 0.5}


def _params(**fields) -> GenerationParams:
    return GenerationParams(caption="x", **fields)


def test_defaults_are_upstreams_and_an_empty_message_means_them():
    assert {name: getattr(GenerationParams(), name) for name in OUTPUT_DEFAULTS} == OUTPUT_DEFAULTS
    config = GenerationConfig()
    assert (config.audio_format, config.mp3_bitrate, config.mp3_sample_rate) == ("flac", "128k", 48_000)
    assert params_from_proto(pb.GenerationParams()) == GenerationParams()
    assert config_from_proto(pb.GenerationConfig()) == GenerationConfig()
    assert AUDIO_FORMATS == ("flac", "wav", "mp3", "opus", "aac", "wav32")  # upstream's six


def test_every_option_round_trips_through_the_wire():
    params = _params(**CUSTOM)
    wire = pb.GenerationParams.FromString(params_to_proto(params).SerializeToString())
    assert params_from_proto(wire) == params
    assert wire.HasField("enable_normalization") and not wire.enable_normalization  # false is sent, not "unset"
    for fmt in AUDIO_FORMATS:
        config = GenerationConfig(audio_format=fmt, mp3_bitrate="256k", mp3_sample_rate=44_100)
        wire_config = pb.GenerationConfig.FromString(config_to_proto(config).SerializeToString())
        assert config_from_proto(wire_config) == config
    assert config_to_proto(GenerationConfig(audio_format="wav32")).audio_format == pb.AUDIO_FORMAT_WAV32 == 6
    assert (pb.AUDIO_FORMAT_OPUS, pb.AUDIO_FORMAT_AAC) == (4, 5)


BAD_PARAMS = [
    ("fade_in_duration", -0.1, "between 0 and 10"), ("fade_in_duration", 10.5, "between 0 and 10"),
    ("fade_out_duration", 11, "between 0 and 10"), ("fade_out_duration", "2", "must be a number"),
    ("enable_normalization", 1, "true or false"), ("normalization_db", 0.5, "between -10 and 0"),
    ("normalization_db", -12.0, "between -10 and 0"), ("normalization_db", float("nan"), "finite"),
    ("latent_shift", 0.25, "between -0.2 and 0.2"), ("latent_shift", -0.3, "between -0.2 and 0.2"),
    ("latent_rescale", 0.4, "between 0.5 and 1.5"), ("latent_rescale", 2.0, "between 0.5 and 1.5"),
]


@pytest.mark.parametrize(("field", "value", "expected"), BAD_PARAMS,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_PARAMS)])
def test_out_of_range_params_are_refused_naming_the_field_and_range(field, value, expected):
    with pytest.raises(InvalidArgument) as error:
        _params(**{field: value}).validate()
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ") and expected in str(error.value)


BAD_CONFIG = [
    ("audio_format", "ogg", "one of flac, wav, mp3, opus, aac, wav32"), ("mp3_bitrate", "96k", "one of 128k, 192k, "
     "256k, 320k"), ("mp3_bitrate", 128, "one of 128k"), ("mp3_sample_rate", 32_000, "44100 or 48000 (Hz)"),
    ("mp3_sample_rate", True, "44100 or 48000"),
]


@pytest.mark.parametrize(("field", "value", "expected"), BAD_CONFIG,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_CONFIG)])
def test_out_of_range_config_is_refused_naming_the_field(field, value, expected):
    with pytest.raises(InvalidArgument) as error:
        GenerationConfig(**{field: value}).validate()
    assert error.value.field == field and expected in str(error.value)


def test_defaults_keep_existing_keys_and_each_option_makes_another_request():
    """Files are named by key: adding the options must not rename a default request's file."""
    assert set(OUTPUT_DEFAULTS) <= set(LATER_DEFAULTS)
    unset = params_from_proto(pb.GenerationParams(caption="x"))
    explicit = params_from_proto(params_to_proto(_params(**OUTPUT_DEFAULTS)))
    spec_only = {k: v for k, v in unset.to_dict().items() if k not in LATER_DEFAULTS}
    assert audio_key(unset.to_dict()) == audio_key(spec_only) == audio_key(explicit.to_dict())
    for name, value in CUSTOM.items():
        assert audio_key(_params(**{name: value}).to_dict()) != audio_key(_params().to_dict()), name


def test_request_files_take_upstreams_names(tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"caption": "x", "fade_in_duration": 2, "fade_out_duration": "3.5",
                                "enable_normalization": "false", "normalization_db": -3, "latent_shift": 0.1,
                                "latent_rescale": 0.9, "audio_format": "wav32", "mp3_bitrate": "320k",
                                "mp3_sample_rate": "44100"}))
    request = read_request_file(path)
    assert request.warnings() == []  # no longer "unsupported"
    assert request.params == {"caption": "x", "fade_in_duration": 2.0, "fade_out_duration": 3.5,
                              "enable_normalization": False, "normalization_db": -3.0, "latent_shift": 0.1,
                              "latent_rescale": 0.9}
    assert request.config == {"audio_format": "wav32", "mp3_bitrate": "320k", "mp3_sample_rate": 44_100}


def _cli_inputs(*argv: str):
    return gather_inputs(cli._parser().parse_args(["generate", "--caption", "x", *argv]))


def test_cli_flags_set_each_option_and_leave_the_rest_at_upstreams_defaults():
    assert dataclasses.asdict(_cli_inputs().params) == dataclasses.asdict(_params())
    inputs = _cli_inputs("--fade-in-duration", "1.5", "--fade-out-duration", "10", "--no-normalization",
                         "--normalization-db", "-6", "--latent-shift", "-0.2", "--latent-rescale", "0.5",
                         "--audio-format", "MP3", "--mp3-bitrate", "320K", "--mp3-sample-rate", "44100")
    assert {name: getattr(inputs.params, name) for name in CUSTOM} == CUSTOM
    assert (inputs.config.audio_format, inputs.config.mp3_bitrate, inputs.config.mp3_sample_rate) == \
        ("mp3", "320k", 44_100)
    assert {name: FIELD_FLAGS[name] for name in ("enable_normalization", "mp3_bitrate", "latent_rescale")} == {
        "enable_normalization": "--no-normalization", "mp3_bitrate": "--mp3-bitrate",
        "latent_rescale": "--latent-rescale"}
    for fmt in AUDIO_FORMATS:
        assert _cli_inputs("--audio-format", fmt).config.audio_format == fmt


def test_a_bad_flag_value_names_the_flag(tmp_path, capsys):
    code = cli.main(["generate", "--caption", "x", "--fade-in-duration", "12", "--target", "127.0.0.1:1",
                     "--out", str(tmp_path), "--quiet"])
    assert code == 2 and "--fade-in-duration: must be between 0 and 10, got 12.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        cli._parser().parse_args(["generate", "--mp3-sample-rate", "22050"])
