"""vLLM backend: placeholder that fails clearly.

Not implemented in this build. vLLM has no classifier-free guidance, and the Phase-1 state machine
would need a version-pinned V1 custom logits processor (see design/model-lm.md §7.2). Until that
exists this backend refuses to load instead of silently dropping CFG or constraints.
"""

from __future__ import annotations

from pathlib import Path

import torch

from acestep_client.errors import FailedPrecondition


class VllmBackend:
    name = "vllm"

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cuda", dtype: torch.dtype = torch.bfloat16, **_: object):
        try:
            import vllm  # noqa: F401
        except ImportError as error:
            raise FailedPrecondition(
                "backend 'vllm' needs the optional 'vllm' package and a CUDA GPU; use backend='torch'"
            ) from error
        raise FailedPrecondition(
            "backend 'vllm' is not implemented yet (no CFG pairing / Phase-1 constraints on vLLM); use backend='torch'"
        )
