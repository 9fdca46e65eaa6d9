"""The model math of the engine: chunked prefill of one row, one decode step of every active row,
and the two output heads. Shares the fused layers of :mod:`lm_service.backends.torch_backend`.

Each row has its own RoPE positions and its own length, so no row is ever padded for another:
a decode step writes each row's K/V at that row's position and masks the keys past its length.
On CUDA the decode step is captured as a CUDA graph per (batch bucket, KV-length bucket) and replayed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backends.torch_backend import TorchQwen3Backend, _rope_tables
from .kv_pool import KVPool
from .sequence import Row

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)
KV_BUCKET = 256


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class ModelRunner:
    def __init__(self, backend: TorchQwen3Backend, pool: KVPool, code_ids: torch.Tensor):
        """``code_ids``: vocabulary ids of the code head's rows (the usable codes, then EOS)."""
        self.backend = backend
        self.pool = pool
        self.device = backend.device
        self.full_head = backend.head_weight
        # Phase-2 rows only need these logits: 64,001 of 217,204 rows of the LM head on the released model.
        self.code_head = self.full_head.index_select(0, code_ids.to(self.full_head.device)).contiguous()
        self._graphs: dict[tuple[int, int], _DecodeGraph] = {}
        self._graph_pool = None

    # -- forward ---------------------------------------------------------------------------------
    def _layers(self, hidden, positions, write_kv, attend_kv, additive) -> torch.Tensor:
        backend = self.backend
        inner = backend.model.model
        cos, sin = inner.rotary_emb(hidden, positions)
        cos, sin_signed = _rope_tables(cos, sin)
        for index, weights in enumerate(backend.layers):
            q, k, v = backend._qkv_fn(hidden, weights, cos, sin_signed, backend.eps)
            write_kv(index, k, v)
            k_cache, v_cache = attend_kv(index)
            hidden = backend._attn_mlp_fn(
                hidden, q, k_cache, v_cache, additive, weights, backend.eps, backend.sdpa_decode
            )
        return F.rms_norm(hidden[:, -1], (hidden.shape[-1],), inner.norm.weight, backend.eps)

    @torch.inference_mode()
    def prefill(self, slot: int, tokens: list[int], start: int) -> torch.Tensor:
        """Write ``tokens`` at positions ``start..`` of ``slot``; returns the last position's hidden ``[H]``."""
        pool, device = self.pool, self.device
        count = len(tokens)
        end = start + count
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        positions = torch.arange(start, end, device=device)[None]
        keys = torch.arange(end, device=device)
        allowed = keys[None, :] <= positions[0, :, None]  # [T, end]: causal over the cache
        additive = torch.zeros(allowed.shape, dtype=pool.k.dtype, device=device).masked_fill_(~allowed, float("-inf"))

        def write(index, k, v):
            pool.k[index, slot, :, start:end] = k[0]
            pool.v[index, slot, :, start:end] = v[0]

        def attend(index):
            return pool.k[index, slot : slot + 1, :, :end], pool.v[index, slot : slot + 1, :, :end]

        hidden = self.backend.model.model.embed_tokens(ids)
        return self._layers(hidden, positions, write, attend, additive[None, None])[0]

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One token for each of the ``active`` rows (slot order); returns their hidden states ``[N, H]``."""
        rows = tokens.shape[0]
        kv_len = int(positions.max()) + 1
        if self.backend.use_cuda_graphs:
            return self._graph(rows, kv_len).run(tokens, positions)
        return self._decode_eager(tokens, positions, torch.arange(rows, device=self.device), kv_len)

    def _decode_eager(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor, kv_len: int):
        """``slots[i]`` receives row i's K/V (its own slot, or the scratch slot for padding rows);
        attention reads the contiguous slots ``[0, rows)``."""
        pool = self.pool
        rows = tokens.shape[0]
        keys = torch.arange(kv_len, device=self.device)
        additive = torch.zeros(rows, kv_len, dtype=pool.k.dtype, device=self.device)
        additive.masked_fill_(keys[None, :] > positions[:, None], float("-inf"))

        def write(index, k, v):
            pool.k[index][slots, :, positions] = k[:, :, 0]
            pool.v[index][slots, :, positions] = v[:, :, 0]

        def attend(index):
            return pool.k[index, :rows, :, :kv_len], pool.v[index, :rows, :, :kv_len]

        hidden = self.backend.model.model.embed_tokens(tokens[:, None])
        return self._layers(hidden, positions[:, None], write, attend, additive)

    def _graph(self, rows: int, kv_len: int) -> _DecodeGraph:
        bucket = next((b for b in BATCH_BUCKETS if b >= rows and b <= self.pool.num_slots), self.pool.num_slots)
        kv_bucket = min(_round_up(kv_len, KV_BUCKET), self.pool.capacity)
        key = (bucket, kv_bucket)
        if key not in self._graphs:
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            self._graphs[key] = _DecodeGraph(self, bucket, kv_bucket, self._graph_pool)
        return self._graphs[key]

    # -- heads -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, codes_only: bool) -> torch.Tensor:
        return hidden @ (self.code_head if codes_only else self.full_head).T


class _DecodeGraph:
    """A decode step captured for ``bucket`` rows over ``kv_len`` keys. Rows past the active ones
    write to the pool's scratch slot (never a live row's) and are dropped from the output."""

    def __init__(self, runner: ModelRunner, bucket: int, kv_len: int, pool_handle):
        self.runner = runner
        device = runner.device
        self.scratch = runner.pool.scratch_slot
        self.tokens = torch.zeros(bucket, dtype=torch.long, device=device)
        self.positions = torch.zeros(bucket, dtype=torch.long, device=device)
        self.slots = torch.full((bucket,), self.scratch, dtype=torch.long, device=device)
        self.arange = torch.arange(bucket, device=device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():  # warm-up: writes only the scratch slot
            runner._decode_eager(self.tokens, self.positions, self.slots, kv_len)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool_handle), torch.inference_mode():
            self.out = runner._decode_eager(self.tokens, self.positions, self.slots, kv_len)

    def run(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        rows = tokens.shape[0]
        self.tokens.zero_()
        self.positions.zero_()
        self.slots.fill_(self.scratch)
        self.tokens[:rows].copy_(tokens)
        self.positions[:rows].copy_(positions)
        self.slots[:rows].copy_(self.arange[:rows])
        self.graph.replay()
        return self.out[:rows]


class LockstepBatch:
    """Rows prefilled, then decoded one token per step together: the engine's math without its
    scheduler, for numerics checks (tests) and step profiling (``bench/lm.py``)."""

    def __init__(self, backend: TorchQwen3Backend, prompts: list[list[int]], max_new_tokens: int,
                 code_ids: torch.Tensor | None = None):  # fmt: skip
        capacity = max(len(p) for p in prompts) + max_new_tokens
        self.pool = KVPool(backend.num_layers, len(prompts), backend.num_kv_heads, capacity, backend.head_dim,
                           backend.dtype, backend.device)  # fmt: skip
        self.runner = ModelRunner(backend, self.pool, code_ids if code_ids is not None else torch.tensor([0]))
        self.rows = [Row(list(prompt)) for prompt in prompts]

    def prefill(self, codes_only: bool = False) -> torch.Tensor:
        """Logits after each row's prompt, ``[rows, width]``."""
        hidden = []
        for row in self.rows:
            self.pool.allocate(row)
            hidden.append(self.runner.prefill(row.slot, row.prompt, 0))
            row.length = len(row.prompt)
        for row in self.rows:
            self.pool.promote(row)
        return self.runner.logits(torch.stack(hidden), codes_only)

    def step(self, tokens: torch.Tensor, codes_only: bool = False) -> torch.Tensor:
        """Append ``tokens [rows]``; returns the next logits."""
        positions = torch.tensor([row.length for row in self.rows], device=self.runner.device)
        hidden = self.runner.decode(tokens.to(self.runner.device), positions)
        for row in self.rows:
            row.length += 1
        return self.runner.logits(hidden, codes_only)
