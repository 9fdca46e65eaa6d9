"""Every validation rule rejects its bad case with a message naming the field and allowed range."""

import pytest

from acestep_client import GenerationConfig, GenerationParams, InvalidArgument
from acestep_client.validation import named_tracks, normalize_keyscale, normalize_timesignature, parse_audio_codes

SRC = {"src_audio": "song.flac"}

# (overrides, field named in the error, text the message must contain)
BAD_PARAMS = [
    ({"task_type": "remix"}, "task_type", "text2music, cover"),
    ({"caption": "x" * 4097}, "caption", "at most 4096"),
    ({"lyrics": "x" * 4097}, "lyrics", "at most 4096"),
    ({"instruction": "x" * 513}, "instruction", "at most 512"),
    ({"lm_negative_prompt": "x" * 513}, "lm_negative_prompt", "at most 512"),
    ({"caption": "", "lyrics": ""}, "caption", "caption or lyrics"),
    ({"task_type": "cover"}, "src_audio", "needs a source audio"),
    ({"task_type": "repaint"}, "src_audio", "needs a source audio"),
    ({"task_type": "lego", "instruction": "Generate the guitar track:"}, "src_audio", "needs a source"),
    ({"task_type": "extract", "instruction": "Extract the vocals track:"}, "src_audio", "needs a source"),
    ({"task_type": "complete", "instruction": "Complete with drums:"}, "src_audio", "needs a source"),
    ({"task_type": "lego", **SRC}, "instruction", "naming a track"),
    ({"task_type": "extract", "instruction": "Extract the kazoo track:", **SRC}, "instruction", "vocals"),
    ({"task_type": "complete", "instruction": "Complete the input track:", **SRC}, "instruction", "track"),
    ({"src_audio": ""}, "src_audio", "non-empty file path"),
    ({"src_audio": "a\x00.wav"}, "src_audio", "without NUL characters"),
    ({"reference_audio": "\x00"}, "reference_audio", "without NUL characters"),
    ({"audio_codes": "<|audio_code_" + "9" * 5000 + "|>"}, "audio_codes", "5000-digit"),
    ({"audio_codes": "<|audio_code_" + "0" * 4000 + "65535|>"}, "audio_codes", "0-65534, got 65535"),
    ({"repainting_start": -600.0, "repainting_end": 600.0}, "repainting_end", "in (-600, 0] seconds"),
    ({"repainting_start": 0.0, "repainting_end": 1200.0}, "repainting_end", "in (0, 600] seconds"),
    ({"repainting_start": -0.5, "repainting_end": 600.0}, "repainting_end", "in (-0.5, 599.5] seconds"),
    ({"infer_method": "x" * 100_000}, "infer_method", "... (100000 characters)"),
    ({"reference_audio": ""}, "reference_audio", "non-empty file path"),
    ({"vocal_language": "klingon"}, "vocal_language", "en"),
    ({"bpm": 29}, "bpm", "between 30 and 300"),
    ({"bpm": 301}, "bpm", "between 30 and 300"),
    ({"bpm": 120.5}, "bpm", "integer"),
    ({"cot_bpm": 5}, "cot_bpm", "between 30 and 300"),
    ({"keyscale": "H major"}, "keyscale", "C major"),
    ({"timesignature": "5/4"}, "timesignature", "4/4"),
    ({"duration": 5}, "duration", "between 10 and 600"),
    ({"duration": 601}, "duration", "between 10 and 600"),
    ({"duration": float("nan")}, "duration", "finite"),
    ({"cot_duration": 700.0}, "cot_duration", "between 10 and 600"),
    ({"inference_steps": 0}, "inference_steps", "between 1 and 100"),
    ({"inference_steps": 101}, "inference_steps", "between 1 and 100"),
    ({"seed": -2}, "seed", "between -1 and 4294967295"),
    ({"guidance_scale": 0.5}, "guidance_scale", "between 1 and 15"),
    ({"guidance_scale": 15.5}, "guidance_scale", "between 1 and 15"),
    ({"cfg_interval_start": -0.1}, "cfg_interval_start", "between 0 and 1"),
    ({"cfg_interval_end": 1.5}, "cfg_interval_end", "between 0 and 1"),
    ({"cfg_interval_start": 0.8, "cfg_interval_end": 0.2}, "cfg_interval_start", "<= cfg_interval_end"),
    ({"repainting_start": -700.0}, "repainting_start", "between -600 and 600"),
    ({"repainting_start": 20.0, "repainting_end": 10.0}, "repainting_end", "after repainting_start"),
    ({"audio_cover_strength": 1.2}, "audio_cover_strength", "between 0 and 1"),
    ({"lm_temperature": 2.5}, "lm_temperature", "between 0 and 2"),
    ({"lm_cfg_scale": 0.5}, "lm_cfg_scale", "between 1 and 10"),
    ({"lm_top_k": -1}, "lm_top_k", "between 0 and 1000"),
    ({"lm_top_p": 1.5}, "lm_top_p", "between 0 and 1"),
    ({"audio_codes": "hello"}, "audio_codes", "<|audio_code_N|>"),
    ({"audio_codes": "<|audio_code_70000|>"}, "audio_codes", "0-65534"),
    ({"thinking": "yes"}, "thinking", "true or false"),
    ({"instrumental": 1}, "instrumental", "true or false"),
]

