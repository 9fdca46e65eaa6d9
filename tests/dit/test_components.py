"""Unit checks of the pieces: windowed decode, schedules, guidance, FSQ, prompts, code parsing."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

from dit_service.engine import parse_audio_codes
from dit_service.model.audio_tokenizer import FiniteScalarQuantizer
from dit_service.model.condition_encoder import pack_sequences
from dit_service.model.layers import build_attention_mask
from dit_service.prompts import caption_prompt, lyric_prompt, metas_string
from dit_service.samplers import APGState, adg_velocity, base_timesteps, snap_turbo_shift, turbo_timesteps
from dit_service.vae_decode import decode_latents, iter_decoded_windows, peak_normalise, plan_windows


def test_plan_windows_matches_reference_tiling():
    assert plan_windows(500) == [plan_windows(500)[0]] and plan_windows(500)[0].window_end == 500
    windows = plan_windows(750)
    assert [(w.window_start, w.window_end, w.core_start, w.core_end) for w in windows] == [
        (0, 448, 0, 384),
        (320, 750, 384, 750),
    ]
    cores = [(w.core_start, w.core_end) for w in plan_windows(6000)]
    assert cores[0][0] == 0 and cores[-1][1] == 6000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cores))


def test_streamed_windows_equal_whole_decode(turbo_engine):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 900, turbo_engine.latent_channels, generator=generator)
    with torch.inference_mode():
        whole = decode_latents(turbo_engine.vae, latents)
        pieces = list(iter_decoded_windows(turbo_engine.vae, latents, turbo_engine.hop))
    assert len(pieces) == 3
    assert [start for start, _ in pieces] == [0, 384 * 1920, 768 * 1920]
    streamed = torch.cat([audio for _, audio in pieces], dim=-1)
    assert streamed.shape == whole.shape == (1, 2, 900 * 1920)
    torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=1e-4)


def test_peak_normalise_only_above_one():
    quiet = torch.full((2, 10), 0.5)
    assert torch.equal(peak_normalise(quiet), quiet)
    loud = torch.tensor([[2.0, -4.0], [1.0, 0.0]])
    assert torch.equal(peak_normalise(loud), loud / 4.0)


def test_turbo_schedule_and_shift_snapping():
    assert snap_turbo_shift(2.5) == 2 and snap_turbo_shift(2.6) == 3 and snap_turbo_shift(7.0) == 3
    expected = [1, 0.95455, 0.9, 0.83333, 0.75, 0.64286, 0.5, 0.3]
    assert all(abs(a - b) < 1e-5 for a, b in zip(turbo_timesteps(3.0), expected, strict=True))
    bf16 = torch.tensor(turbo_timesteps(3.0), dtype=torch.bfloat16).tolist()
    assert bf16 == [1, 0.953125, 0.8984375, 0.83203125, 0.75, 0.64453125, 0.5, 0.30078125]


def test_base_schedule_in_bf16_matches_reference_values():
    t = base_timesteps(32, 3.0, torch.bfloat16, "cpu").tolist()
    assert len(t) == 33 and t[0] == 1 and t[-1] == 0
    assert t[1:5] == [0.98828125, 0.9765625, 0.96484375, 0.953125]
    assert t[-4:-1] == [0.2373046875, 0.1669921875, 0.08837890625]


def test_apg_removes_parallel_component_and_has_momentum():
    generator = torch.Generator().manual_seed(0)
    v_cond = torch.randn(1, 50, 4, generator=generator)
    v_uncond = v_cond * 0.5  # difference parallel to v_cond → no guidance contribution
    apg = APGState(scale=7.0)
    torch.testing.assert_close(apg(v_cond, v_uncond), v_cond, atol=1e-5, rtol=1e-5)
    apg2 = APGState(scale=7.0)
    other = torch.randn(1, 50, 4, generator=generator)
    first = apg2(v_cond, other)
    second = apg2(v_cond, other)
    assert not torch.allclose(first, second)  # the momentum buffer changes the second update


def test_adg_is_identity_when_conditions_agree():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 20, 4, generator=generator)
    v = torch.randn(1, 20, 4, generator=generator)
    torch.testing.assert_close(adg_velocity(x, v, v, 0.7, 5.0), v, atol=1e-4, rtol=1e-4)


def test_fsq_round_trip_and_bf16_codebook():
    torch.manual_seed(0)
    fsq = FiniteScalarQuantizer(32, [8, 8, 8, 5, 5, 5])
    assert fsq.codebook_size == 64000
    assert fsq.basis.tolist() == [1, 8, 64, 512, 2560, 12800]
    hidden = torch.randn(3, 7, 32) * 3
    quantized, indices = fsq.quantize(hidden)
    assert indices.shape == (3, 7, 1) and int(indices.min()) >= 0 and int(indices.max()) < 64000
    torch.testing.assert_close(fsq.output_from_indices(indices[..., 0]), quantized)
    digits = torch.arange(8)[:, None].expand(8, 6).clamp_max(fsq.levels - 1)
    levels8 = fsq._level_codes(digits, torch.bfloat16)[:, 0].tolist()
    assert levels8 == [-1, -0.71484375, -0.4296875, -0.14453125, 0.140625, 0.421875, 0.7109375, 1]
    assert fsq.to(torch.bfloat16).soft_clamp_input_value.tolist()[:1] == [1.140625]


def test_pack_sequences_moves_valid_tokens_first():
    a = torch.tensor([[[1.0], [2.0], [0.0]]])
    b = torch.tensor([[[3.0], [0.0]]])
    hidden, mask = pack_sequences(a, b, torch.tensor([[1, 1, 0]]), torch.tensor([[1, 0]]))
    assert hidden[0, :3, 0].tolist() == [1.0, 2.0, 3.0]
    assert mask.tolist() == [[True, True, True, False, False]]


def test_sliding_mask_is_bidirectional_band():
    mask = build_attention_mask(300, 128, None, "cpu")[0, 0]
    assert bool(mask[0, 128]) and not bool(mask[0, 129]) and bool(mask[200, 72]) and not bool(mask[200, 71])
    assert build_attention_mask(300, None, None, "cpu") is None


def test_prompt_templates():
    metas = metas_string(120, "4", "C major", 30.7)
    assert metas == "- bpm: 120\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n"
    assert metas_string(None, "", "", None) == (
        "- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 30 seconds\n"
    )
    prompt = caption_prompt("Fill the audio semantic mask based on the given conditions", "synth-pop", metas)
    assert prompt.startswith(
        "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n"
    )
    assert prompt.endswith("# Metas\n" + metas + "<|endoftext|>\n")
    assert lyric_prompt("en", "la") == "# Languages\nen\n\n# Lyric\nla<|endoftext|>"


def test_tokenizer_appends_end_of_text(turbo_engine):
    tokenizer = turbo_engine.text_encoder.tokenizer
    ids = tokenizer.encode("hi<|endoftext|>\n", 256)
    assert ids[-1] == tokenizer.pad_id and ids[-3] == tokenizer.pad_id
    assert len(tokenizer.encode("x" * 1000, 256)) == 256


def test_parse_audio_codes():
    assert parse_audio_codes("<|audio_code_12|><|audio_code_7|>") == [12, 7]
    assert parse_audio_codes("text <|audio_code_0|> more<|audio_code_99999|>") == [0, 63999]
    assert parse_audio_codes("") == []


def test_banded_attention_equals_dense_sliding_mask():
    from dit_service.model.layers import banded_attention, grouped_attention, sliding_window_mask

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 301, 8, generator=generator)
    k = torch.randn(2, 2, 301, 8, generator=generator)
    v = torch.randn(2, 2, 301, 8, generator=generator)
    dense = grouped_attention(q, k, v, sliding_window_mask(301, 16, "cpu")[None, None])
    torch.testing.assert_close(banded_attention(q, k, v, 16), dense, atol=1e-5, rtol=1e-5)


def test_fast_vae_path_is_bit_identical_to_diffusers():
    from diffusers import AutoencoderOobleck

    from dit_service.model.vae import optimize_vae_for_inference

    def make() -> AutoencoderOobleck:
        torch.manual_seed(0)
        vae = AutoencoderOobleck(
            encoder_hidden_size=8,
            downsampling_ratios=[2, 4, 4, 6, 10],
            channel_multiples=[1, 2, 2, 2, 2],
            decoder_channels=8,
            decoder_input_channels=4,
            sampling_rate=48000,
        )
        with torch.no_grad():
            for name, param in vae.named_parameters():
                if "alpha" in name or "beta" in name:
                    param.normal_(0, 0.3)
        return vae

    latents = torch.randn(1, 4, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = make().decode(latents).sample
        fast = optimize_vae_for_inference(make()).decode(latents).sample
    assert torch.equal(reference, fast)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler")
def test_compiled_vae_path_matches_diffusers():
    from diffusers import AutoencoderOobleck

    from dit_service.model.vae import optimize_vae_for_inference

    def make() -> AutoencoderOobleck:
        torch.manual_seed(0)
        return AutoencoderOobleck(
            encoder_hidden_size=8,
            downsampling_ratios=[2, 4, 4, 6, 10],
            channel_multiples=[1, 2, 2, 2, 2],
            decoder_channels=8,
            decoder_input_channels=4,
            sampling_rate=48000,
        )

    latents = torch.randn(1, 4, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = make().decode(latents).sample
        fused = optimize_vae_for_inference(make(), compile_snake=True).decode(latents).sample
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
