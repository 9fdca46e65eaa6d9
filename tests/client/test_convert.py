"""Dataclass <-> proto conversion loses nothing, for every field (property-based)."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acestep_client import GenerationConfig, GenerationParams
from acestep_client.constants import AUDIO_FORMATS, TASK_TYPES
from acestep_client.convert import config_from_proto, config_to_proto, params_from_proto, params_to_proto
from acestep_client.errors import InvalidArgument
from acestep_client.keys import audio_key
from acestep_client.proto.acestep.v1 import generation_pb2 as pb

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
doubles = st.floats(allow_nan=False, allow_infinity=False)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)

_BY_TYPE = {
    "str": text,
    "bool": st.booleans(),
    "int": int32,
    "float": doubles,
    "str | None": st.none() | text,
    "int | None": st.none() | int32,
    "float | None": st.none() | doubles,
    "list[float] | None": st.none() | st.lists(doubles, min_size=1, max_size=25),  # [] travels as None
}
_SPECIAL = {"task_type": st.sampled_from(TASK_TYPES), "seed": int64, "audio_format": st.sampled_from(AUDIO_FORMATS)}


def _strategy(cls, extra=None):
    special = {**_SPECIAL, **(extra or {})}
    fields = {f.name: special[f.name] if f.name in special else _BY_TYPE[f.type] for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


seeds = st.none() | int64 | st.lists(int64, max_size=10)


@settings(max_examples=300, deadline=None)
@given(_strategy(GenerationParams))
def test_params_round_trip_is_lossless(params):
    message = params_to_proto(params)
    wire = pb.GenerationParams.FromString(message.SerializeToString())
    assert params_from_proto(wire) == params


@settings(max_examples=200, deadline=None)
@given(_strategy(GenerationConfig, {"seeds": seeds}))
def test_config_round_trip_is_lossless(config):
    wire = pb.GenerationConfig.FromString(config_to_proto(config).SerializeToString())
    back = config_from_proto(wire)
    assert back == config
    assert type(back.seeds) is type(config.seeds)


def test_every_dataclass_field_has_a_proto_field():
    assert {f.name for f in dataclasses.fields(GenerationParams)} == set(pb.GenerationParams.DESCRIPTOR.fields_by_name)
    config_fields = set(pb.GenerationConfig.DESCRIPTOR.fields_by_name) - {"seed_list", "single_seed"}
    assert {f.name for f in dataclasses.fields(GenerationConfig)} - {"seeds"} == config_fields


def test_empty_messages_mean_the_api_defaults():
    """A client in another language that leaves fields out gets the spec's defaults."""
    assert params_from_proto(pb.GenerationParams()) == GenerationParams()
    assert config_from_proto(pb.GenerationConfig()) == GenerationConfig()


def test_optional_fields_distinguish_none_from_zero():
    params = params_from_proto(params_to_proto(GenerationParams(bpm=None, cot_duration=0.0)))
    assert params.bpm is None and params.cot_duration == 0.0
    assert config_from_proto(config_to_proto(GenerationConfig(seeds=[]))).seeds == []


@pytest.mark.parametrize(
    ("message", "convert", "field"),
    [
        (pb.GenerationParams(task_type=99), params_from_proto, "task_type"),
        (pb.GenerationConfig(audio_format=99), config_from_proto, "audio_format"),
    ],
)
def test_enum_numbers_no_version_defines_are_invalid_argument_naming_the_field(message, convert, field):
    """proto3 enums are open: another client's made-up number must not crash the server (UNKNOWN/INTERNAL)."""
    wire = type(message).FromString(message.SerializeToString())
    with pytest.raises(InvalidArgument) as error:
        convert(wire)
    assert error.value.field == field
    assert "99" in str(error.value) and "allowed" in str(error.value)


def test_an_explicit_default_gives_the_same_key_as_leaving_the_field_unset():
    """Files are named by key: repainting_end=-1 sent explicitly is the same request as leaving it out."""
    unset = params_from_proto(pb.GenerationParams(caption="x"))
    explicit = pb.GenerationParams(caption="x", repainting_end=-1.0, cfg_interval_end=1.0, audio_cover_strength=1.0,
                                   inference_steps=8, seed=-1, guidance_scale=7.0, thinking=True, lm_top_p=0.9,
                                   use_cot_metas=True, duration=-1.0, lm_temperature=0.85, lm_cfg_scale=2.0)
    assert explicit.HasField("repainting_end")
    assert audio_key(params_from_proto(explicit).to_dict()) == audio_key(unset.to_dict())
    # ... and a different value still gives a different key.
    assert audio_key(params_from_proto(pb.GenerationParams(caption="x", repainting_end=12.0)).to_dict()) != \
        audio_key(unset.to_dict())