BAD_CONFIG = [
    ({"batch_size": 0}, "batch_size", "between 1 and 8"),
    ({"batch_size": 9}, "batch_size", "between 1 and 8"),
    ({"lm_batch_chunk_size": 0}, "lm_batch_chunk_size", "between 1 and 8"),
    ({"audio_format": "ogg"}, "audio_format", "flac, wav, mp3"),
    ({"seeds": [1, -5]}, "seeds[1]", "between -1 and 4294967295"),
    ({"seeds": 2**33}, "seeds", "between -1 and 4294967295"),
    ({"seeds": "1,2"}, "seeds", "list of integers"),
    ({"use_random_seed": None}, "use_random_seed", "true or false"),
]


@pytest.mark.parametrize(("overrides", "field", "text"), BAD_PARAMS)
def test_bad_params_name_the_field_and_range(overrides, field, text):
    params = GenerationParams(**{"caption": "calm piano", **overrides})
    with pytest.raises(InvalidArgument) as excinfo:
        params.validate()
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"{field}: ")
    assert text in str(excinfo.value)


@pytest.mark.parametrize(("overrides", "field", "text"), BAD_CONFIG)
def test_bad_config_names_the_field_and_range(overrides, field, text):
    with pytest.raises(InvalidArgument) as excinfo:
        GenerationConfig(**overrides).validate()
    assert excinfo.value.field == field
    assert text in str(excinfo.value)


GOOD_PARAMS = [
    {"caption": "calm piano"},
    {"lyrics": "[Instrumental]"},
    {"caption": "x", "bpm": 30, "duration": 10, "keyscale": "F# minor", "timesignature": "6/8"},
    {"caption": "x", "bpm": 300, "duration": 600, "keyscale": "Am", "timesignature": "4"},
    {"caption": "x", "duration": -1.0, "keyscale": "B♭ major", "vocal_language": "zh"},
    {"caption": "x", "duration": 0},
    {"task_type": "cover", "audio_codes": "<|audio_code_1|><|audio_code_63999|>"},
    {"task_type": "repaint", "src_audio": "a.mp3", "repainting_start": -5.0, "repainting_end": 20.0},
    {"task_type": "lego", "src_audio": "a.mp3", "instruction": "Generate the backing vocals track:"},
    {"task_type": "extract", "src_audio": "a.mp3", "instruction": "Extract the vocals track from the audio:"},
    {"task_type": "complete", "src_audio": "a.mp3", "instruction": "Complete the input track with drums, bass:"},
    {"caption": "x", "seed": 2**32 - 1, "guidance_scale": 15.0, "lm_temperature": 0.0, "lm_top_p": 1.0},
]


@pytest.mark.parametrize("values", GOOD_PARAMS)
def test_valid_requests_pass(values):
    GenerationParams(**values).validate()


def test_default_config_and_seed_forms_are_valid():
    for seeds in (None, 7, -1, [], [42, 123, 456], [-1, 0]):
        GenerationConfig(seeds=seeds).validate()


def test_audio_codes_with_leading_zeros_parse_and_long_numbers_are_refused_before_int():
    assert parse_audio_codes("<|audio_code_" + "0" * 5000 + "7|>") == [7]  # int() alone refuses 5,001 digits
    with pytest.raises(InvalidArgument) as excinfo:
        parse_audio_codes("<|audio_code_1|><|audio_code_" + "1" * 7 + "|>", "codes")
    assert excinfo.value.field == "codes" and "7-digit" in str(excinfo.value)


@pytest.mark.parametrize(("start", "end", "seconds", "ok"), [
    (-10.0, -1, 590.0, True), (-10.01, -1, 590.0, False), (-20.0, 10.0, 590.0, False), (0.0, 600.0, 600.0, True),
    (-5.0, 595.0, 10.0, True), (0.0, -1, 600.0, True),
])
def test_a_repaint_with_its_source_is_at_most_600_s(start, end, seconds, ok):
    from acestep_client.validation import check_repainting

    if ok:
        check_repainting(start, end, seconds)
        return
    with pytest.raises(InvalidArgument) as excinfo:
        check_repainting(start, end, seconds)
    assert excinfo.value.field == "repainting_start"
    assert f"at least {seconds - 600:g} s" in str(excinfo.value)


def test_helpers():
    assert normalize_timesignature(" 6/8 ") == "6"
    assert parse_audio_codes("<|audio_code_12|> <|audio_code_7|>") == [12, 7]
    assert named_tracks("Generate the BACKING_VOCALS track") == ["backing_vocals"]
    assert named_tracks("Complete the input track with drums, bass, guitar:") == ["guitar", "drums", "bass"]


@pytest.mark.parametrize(("given", "canonical"), [("Am", "A minor"), ("f#min", "F# minor"), ("Bb", "Bb major"),
                                                  ("C Major", "C Major"), ("", "")])
def test_keyscale_spellings_normalise(given, canonical):
    assert normalize_keyscale(given) == canonical


@pytest.mark.parametrize(("field", "value"), [
    ("dit_model", "../checkpoints/x"), ("lm_model", "/abs/path"), ("adapter", "a b"), ("adapter", "x" * 129),
    ("dit_model", "-leading-dash"),
])
def test_model_and_adapter_names_are_logical_names_never_paths(field, value):
    with pytest.raises(InvalidArgument) as error:
        GenerationParams(caption="x", **{field: value}).validate()
    assert error.value.field == field and "no paths" in str(error.value)


def test_adapter_scale_is_upstreams_zero_to_one():
    GenerationParams(caption="x", dit_model="acestep-v15-xl-sft", lm_model="acestep-5Hz-lm-4B",
                     adapter="my-lofi_lora.v2", adapter_scale=0.0).validate()
    with pytest.raises(InvalidArgument) as error:
        GenerationParams(caption="x", adapter="a", adapter_scale=1.5).validate()
    assert error.value.field == "adapter_scale" and "between 0 and 1" in str(error.value)
