"""Shapes of the released ACE-Step 1.5 checkpoints (their config.json values), for the benchmarks.

One place for them: bench/dit.py and bench/lm.py build random models of these sizes in memory,
bench/full_size_checkpoints.py writes them to disk in the released layout.
"""

from __future__ import annotations

# Released vae/config.json (the checkpoint's own file; dit_service/model/vae.py loads it with diffusers).
RELEASED_VAE: dict = {
    "encoder_hidden_size": 128,
    "downsampling_ratios": [2, 4, 4, 6, 10],
    "channel_multiples": [1, 2, 4, 8, 16],
    "decoder_channels": 128,
    "decoder_input_channels": 64,
    "audio_channels": 2,
    "sampling_rate": 48000,
}
# The Qwen3-0.6B body both the text encoder and the 5 Hz LM are built on.
QWEN3_06B_BODY: dict = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "initializer_range": 0.02,
}
# Qwen3-Embedding-0.6B (model-dit.md §3.1): 595.8 M params, 1,191,586,416 bytes in bf16 like the release.
RELEASED_TEXT_ENCODER: dict = {
    **QWEN3_06B_BODY,
    "vocab_size": 151_669,
    "max_position_embeddings": 32768,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
# acestep-5Hz-lm-0.6B: Qwen3-0.6B body with the 217,204-token ACE-Step vocabulary (as bench/lm.py).
# initializer_range 0.02 (the tiny LM's 0.5 would overflow bf16 through 28 layers); the benchmark sets
# every metadata field, so the random model never has to end a free-text CoT by itself.
RELEASED_LM: dict = {**QWEN3_06B_BODY, "vocab_size": 217_204, "max_position_embeddings": 40960}
# The three released 5 Hz LM sizes (acestep-5Hz-lm-<size>/config.json): fine-tunes of Qwen3-0.6B / -1.7B / -4B
# with their published body shapes (model-lm.md §1), the ACE-Step vocabulary and tied embeddings. 1.7B ships in
# upstream's main bundle (ACE-Step/Ace-Step1.5) and is its DEFAULT_LM_MODEL. Evidence: tests/lm/test_lm_sizes.py.
_LM_COMMON: dict = {**RELEASED_LM, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
RELEASED_LM_SIZES: dict[str, dict] = {
    "0.6B": _LM_COMMON,
    "1.7B": {**_LM_COMMON, "hidden_size": 2048, "intermediate_size": 6144},
    "4B": {**_LM_COMMON, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
           "num_attention_heads": 32},
}  # fmt: skip
