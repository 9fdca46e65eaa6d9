"""Upstream's editing options as API fields (retake, repaint mode/strength/crossfades, chunk-mask mode, cover
noise, global caption, flow edit): defaults, range errors naming the field, the wire, keys, request files and CLI flags.
(The audio side: tests/dit/test_edit_options.py, tests/e2e/test_edit_options.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest

from acestep_client import GenerationParams, cli
from acestep_client.cli_generate import FIELD_FLAGS, gather_inputs
from acestep_client.convert import params_from_proto, params_to_proto
from acestep_client.errors import InvalidArgument
from acestep_client.keys import LATER_DEFAULTS, audio_key
from acestep_client.proto.acestep.v1 import generation_pb2 as pb
from acestep_client.request_file import read_request_file
from dit_service.edit_options import EditOptions

EDIT_DEFAULTS = {"retake_seed": -1, "retake_variance": 0.0, "repaint_mode": "balanced", "repaint_strength": 0.5,
                 "repaint_latent_crossfade_frames": 10, "chunk_mask_mode": "explicit", "cover_noise_strength": 0.0,
                 "global_caption": "", "repaint_wav_crossfade_sec": 0.0, "flow_edit_morph": False,
                 "flow_edit_source_caption": "", "flow_edit_source_lyrics": "", "flow_edit_n_min": 0.0,
                 "flow_edit_n_max": 1.0, "flow_edit_n_avg": 1}
CUSTOM = {"retake_seed": 42, "retake_variance": 0.25, "repaint_mode": "aggressive", "repaint_strength": 0.0,
          "repaint_latent_crossfade_frames": 0, "chunk_mask_mode": "auto", "cover_noise_strength": 0.7,
          "global_caption": "an upbeat rock song", "repaint_wav_crossfade_sec": 0.02, "flow_edit_morph": True,
          "flow_edit_source_caption": "a folk song", "flow_edit_source_lyrics": "[verse]\nold words",
          "flow_edit_n_min": 0.2, "flow_edit_n_max": 0.8, "flow_edit_n_avg": 3}


def _params(**fields) -> GenerationParams:
    return GenerationParams(caption="x", **fields)


def test_defaults_match_the_dit_service_and_an_empty_message_means_them():
    assert {name: getattr(GenerationParams(), name) for name in EDIT_DEFAULTS} == EDIT_DEFAULTS
    assert dataclasses.asdict(EditOptions()) == EDIT_DEFAULTS
    assert params_from_proto(pb.GenerationParams()) == GenerationParams()
    numbers = {name: pb.GenerationParams.DESCRIPTOR.fields_by_name[name].number for name in EDIT_DEFAULTS}
    assert sorted(numbers.values()) == list(range(58, 73))


def test_every_option_round_trips_through_the_wire():
    params = _params(src_audio="song.wav", **CUSTOM)
    wire = pb.GenerationParams.FromString(params_to_proto(params).SerializeToString())
    assert params_from_proto(wire) == params
    assert wire.HasField("repaint_latent_crossfade_frames") and wire.repaint_latent_crossfade_frames == 0
    assert wire.HasField("repaint_strength") and wire.repaint_strength == 0.0  # 0 is sent, not "unset"


BAD_PARAMS = [
    ("retake_seed", -2, "between -1 and 4294967295"), ("retake_seed", 1.5, "integer"),
    ("retake_variance", 1.1, "between 0 and 1"), ("retake_variance", -0.1, "between 0 and 1"),
    ("repaint_mode", "wild", "one of conservative, balanced, aggressive"), ("repaint_strength", 1.5, "between 0 and 1"),
    ("repaint_latent_crossfade_frames", 101, "between 0 and 100"), ("repaint_latent_crossfade_frames", -1, "between"),
    ("chunk_mask_mode", "manual", "one of explicit, auto"), ("cover_noise_strength", 2, "between 0 and 1"),
    ("global_caption", "x" * 4097, "at most 4096 characters"),
    ("repaint_wav_crossfade_sec", 1.5, "between 0 and 1"), ("repaint_wav_crossfade_sec", float("nan"), "finite"),
    ("flow_edit_morph", 1, "true or false"), ("flow_edit_n_min", -0.1, "between 0 and 1"),
    ("flow_edit_n_max", 1.2, "between 0 and 1"), ("flow_edit_n_avg", 0, "between 1 and 8"),
    ("flow_edit_n_avg", 9, "between 1 and 8"), ("flow_edit_n_avg", 2.5, "integer"),
    ("flow_edit_source_caption", "x" * 4097, "at most 4096 characters"),
    ("flow_edit_source_lyrics", "x" * 4097, "at most 4096 characters"),
]


@pytest.mark.parametrize(("field", "value", "expected"), BAD_PARAMS,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_PARAMS)])
def test_out_of_range_params_are_refused_naming_the_field_and_range(field, value, expected):
    with pytest.raises(InvalidArgument) as error:
        _params(**{field: value}).validate()
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ") and expected in str(error.value)


def test_a_flow_edit_window_must_be_ordered_and_needs_a_source():
    with pytest.raises(InvalidArgument) as error:
        _params(flow_edit_n_min=0.6, flow_edit_n_max=0.4).validate()
    assert error.value.field == "flow_edit_n_max" and ">= flow_edit_n_min (0.6)" in str(error.value)
    with pytest.raises(InvalidArgument) as error:
        _params(flow_edit_morph=True).validate()
    assert error.value.field == "src_audio" and "flow_edit_morph" in str(error.value)
    _params(flow_edit_morph=True, src_audio="song.wav", flow_edit_n_min=0.5, flow_edit_n_max=0.5).validate()


def test_defaults_keep_existing_keys_and_each_option_makes_another_request():
    assert set(EDIT_DEFAULTS) <= set(LATER_DEFAULTS)
    unset = params_from_proto(pb.GenerationParams(caption="x"))
    explicit = params_from_proto(params_to_proto(_params(**EDIT_DEFAULTS)))
    spec_only = {k: v for k, v in unset.to_dict().items() if k not in LATER_DEFAULTS}
    assert audio_key(unset.to_dict()) == audio_key(spec_only) == audio_key(explicit.to_dict())
    for name, value in CUSTOM.items():
        assert audio_key(_params(**{name: value}).to_dict()) != audio_key(_params().to_dict()), name


def test_request_files_take_upstreams_names(tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"caption": "x", "retake_seed": "42", "retake_variance": 0.25,
                                "repaint_mode": "aggressive", "repaint_strength": 0,
                                "repaint_latent_crossfade_frames": 0,
                                "chunk_mask_mode": "auto", "cover_noise_strength": 0.7,
                                "global_caption": "an upbeat rock song", "repaint_wav_crossfade_sec": 0.02,
                                "flow_edit_morph": True, "flow_edit_source_caption": "a folk song",
                                "flow_edit_source_lyrics": "[verse]\nold words", "flow_edit_n_min": 0.2,
                                "flow_edit_n_max": 0.8, "flow_edit_n_avg": 3, "use_tiled_decode": True}))
    request = read_request_file(path)
    assert request.params == {"caption": "x", **CUSTOM}
    assert request.unsupported == ["use_tiled_decode"]  # named, never silently dropped


def test_cli_flags_set_each_option():
    def inputs(*argv: str):
        return gather_inputs(cli._parser().parse_args(["generate", "--caption", "x", *argv]))

    assert dataclasses.asdict(inputs().params) == dataclasses.asdict(_params())
    flagged = inputs("--retake-seed", "42", "--retake-variance", "0.25", "--repaint-mode", "Aggressive",
                     "--repaint-strength", "0", "--repaint-latent-crossfade-frames", "0", "--chunk-mask-mode", "auto",
                     "--cover-noise-strength", "0.7", "--global-caption", "an upbeat rock song",
                     "--repaint-wav-crossfade-sec", "0.02", "--flow-edit-morph",
                     "--flow-edit-source-caption", "a folk song", "--flow-edit-source-lyrics", "[verse]\nold words",
                     "--flow-edit-n-min", "0.2", "--flow-edit-n-max", "0.8", "--flow-edit-n-avg", "3")
    assert {name: getattr(flagged.params, name) for name in CUSTOM} == CUSTOM
    assert {name: FIELD_FLAGS[name] for name in CUSTOM} == {name: "--" + name.replace("_", "-") for name in CUSTOM}
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        cli._parser().parse_args(["generate", "--repaint-mode", "wild"])
