"""The dataclasses carry exactly the spec's fields, types and defaults (inference-api.md)."""

import dataclasses
import typing

from acestep_client import GenerationConfig, GenerationParams, GenerationResult

SPEC_PARAMS = {
    "task_type": ("str", "text2music"),
    "instruction": ("str", "Fill the audio semantic mask based on the given conditions:"),
    "reference_audio": ("str | None", None),
    "src_audio": ("str | None", None),
    "audio_codes": ("str", ""),
    "caption": ("str", ""),
    "lyrics": ("str", ""),
    "instrumental": ("bool", False),
    "vocal_language": ("str", "unknown"),
    "bpm": ("int | None", None),
    "keyscale": ("str", ""),
    "timesignature": ("str", ""),
    "duration": ("float", -1.0),
    "inference_steps": ("int", 8),
    "seed": ("int", -1),
    "guidance_scale": ("float", 7.0),
    "use_adg": ("bool", False),
    "cfg_interval_start": ("float", 0.0),
    "cfg_interval_end": ("float", 1.0),
    "repainting_start": ("float", 0.0),
    "repainting_end": ("float", -1),
    "audio_cover_strength": ("float", 1.0),
    "thinking": ("bool", True),
    "lm_temperature": ("float", 0.85),
    "lm_cfg_scale": ("float", 2.0),
    "lm_top_k": ("int", 0),
    "lm_top_p": ("float", 0.9),
    "lm_negative_prompt": ("str", "NO USER INPUT"),
    "use_cot_metas": ("bool", True),
    "use_cot_caption": ("bool", True),
    "use_cot_lyrics": ("bool", False),
    "use_cot_language": ("bool", True),
    "use_constrained_decoding": ("bool", True),
    "cot_bpm": ("int | None", None),
    "cot_keyscale": ("str", ""),
    "cot_timesignature": ("str", ""),
    "cot_duration": ("float | None", None),
    "cot_vocal_language": ("str", "unknown"),
    "cot_caption": ("str", ""),
    "cot_lyrics": ("str", ""),
    # Sampling, as upstream 6d467e4
    "shift": ("float", 3.0),
    "infer_method": ("str", "ode"),
    "timesteps": ("list[float] | None", None),
    "sampler_mode": ("str", "euler"),
    "velocity_norm_threshold": ("float", 0.0),
    "velocity_ema_factor": ("float", 0.0),
    "dcw_enabled": ("bool", True),
    "dcw_mode": ("str", "double"),
    "dcw_scaler": ("float", 0.05),
    "dcw_high_scaler": ("float", 0.02),
    "dcw_wavelet": ("str", "haar"),
    # Output, as upstream 6d467e4
    "fade_in_duration": ("float", 0.0),
    "fade_out_duration": ("float", 0.0),
    "enable_normalization": ("bool", True),
    "normalization_db": ("float", -1.0),
    "latent_shift": ("float", 0.0),
    "latent_rescale": ("float", 1.0),
    # Editing, upstream 6d467e4's names (defaults: dit_service/edit_options.py)
    "retake_seed": ("int", -1),
    "retake_variance": ("float", 0.0),
    "repaint_mode": ("str", "balanced"),
    "repaint_strength": ("float", 0.5),
    "repaint_latent_crossfade_frames": ("int", 10),
    "repaint_wav_crossfade_sec": ("float", 0.0),
    "chunk_mask_mode": ("str", "explicit"),
    "cover_noise_strength": ("float", 0.0),
    "global_caption": ("str", ""),
    "flow_edit_morph": ("bool", False),
    "flow_edit_source_caption": ("str", ""),
    "flow_edit_source_lyrics": ("str", ""),
    "flow_edit_n_min": ("float", 0.0),
    "flow_edit_n_max": ("float", 1.0),
    "flow_edit_n_avg": ("int", 1),
    # Models per request (issue 13): logical names, "" = the deployment's default
    "dit_model": ("str", ""),
    "lm_model": ("str", ""),
    "adapter": ("str", ""),
    "adapter_scale": ("float", 1.0),
}

SPEC_CONFIG = {
    "batch_size": ("int", 2),
    "allow_lm_batch": ("bool", False),
    "use_random_seed": ("bool", True),
    "seeds": ("list[int] | int | None", None),
    "lm_batch_chunk_size": ("int", 8),
    "constrained_decoding_debug": ("bool", False),
    "audio_format": ("str", "flac"),
    "mp3_bitrate": ("str", "128k"),
    "mp3_sample_rate": ("int", 48000),
}


def _spec_of(cls):
    return {f.name: (f.type, f.default) for f in dataclasses.fields(cls)}


def test_generation_params_has_exactly_the_spec_fields_in_order_with_defaults():
    assert list(_spec_of(GenerationParams)) == list(SPEC_PARAMS)
    assert _spec_of(GenerationParams) == SPEC_PARAMS


def test_generation_config_has_exactly_the_spec_fields_with_defaults():
    assert _spec_of(GenerationConfig) == SPEC_CONFIG


def test_generation_result_fields_and_empty_defaults():
    names = [f.name for f in dataclasses.fields(GenerationResult)]
    assert names == ["audios", "status_message", "extra_outputs", "success", "error"]
    a, b = GenerationResult(), GenerationResult()
    a.audios.append({"path": "x"})
    assert b.audios == []  # no shared mutable default


def test_type_hints_resolve():
    hints = typing.get_type_hints(GenerationParams)
    assert hints["bpm"] == int | None
    assert hints["duration"] is float


def test_to_dict_has_every_field():
    assert set(GenerationParams().to_dict()) == set(SPEC_PARAMS)
    assert GenerationConfig(seeds=[1, 2]).to_dict()["seeds"] == [1, 2]
