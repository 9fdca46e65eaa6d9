"""Allowed metadata values and token-id tables derived from the *loaded* tokenizer.

Ids are never hard-coded: the tiny test tokenizer and the released 217,204-token tokenizer put the
special and audio-code tokens at different ids, and everything here works from ``tokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acestep_client import constants as api

LANGUAGES: tuple[str, ...] = api.VOCAL_LANGUAGES
KEYSCALE_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEYSCALE_ACCIDENTALS = ("", "#", "b", "♯", "♭")
KEYSCALE_MODES = ("major", "minor")
KEYSCALES: tuple[str, ...] = tuple(
    f"{note}{acc} {mode}" for note in KEYSCALE_NOTES for acc in KEYSCALE_ACCIDENTALS for mode in KEYSCALE_MODES
)
TIME_SIGNATURES: tuple[str, ...] = api.TIME_SIGNATURES
BPM_MIN, BPM_MAX = api.BPM_RANGE
DURATION_MIN, DURATION_MAX = (int(v) for v in api.DURATION_RANGE)
CODES_PER_SECOND = api.CODES_PER_SECOND
NUM_AUDIO_CODE_TOKENS = 65535  # <|audio_code_0|> .. <|audio_code_65534|> exist in the vocabulary
MAX_AUDIO_CODE = 63999  # only codes 0..63999 (FSQ 8*8*8*5*5*5) are ever sampled / accepted by the DiT
MAX_CAPTION_TOKENS = 512
MAX_NEW_TOKENS = 4032  # upstream max_model_len 4096 - 64

# Field order of the CoT block (alphabetical, as the training data and yaml.dump(sort_keys=True) write it).
COT_FIELDS: tuple[str, ...] = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")

THINK_START = "<think>"
THINK_END = "</think>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"


def audio_code_token(code: int) -> str:
    return f"<|audio_code_{code}|>"


@dataclass(frozen=True)
class TokenTable:
    """Ids the decoder needs, computed once per loaded tokenizer."""

    vocab_size: int
    eos_id: int
    pad_id: int | None
    newline_id: int
    think_start_id: int
    think_end_id: int
    audio_code_base: int  # id of <|audio_code_0|>; code N has id base + N
    backtick_ids: tuple[int, ...]
    special_ids: tuple[int, ...]  # chat/think/eos tokens a caption must not contain

    def is_code(self, token_id: int) -> bool:
        return self.audio_code_base <= token_id <= self.audio_code_base + MAX_AUDIO_CODE

    def code_of(self, token_id: int) -> int:
        return token_id - self.audio_code_base

    def code_id_range(self) -> tuple[int, int]:
        """Half-open id range of the usable codes 0..63999."""
        return self.audio_code_base, self.audio_code_base + MAX_AUDIO_CODE + 1

    def codes_mask(self, allow_eos: bool, device: torch.device | str = "cpu") -> torch.Tensor:
        """Additive mask (0 allowed / -inf blocked) that keeps only usable codes (+ EOS)."""
        mask = torch.full((self.vocab_size,), float("-inf"), device=device)
        lo, hi = self.code_id_range()
        mask[lo:hi] = 0.0
        if allow_eos:
            mask[self.eos_id] = 0.0
        return mask


def single_token_id(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"expected {text!r} to be a single token, got {ids}")
    return ids[0]


def build_token_table(tokenizer, vocab_size: int) -> TokenTable:
    """Look every id up through the tokenizer; fail loudly if the vocabulary is not ACE-Step's."""
    eos_id = single_token_id(tokenizer, IM_END)
    pad_id = tokenizer.pad_token_id
    base = single_token_id(tokenizer, audio_code_token(0))
    last = single_token_id(tokenizer, audio_code_token(NUM_AUDIO_CODE_TOKENS - 1))
    if last - base != NUM_AUDIO_CODE_TOKENS - 1:
        raise ValueError(f"audio-code tokens are not contiguous: {base}..{last}")
    special_names = (IM_START, IM_END, END_OF_TEXT, THINK_START, THINK_END)
    special_ids = tuple(single_token_id(tokenizer, name) for name in special_names)
    backticks = tuple(
        sorted({tid for text in ("`", " `") for tid in tokenizer.encode(text, add_special_tokens=False)[-1:]})
    )
    return TokenTable(
        vocab_size=vocab_size,
        eos_id=eos_id,
        pad_id=pad_id,
        newline_id=single_token_id(tokenizer, "\n"),
        think_start_id=single_token_id(tokenizer, THINK_START),
        think_end_id=single_token_id(tokenizer, THINK_END),
        audio_code_base=base,
        backtick_ids=backticks,
        special_ids=special_ids,
    )
