"""Constrained decoding: a per-row state machine over token ids that keeps the CoT parseable.

Phase 1 (metadata) forces ``<think>\\n`` and each ``field:`` name, restricts values to the allowed lists
through prefix trees built from the loaded tokenizer, injects user metadata verbatim, and forces EOS
where ``</think>`` would follow. Phase 2 allows only audio-code tokens, exactly ``int(5*duration)`` of
them when the duration is known, then EOS.

Deliberate deviations from upstream (they make every constrained CoT parse; see ``tests/lm``):
* when a caption line ends and the next line is not a continuation, the *next field name is forced*
  (upstream lets the model write a name and jumps to whatever field it named, which can lock the FSM);
* every added token (EOS, pad, chat/think/tool tags) and all 65,535 code tokens are blocked inside
  the caption (upstream allows EOS, ending Phase 1 early, and the unused codes 64000+, which make
  the parser drop the rest of the CoT).
Each row has its own state machine, so rows of a batch are independent (upstream shares one).

Text modes (``describe=True``: understand, create sample, format) write the same CoT, then the
``</think>`` tag, then free text (the lyrics) with all 65,535 audio-code tokens blocked (upstream: codes
0-63999), until EOS. There ``language`` can be injected too (upstream's format mode skips the language
line instead), and user metadata arrives in canonical spelling ("Am" -> "A minor", "4/4" -> "4"), not as
typed. The ``genres`` line that upstream writes in these modes is skipped: its value list
(``genres_vocab.txt``) is not public, and no result type carries genres.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .vocab import (
    BPM_MAX,
    BPM_MIN,
    DURATION_MAX,
    DURATION_MIN,
    KEYSCALES,
    LANGUAGES,
    MAX_CAPTION_TOKENS,
    NUM_AUDIO_CODE_TOKENS,
    TIME_SIGNATURES,
    TokenTable,
)

logger = logging.getLogger(__name__)

FIELD_ORDER: tuple[str, ...] = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
INJECTABLE_FIELDS = ("bpm", "duration", "keyscale", "timesignature")
DESCRIBE_INJECTABLE_FIELDS = (*INJECTABLE_FIELDS, "language")
# Fields whose newline is forced as soon as the value is complete (no longer value can extend them).
NEWLINE_FORCED_WHEN_COMPLETE = ("keyscale", "language", "timesignature")


@dataclass
class ValueTree:
    """Token-prefix tree of the allowed values of one field: prefix -> allowed next tokens."""

    next_tokens: dict[tuple[int, ...], set[int]] = field(default_factory=dict)
    complete: set[tuple[int, ...]] = field(default_factory=set)

    def add(self, token_ids: list[int]) -> None:
        for i in range(len(token_ids)):
            self.next_tokens.setdefault(tuple(token_ids[:i]), set()).add(token_ids[i])
        self.complete.add(tuple(token_ids))


@dataclass(frozen=True)
class CotVocabulary:
    """Everything the Phase-1 machine needs, computed once from the tokenizer."""

    table: TokenTable
    name_tokens: dict[str, tuple[int, ...]]
    trees: dict[str, ValueTree]
    caption_block_ids: tuple[int, ...]
    newline_token_ids: frozenset[int]  # every token whose text contains a newline
    leading_space_ids: frozenset[int]  # every token whose text starts with space or tab
    caption_block_tensor: torch.Tensor
    max_caption_tokens: int
    encode_value: Callable[[str, str], list[int]]  # (field, value) -> value tokens after ``field:``
    code_block_range: tuple[int, int]  # every audio-code token, blocked in the text modes' lyrics


def _value_tokens(tokenizer, field_name: str, value: str) -> list[int]:
    """Tokens of the value as they follow ``field:`` in context (upstream's strip-the-prefix rule)."""
    name_ids = tokenizer.encode(f"{field_name}:", add_special_tokens=False)
    full = tokenizer.encode(f"{field_name}: {value}", add_special_tokens=False)
    if full[: len(name_ids)] == name_ids:
        return full[len(name_ids) :]
    return tokenizer.encode(f" {value}", add_special_tokens=False)


def build_cot_vocabulary(
    tokenizer, table: TokenTable, max_duration: int = DURATION_MAX, max_caption_tokens: int = MAX_CAPTION_TOKENS
) -> CotVocabulary:
    values = {
        "bpm": [str(v) for v in range(BPM_MIN, BPM_MAX + 1)],
        "duration": [str(v) for v in range(DURATION_MIN, max_duration + 1)],
        "keyscale": list(KEYSCALES),
        "language": list(LANGUAGES),
        "timesignature": list(TIME_SIGNATURES),
    }
    trees = {}
    for name, allowed in values.items():
        tree = ValueTree()
        for value in allowed:
            tree.add(_value_tokens(tokenizer, name, value))
        trees[name] = tree
    vocab_texts = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    newline_ids, space_ids = set(), set()
    for token_id, piece in enumerate(vocab_texts):
        if piece is None:
            continue
        text = tokenizer.convert_tokens_to_string([piece])
        if "\n" in text:
            newline_ids.add(token_id)
        if text[:1] in (" ", "\t"):
            space_ids.add(token_id)
    # All 65,535 code tokens (upstream blocks only 0..63999): the parser cuts the CoT at the first code.
    lo, hi = table.audio_code_base, table.audio_code_base + NUM_AUDIO_CODE_TOKENS
    added_ids = tuple(tokenizer.added_tokens_decoder.keys())  # chat tags, <think>, tool tags, ...
    caption_block = (*table.backtick_ids, *table.special_ids, *added_ids)
    caption_block += (table.pad_id,) if table.pad_id is not None else ()
    caption_block_ids = tuple(sorted(set(caption_block) | set(range(lo, hi))))  # added tokens include the codes
    return CotVocabulary(
        table=table,
        name_tokens={n: tuple(tokenizer.encode(f"{n}:", add_special_tokens=False)) for n in FIELD_ORDER},
        trees=trees,
        caption_block_ids=caption_block_ids,
        newline_token_ids=frozenset(newline_ids),
        leading_space_ids=frozenset(space_ids),
        caption_block_tensor=torch.tensor(caption_block_ids, dtype=torch.long),
        encode_value=lambda name, value: _value_tokens(tokenizer, name, value),
        max_caption_tokens=max_caption_tokens,
        code_block_range=(lo, hi),
    )


@dataclass(frozen=True)
class TokenRule:
    """What a row may sample next: only ``allowed`` ids, the caption block-list removed, a blocked id
    range removed, or anything."""

    allowed: tuple[int, ...] | None = None
    caption_mask: bool = False  # block ``CotVocabulary.caption_block_ids`` (kept as one cached tensor)
    blocked_range: tuple[int, int] | None = None  # half-open id range to block (audio codes in lyrics)


class CotStateMachine:
    """Phase-1 machine of one row. ``rule(logits)`` before sampling, ``advance(token)`` after."""

    def __init__(
        self,
        vocab: CotVocabulary,
        user_values: dict[str, str],
        skip_caption: bool,
        skip_language: bool,
        debug: bool = False,
        row: int = 0,
        describe: bool = False,
    ):
        """``describe``: a text mode; write ``</think>`` and free text after the fields instead of stopping."""
        self.vocab = vocab
        injectable = DESCRIBE_INJECTABLE_FIELDS if describe else INJECTABLE_FIELDS
        self.user_values = {k: v for k, v in user_values.items() if k in injectable}
        self.describe = describe
        self.in_free_text = False
        self.fields = [
            f for f in FIELD_ORDER if not (f == "caption" and skip_caption) and not (f == "language" and skip_language)
        ]
        self.debug = debug
        self.row = row
        self.forced: deque[int] = deque([vocab.table.think_start_id, vocab.table.newline_id])
        self.field_index = -1
        self.value_tokens: list[int] = []
        self.caption_tokens = 0
        self.caption_line_ended = False
        self.finished = False
        self._enter_next_field()

    # -- transitions -------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.debug:
            logger.info("constrained decoding row %d: %s", self.row, message)

    @property
    def field(self) -> str | None:
        return self.fields[self.field_index] if 0 <= self.field_index < len(self.fields) else None

    def _enter_next_field(self) -> None:
        self.field_index += 1
        self.value_tokens = []
        self.caption_tokens = 0
        self.caption_line_ended = False
        name = self.field
        if name is None:
            if self.describe:
                self._log("all fields written -> </think>, then free text (codes blocked)")
                self.forced.append(self.vocab.table.think_end_id)
                return
            self._log("all fields written -> EOS forced (stop before </think>)")
            self.forced.append(self.vocab.table.eos_id)
            return
        self._log(f"-> {name}_NAME")
        self.forced.extend(self.vocab.name_tokens[name])
        if name in self.user_values:
            self._log(f"{name}: injecting user value {self.user_values[name]!r}")
            # Verbatim: the user's text is tokenized as written (e.g. ``C Major``), not validated here.
            self.forced.extend(self.vocab.encode_value(name, self.user_values[name]))
            self.forced.append(self.vocab.table.newline_id)

    def rule(self, logits: torch.Tensor | None = None) -> TokenRule:
        """Allowed tokens for the next step; ``logits`` (1-D, CFG-combined) is needed for the argmax picks."""
        if self.finished:
            return TokenRule(allowed=(self.vocab.table.eos_id,))
        if self.forced:
            return TokenRule(allowed=(self.forced[0],))
        if self.in_free_text:
            return TokenRule(blocked_range=self.vocab.code_block_range)
        name = self.field
        if name == "caption":
            if self.caption_line_ended:
                # As upstream: the raw argmax decides (even when it is a token the caption may not contain).
                top = int(torch.argmax(logits))
                if top in self.vocab.leading_space_ids:
                    self._log("caption continues on an indented line")
                    self.caption_line_ended = False
                else:
                    self._log("caption ended")
                    self._enter_next_field()
                    return TokenRule(allowed=(self.forced[0],))
            if self.caption_tokens >= self.vocab.max_caption_tokens:
                return TokenRule(allowed=(self.vocab.table.newline_id,))
            return TokenRule(caption_mask=True)
        tree = self.vocab.trees[name]
        prefix = tuple(self.value_tokens)
        candidates = set(tree.next_tokens.get(prefix, set()))
        if prefix in tree.complete:
            if name in NEWLINE_FORCED_WHEN_COMPLETE or not candidates:
                return TokenRule(allowed=(self.vocab.table.newline_id,))
            candidates.add(self.vocab.table.newline_id)
        if not candidates:
            return TokenRule(allowed=(self.vocab.table.newline_id,))
        if name == "language" and not prefix and logits is not None:
            # Upstream picks the language's first token greedily, not by sampling; iterating the tree's
            # own set (filled in upstream's order) makes exact ties go the same way as upstream's.
            ids = list(tree.next_tokens[prefix])
            return TokenRule(allowed=(ids[int(torch.argmax(logits[ids]))],))
        return TokenRule(allowed=tuple(sorted(candidates)))

    def advance(self, token_id: int) -> None:
        if self.finished:
            return
        if self.forced:
            expected = self.forced.popleft()
            if token_id != expected:
                raise RuntimeError(f"constrained decoding: forced token {expected} but got {token_id}")
            if token_id == self.vocab.table.eos_id and self.field is None:
                self.finished = True
                self._log("finished")
            elif token_id == self.vocab.table.think_end_id and self.field is None:
                self.in_free_text = True
            elif token_id == self.vocab.table.newline_id and not self.forced and self.field in self.user_values:
                self._enter_next_field()
            return
        if self.in_free_text:
            if token_id == self.vocab.table.eos_id:
                self.finished = True
                self._log("finished")
            return
        name = self.field
        if name == "caption":
            self.caption_tokens += 1
            if token_id in self.vocab.newline_token_ids:
                self.caption_line_ended = True
            return
        if token_id == self.vocab.table.newline_id:
            self._log(f"{name} value complete")
            self._enter_next_field()
        else:
            self.value_tokens.append(token_id)


def target_code_count(duration: float | None) -> int | None:
    """Exactly ``int(5 * duration)`` codes when the song's duration is known (> 0), else no count control."""
    return int(duration * 5) if duration and duration > 0 else None
