"""Write a tiny, randomly initialised 5 Hz LM checkpoint in the released directory layout.

Tests and the offline demo load it through ``Planner.load`` exactly like the real weights. Its outputs
are noise: the weights are random. The tokenizer is a small byte-level BPE trained here, with Qwen3's
26 added tokens and the 65,535 ``<|audio_code_N|>`` tokens appended after them, as the release does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from .vocab import KEYSCALES, LANGUAGES, NUM_AUDIO_CODE_TOKENS, audio_code_token

# Qwen3's added tokens in id order (151643..151668 in the release).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True),
    ("<|vision_end|>", True), ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
)  # fmt: skip

# Qwen2/3 pre-tokenizer regex: digits one per token, newlines split off, words with a leading space.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Stock Qwen3 chat template, reduced to the parts ACE-Step uses (system/user/assistant with <think>).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and '</think>' in message.content %}"
    "{%- set reasoning = message.content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set rest = message.content.split('</think>')[-1].lstrip('\\n') %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + rest + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _training_corpus() -> list[str]:
    """Text the tiny BPE should segment sensibly: prompts, CoT lines, all metadata values."""
    lines = [
        "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n",
        "# Caption\nA calm piano ballad with soft strings and warm vocals\n\n# Lyric\n[Verse]\nhello world\n",
        "[Instrumental] [Chorus] upbeat energetic pop rock song with drums bass guitar synth",
        "bpm: 120\ncaption: dreamy lo-fi hip hop beat\nduration: 180\nkeyscale: C major\n",
        "language: en\ntimesignature: 4\n",
    ]
    lines += [f"keyscale: {k}\n" for k in KEYSCALES]
    lines += [f"language: {lang}\n" for lang in LANGUAGES]
    lines += [f"bpm: {b}\nduration: {b}\ntimesignature: {b % 7}\n" for b in range(0, 610, 7)]
    return lines * 3


def build_tiny_tokenizer(vocab_size: int = 1200) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    for text, special in QWEN3_ADDED_TOKENS:
        fast.add_tokens([text], special_tokens=special)
    fast.add_tokens([audio_code_token(n) for n in range(NUM_AUDIO_CODE_TOKENS)], special_tokens=True)
    fast.eos_token = "<|im_end|>"
    fast.pad_token = "<|endoftext|>"
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_tiny_lm_checkpoint(
    root: Path,
    seed: int = 0,
    name: str = "acestep-5Hz-lm-0.6B",
    config_overrides: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``root/<name>/`` (config.json, model.safetensors, tokenizer files); returns that directory.

    ``config_overrides`` reshape the model (e.g. to the released 0.6B size, bench/full_size_checkpoints.py)
    and ``dtype`` is the saved dtype (default fp32). The tokenizer is always the tiny one: its ids stay
    below any larger ``vocab_size``, so the released vocabulary size only adds unused rows.
    """
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(out)
    shape: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # A large init makes the random model's next-token distributions peaked, so CoT fields and
        # captions end in a realistic number of steps instead of running to the token limits.
        initializer_range=0.5,
    )
    config = Qwen3Config(**{**shape, **(config_overrides or {})})  # built whole: layer_types follow the depth
    config.architectures = ["Qwen3ForCausalLM"]
    if config.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {config.vocab_size} is below the tokenizer's {len(tokenizer)} tokens")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}, indent=2)
    )
    return out


if __name__ == "__main__":
    import sys

    print(write_tiny_lm_checkpoint(Path(sys.argv[1] if len(sys.argv) > 1 else "checkpoints")))
