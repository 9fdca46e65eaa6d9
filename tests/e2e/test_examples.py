"""The nine "Complete Examples" of inference-api.md, through the orchestrator, with their own checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_client import AceStepClient, GenerationConfig, GenerationParams, generate_music
from acestep_client.audio_io import write_audio


def _song(path: Path, seconds: float, fmt: str) -> str:
    rate = 48_000
    t = np.arange(int(seconds * rate)) / rate
    audio = np.stack([0.4 * np.sin(2 * np.pi * 220 * t), 0.4 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    return str(write_audio(path, audio, rate, fmt))


def _check_files(result, count: int, fmt: str) -> None:
    assert result.success, result.error
    assert len(result.audios) == count
    for audio in result.audios:
        info = sf.info(audio["path"])
        assert Path(audio["path"]).suffix == f".{fmt}"
        assert info.samplerate == 48_000 and info.channels == 2
        assert audio["sample_rate"] == 48_000
        assert tuple(audio["tensor"].shape) == (2, audio["tensor"].shape[1])
        assert abs(info.frames - audio["tensor"].shape[1]) <= 2304  # mp3 frames pad the end


def _run(address: str, params: GenerationParams, config: GenerationConfig, save_dir: Path):
    with AceStepClient(address) as client:
        return generate_music(client, None, params, config, save_dir=str(save_dir))


def test_example_1_simple_text_to_music(stack, tmp_path):
    params = GenerationParams(task_type="text2music", caption="calm ambient music with soft piano and strings",
                              duration=60, bpm=80, keyscale="C Major")
    result = _run(stack.address, params, GenerationConfig(batch_size=2, audio_format="flac"), tmp_path)
    _check_files(result, 2, "flac")
    for audio in result.audios:
        assert audio["tensor"].shape[1] >= 60 * 48_000 - 1920
        assert audio["params"]["bpm"] == 80 and audio["params"]["keyscale"] == "C Major"


def test_example_2_song_with_lyrics(stack, tmp_path):
    lyrics = "Verse 1:\nWalking down the street today\n\nChorus:\nI'm moving on, I'm staying strong\n"
    params = GenerationParams(task_type="text2music", caption="pop ballad with emotional vocals", lyrics=lyrics,
                              vocal_language="en", bpm=72, duration=45)
    result = _run(stack.address, params, GenerationConfig(batch_size=1), tmp_path)
    _check_files(result, 1, "flac")
    assert result.audios[0]["params"]["lyrics"] == lyrics
    assert result.audios[0]["params"]["audio_codes"].count("<|audio_code_") == 45 * 5


def test_example_3_style_cover_with_lm_reasoning(stack, tmp_path):
    src = _song(tmp_path / "original_pop_song.mp3", 12, "mp3")
    params = GenerationParams(task_type="cover", src_audio=src, caption="orchestral symphonic arrangement",
                              audio_cover_strength=0.7, thinking=True, use_cot_metas=True)
    result = _run(stack.address, params, GenerationConfig(batch_size=1), tmp_path / "out")
    _check_files(result, 1, "flac")
    lm_meta = result.extra_outputs.get("lm_metadata")
    if lm_meta:  # the reference skips the LM for covers; so do we
        assert "bpm" in lm_meta


def test_example_4_repaint_section(base_stack, tmp_path):
    src = _song(tmp_path / "generated_track.mp3", 30, "mp3")
    params = GenerationParams(task_type="repaint", src_audio=src, repainting_start=15.0, repainting_end=25.0,
                              caption="dramatic orchestral buildup", inference_steps=32)
    result = _run(base_stack.address, params, GenerationConfig(batch_size=1), tmp_path / "out")
    _check_files(result, 1, "flac")


def test_example_5_batch_with_specific_seeds(stack, tmp_path):
    params = GenerationParams(task_type="text2music", caption="epic cinematic trailer music", duration=10)
    config = GenerationConfig(batch_size=4, seeds=[42, 123, 456], use_random_seed=False, lm_batch_chunk_size=2)
    result = _run(stack.address, params, config, tmp_path)
    _check_files(result, 4, "flac")
    seeds = [audio["params"]["seed"] for audio in result.audios]
    assert seeds[:3] == [42, 123, 456] and seeds[3] not in (42, 123, 456)
    assert len({audio["key"] for audio in result.audios}) == 4


def test_example_6_high_quality_base_model(base_stack, tmp_path):
    params = GenerationParams(task_type="text2music", caption="intricate jazz fusion with complex harmonies",
                              inference_steps=64, guidance_scale=8.0, use_adg=True, cfg_interval_start=0.0,
                              cfg_interval_end=1.0, seed=42, duration=10)
    config = GenerationConfig(batch_size=1, use_random_seed=False, audio_format="wav")
    result = _run(base_stack.address, params, config, tmp_path)
    _check_files(result, 1, "wav")
    assert result.audios[0]["params"]["seed"] == 42


def test_example_7_extract_vocals(base_stack, tmp_path):
    src = _song(tmp_path / "full_song_mix.mp3", 10, "mp3")
    params = GenerationParams(task_type="extract", src_audio=src,
                              instruction="Extract the vocals track from the audio:")
    result = _run(base_stack.address, params, GenerationConfig(batch_size=1), tmp_path / "out")
    _check_files(result, 1, "flac")


def test_example_8_add_guitar_track_lego(base_stack, tmp_path):
    src = _song(tmp_path / "drums_and_bass.mp3", 10, "mp3")
    params = GenerationParams(task_type="lego", src_audio=src,
                              instruction="Generate the guitar track based on the audio context:",
                              caption="funky rhythm guitar with wah-wah effect", repainting_start=0.0,
                              repainting_end=-1)
    result = _run(base_stack.address, params, GenerationConfig(batch_size=1), tmp_path / "out")
    _check_files(result, 1, "flac")


def test_example_9_instrumental(stack, tmp_path):
    params = GenerationParams(task_type="text2music", caption="upbeat electronic dance music", instrumental=True,
                              duration=120, bpm=128)
    result = _run(stack.address, params, GenerationConfig(batch_size=2), tmp_path)
    _check_files(result, 2, "flac")
    assert all(audio["params"]["instrumental"] for audio in result.audios)
    assert all(audio["tensor"].shape[1] >= 120 * 48_000 - 1920 for audio in result.audios)


@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_other_output_formats(stack, tmp_path, fmt):
    params = GenerationParams(caption="short jingle", duration=10, thinking=False, bpm=100, keyscale="D minor",
                              timesignature="4")
    _check_files(_run(stack.address, params, GenerationConfig(batch_size=1, audio_format=fmt), tmp_path), 1, fmt)
