"""Qwen3-Embedding-0.6B text encoder (plain transformers ``Qwen3Model``) and its tokenizer.

The tokenizer is read with the ``tokenizers`` library straight from ``tokenizer.json`` so its
post-processor (which appends ``<|endoftext|>``) applies exactly as in the release.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import Qwen3Model

END_OF_TEXT = "<|endoftext|>"
CAPTION_MAX_TOKENS = 256
LYRIC_MAX_TOKENS = 2048


@dataclass
class TokenBatch:
    ids: torch.Tensor  # [B, L] int64, right-padded
    mask: torch.Tensor  # [B, L] bool


class PromptTokenizer:
    """Tokenizes per item (with truncation) and right-pads with the pad (= end-of-text) id."""

    def __init__(self, tokenizer_file: Path):
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        pad_id = self._tokenizer.token_to_id(END_OF_TEXT)
        if pad_id is None:
            raise ValueError(f"{tokenizer_file} has no {END_OF_TEXT} token")
        self.pad_id = pad_id
        # Truncation is state of a tokenizers.Tokenizer and requests tokenize on several threads at once, so
        # each max_length gets its own configured copy (two in practice: caption and lyrics); nothing mutates
        # a tokenizer after it is built, so encoding needs no lock.
        self._truncating: dict[int, Tokenizer] = {}
        self._copy_lock = threading.Lock()

    def _truncating_tokenizer(self, max_length: int) -> Tokenizer:
        tokenizer = self._truncating.get(max_length)
        if tokenizer is None:
            with self._copy_lock:
                tokenizer = self._truncating.get(max_length)
                if tokenizer is None:
                    tokenizer = Tokenizer.from_str(self._tokenizer.to_str())
                    tokenizer.enable_truncation(max_length=max_length)
                    self._truncating[max_length] = tokenizer
        return tokenizer

    def encode(self, text: str, max_length: int) -> list[int]:
        return self._truncating_tokenizer(max_length).encode(text, add_special_tokens=True).ids

    def count(self, text: str) -> int:
        """Tokens of ``text`` with nothing cut (the appended end-of-text included)."""
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def batch(self, texts: list[str], max_length: int, device: torch.device | str) -> TokenBatch:
        encoded = [self.encode(t, max_length) for t in texts]
        return self.pad(encoded, device)

    def pad(self, encoded: list[list[int]], device: torch.device | str, length: int | None = None) -> TokenBatch:
        length = length if length is not None else max(len(e) for e in encoded)
        ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.bool)
        for row, seq in enumerate(encoded):
            seq = seq[:length]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = True
        return TokenBatch(ids.to(device), mask.to(device))


class TextEncoder:
    """Caption → last hidden state (no attention mask, as released); lyrics → token embeddings only."""

    def __init__(self, folder: Path, device: torch.device | str, dtype: torch.dtype):
        self.model = Qwen3Model.from_pretrained(str(folder), dtype=torch.float32).to(device=device, dtype=dtype)
        self.model.eval()
        self.tokenizer = PromptTokenizer(folder / "tokenizer.json")
        self.device = torch.device(device)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode_captions(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).last_hidden_state

    @torch.inference_mode()
    def embed_lyrics(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)
