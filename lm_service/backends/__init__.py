"""Decode backends: ``torch`` (our own loop over transformers' Qwen3 weights) and ``vllm`` (optional)."""
