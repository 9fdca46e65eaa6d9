"""vLLM backend of the LM planner (optional extra ``vllm``, CUDA only).

Pinned to vLLM 0.20.x (``vllm>=0.20.2,<0.21``): the API below was read in the vLLM 0.20.2 sources
(commit bc150f502): ``vllm/v1/sample/logits_processor/{interface,state,__init__,builtin}.py`` (V1
processor API, BatchUpdate order removed -> added -> moved, MoveDirectionality);
``vllm/v1/worker/gpu_input_batch.py`` (rows added into freed slots, condensed by one-way moves,
swapped; async-scheduling placeholders in the output lists repaired before the sampler);
``vllm/v1/worker/gpu_model_runner.py`` (custom processors from ``model_config.logits_processors``,
output ids kept for them); ``vllm/v1/sample/sampler.py`` (fp32 -> allowed_token_ids -> non-argmax-
invariant processors -> penalties -> temperature -> top-k/top-p -> draw with the request's seeded
generator); ``vllm/sampling_params.py`` (top_k 0 / top_p 1.0 = off, seed, extra_args,
allowed_token_ids, stop_token_ids, detokenize, output_kind); ``vllm/v1/engine/{llm_engine,
core_client,input_processor,output_processor}.py``, ``vllm/v1/executor/uniproc_executor.py`` and
``vllm/v1/core/sched/utils.py`` (add_request/step/abort_request, params cloned per request, DELTA
outputs, stop token kept in the output); ``vllm/envs.py`` (VLLM_USE_V2_MODEL_RUNNER default 0:
Model Runner V2, default in later releases, has another processor interface).

Why it looks like this:
* No classifier-free guidance: vLLM has none, so ``lm_cfg_scale`` must be 1.0 (checked per request,
  never dropped silently). Emulating CFG with paired cond/uncond requests (design/model-lm.md §7.2)
  needs both rows in lock-step every step (no chunked-prefill or preemption desync), identical
  per-request generators and sampler internals of one vLLM version; a desync would silently change
  the music, so it is not done. Use the torch backend for CFG.
* The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, one GPU -> in-process
  executor), so the logits processor, called inside ``engine.step()``, reaches the planner's
  ``CotStateMachine`` objects through ``vllm_processor.REGISTRY`` (requests carry only a key).
* Same order of operations as the torch backend (mask -> top-k -> top-p -> temperature); the random
  stream is vLLM's per-request generator, so a seed gives the same distribution, not the same tokens,
  as on the torch backend, and vLLM's batched kernels are not batch-invariant, so an item's tokens
  may change with what else shares the batch (the torch backend guarantees they do not).
* One engine shared by concurrent plans: a lock serialises add/step/abort and each step's outputs go
  to the plan that owns them, so concurrent requests batch together.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from acestep_client.errors import Cancelled, FailedPrecondition, InvalidArgument

from ..constraints import CotStateMachine
from ..decoding import PROGRESS_EVERY, SamplingParams, codes_from_tokens
from ..vocab import TokenTable, build_token_table
from .vllm_processor import EXTRA_ARGS_KEY, REGISTRY, ConstraintCore, RequestState

if TYPE_CHECKING:
    from ..planner import PlanRequest

SUPPORTED_VLLM = ((0, 20), (0, 21))  # [low, high) on (major, minor); keep in step with pyproject's extra
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_GPU_MEMORY_UTILIZATION = 0.5


def stop_token_ids(table: TokenTable) -> list[int]:
    """EOS and pad end a row, as in the torch loops."""
    return [table.eos_id] + ([table.pad_id] if table.pad_id is not None and table.pad_id != table.eos_id else [])


def phase1_sampling_kwargs(table: TokenTable, params: SamplingParams, seed: int, max_tokens: int, key: str) -> dict:
    """vLLM ``SamplingParams`` fields of one Phase-1 row (top-k/top-p run in our processor instead)."""
    return {
        "temperature": params.temperature,
        "top_k": 0,
        "top_p": 1.0,
        "seed": int(seed),
        "max_tokens": max_tokens,
        "stop_token_ids": stop_token_ids(table),
        "detokenize": False,
        "skip_special_tokens": False,
        "extra_args": {EXTRA_ARGS_KEY: key},
    }


def phase2_sampling_kwargs(
    table: TokenTable,
    params: SamplingParams,
    seed: int,
    target_codes: int | None,
    constrained: bool,
    max_new_tokens: int,
    key: str,
) -> dict:
    """Constrained: only code tokens (+ EOS when the length is open); exactly ``target_codes`` of them."""
    kwargs = phase1_sampling_kwargs(table, params, seed, max_new_tokens, key)
    if constrained:
        lo, hi = table.code_id_range()
        kwargs["allowed_token_ids"] = list(range(lo, hi)) + ([table.eos_id] if target_codes is None else [])
        if target_codes is not None:
            kwargs["max_tokens"] = target_codes
            kwargs["stop_token_ids"] = []  # EOS is not allowed: the length is exact
    return kwargs


def _refuse_cfg(cfg_scale: float) -> None:
    if cfg_scale != 1.0:
        raise InvalidArgument(
            "lm_cfg_scale",
            f"allowed only 1.0 on the vllm backend (vLLM has no classifier-free guidance), got {cfg_scale}; "
            "use the torch backend for CFG",
        )


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise FailedPrecondition(
            "backend 'vllm' needs the optional 'vllm' package (pip install 'acestep-grpc[vllm]') and a CUDA GPU; "
            "use backend='torch'"
        ) from error
    version = tuple(getattr(vllm, "__version_tuple__", (0, 0))[:2])
    low, high = SUPPORTED_VLLM
    if not low <= version < high:
        raise FailedPrecondition(
            f"backend 'vllm' supports vLLM {low[0]}.{low[1]}.x (its V1 logits-processor API), found "
            f"{vllm.__version__}; install the pinned extra or use backend='torch'"
        )
    return vllm


@dataclass
class _Pending:
    tokens: list[int] = field(default_factory=list)
    finished: bool = False


class _EngineDriver:
    """Serialises engine calls across threads and routes each step's outputs to their requests."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}

    def add(self, request_id: str, prompt: list[int], params: Any) -> None:
        with self._lock:
            self._pending[request_id] = _Pending()
            try:
                self.engine.add_request(request_id, {"prompt_token_ids": list(prompt)}, params)
            except BaseException:
                del self._pending[request_id]
                raise

    def finished(self, request_ids: list[str]) -> bool:
        with self._lock:
            return all(self._pending[r].finished for r in request_ids)

    def tokens(self, request_id: str) -> list[int]:
        with self._lock:
            return list(self._pending[request_id].tokens)

    def longest(self, request_ids: list[str]) -> int:
        with self._lock:
            return max(len(self._pending[r].tokens) for r in request_ids)

    def step(self, request_ids: list[str]) -> None:
        """One engine step (it advances every running request), unless ``request_ids`` are all done."""
        with self._lock:
            if all(self._pending[r].finished for r in request_ids):
                return
            if not self.engine.has_unfinished_requests():
                raise RuntimeError("vLLM engine has no unfinished requests but ours did not finish")
            for output in self.engine.step():
                pending = self._pending.get(output.request_id)
                if pending is None or not output.outputs:
                    continue
                pending.tokens.extend(output.outputs[0].token_ids)
                pending.finished = pending.finished or output.finished

    def release(self, request_ids: list[str]) -> None:
        """Forget the requests; abort (and so free the KV blocks of) those still running."""
        with self._lock:
            running = [r for r in request_ids if r in self._pending and not self._pending[r].finished]
            if running:
                self.engine.abort_request(running)
            for request_id in request_ids:
                self._pending.pop(request_id, None)


class VllmBackend:
    """Planner backend that runs its own engine loop (``run_phase1`` / ``run_phase2``) on vLLM."""

    name = "vllm"

    def __init__(
        self,
        driver: _EngineDriver | None,
        table: TokenTable,
        device: torch.device,
        vocab_size: int,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        vllm_module: Any = None,
    ):
        """``driver=None`` gives a backend that can only check requests (tests, no GPU)."""
        self.driver = driver
        self.table = table
        self.device = device
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self._vllm = vllm_module

    @classmethod
    def load(
        cls, model_dir: str | Path, device: str = "cuda", dtype: torch.dtype = torch.bfloat16, **options: Any
    ) -> VllmBackend:
        """Build the engine once; ``options``: gpu_memory_utilization (0.5), max_model_len (4096), and
        any further ``vllm.EngineArgs`` field (e.g. max_num_seqs, async_scheduling)."""
        vllm = _import_vllm()
        target = torch.device(device)
        if target.type != "cuda" or not torch.cuda.is_available():
            raise FailedPrecondition(f"backend 'vllm' needs a CUDA GPU (device={device!r}); use backend='torch'")
        if target.index not in (None, 0):
            raise FailedPrecondition("backend 'vllm' uses the first visible GPU; choose it with CUDA_VISIBLE_DEVICES")
        if dtype not in DTYPE_NAMES:
            raise FailedPrecondition(f"backend 'vllm' supports dtypes {sorted(DTYPE_NAMES.values())}, got {dtype}")
        # Our processor must run in this process (it reads the planner's state machines) on the V1 runner.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        from .vllm_adapter import AceStepLogitsProcessor

        max_model_len = int(options.pop("max_model_len", DEFAULT_MAX_MODEL_LEN))
        args = vllm.EngineArgs(
            model=str(model_dir),
            dtype=DTYPE_NAMES[dtype],
            max_model_len=max_model_len,
            gpu_memory_utilization=float(options.pop("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION)),
            enforce_eager=bool(options.pop("enforce_eager", False)),
            logits_processors=[AceStepLogitsProcessor],
            skip_tokenizer_init=True,  # we pass token ids and read token ids; stop ids are explicit
            generation_config="vllm",  # only our SamplingParams count, not the checkpoint's defaults
            **options,
        )
        cores_before = ConstraintCore.created
        engine = vllm.LLMEngine.from_engine_args(args)
        if ConstraintCore.created == cores_before:
            raise FailedPrecondition("vLLM built the logits processor in another process; constraints cannot work")
        vocab_size = int(engine.model_config.get_vocab_size())
        from transformers import AutoTokenizer

        table = build_token_table(AutoTokenizer.from_pretrained(str(model_dir)), vocab_size)
        return cls(_EngineDriver(engine), table, torch.device("cuda", 0), vocab_size, max_model_len, vllm)

    @staticmethod
    def check_request(req: PlanRequest) -> None:
        """Called by ``Planner.validate``: CFG is refused up front, never dropped."""
        _refuse_cfg(req.lm_cfg_scale)

    # -- engine loop ----------------------------------------------------------------------------
    def _check_fits(self, rows: list[list[int]], exact_tokens: int | None) -> None:
        for prompt in rows:
            need = len(prompt) + (exact_tokens or 1)
            if need > self.max_model_len:
                raise FailedPrecondition(
                    f"prompt of {len(prompt)} tokens + {exact_tokens or 1} to generate exceeds the vllm backend's "
                    f"max_model_len {self.max_model_len}; load it with a larger max_model_len"
                )

    def _run(
        self, rows: list[list[int]], kwargs_list: list[dict], should_stop: Callable[[], bool]
    ) -> Iterator[tuple[str, object]]:
        """Submit one request per row and step the engine until all end; returns their token ids."""
        from vllm.sampling_params import RequestOutputKind

        delta = RequestOutputKind.DELTA  # each output carries only the new tokens
        sampling_params = [self._vllm.SamplingParams(**kwargs, output_kind=delta) for kwargs in kwargs_list]
        batch = uuid.uuid4().hex
        ids = [f"acestep-{batch}-{i}" for i in range(len(rows))]
        try:
            for request_id, prompt, params in zip(ids, rows, sampling_params, strict=True):
                self.driver.add(request_id, prompt, params)
            next_report = 1
            while not self.driver.finished(ids):
                if should_stop():
                    raise Cancelled("LM planning cancelled")
                self.driver.step(ids)
                produced = self.driver.longest(ids)
                if produced >= next_report:
                    yield "progress", produced
                    next_report = produced + PROGRESS_EVERY
            return [self.driver.tokens(r) for r in ids]
        finally:
            self.driver.release(ids)  # aborts what still runs: cancel, error, or a closed generator

    def _generate(
        self,
        rows: list[list[int]],
        states: list[RequestState],
        make_kwargs: Callable[[int, str], dict],
        should_stop: Callable[[], bool],
    ) -> Iterator[tuple[str, object]]:
        """Register the rows' states for the processor, run them, release; returns token ids per row."""
        keys = [REGISTRY.register(state) for state in states]
        try:
            kwargs_list = [make_kwargs(i, key) for i, key in enumerate(keys)]
            outputs = yield from self._run(rows, kwargs_list, should_stop)
        finally:
            for key in keys:
                REGISTRY.release(key)
        errors = [f"item {i}: {s.error}" for i, s in enumerate(states) if s.error is not None]
        if errors:
            raise RuntimeError("constrained decoding failed on vLLM: " + "; ".join(errors))
        return outputs

    def run_phase1(
        self,
        rows: list[list[int]],
        machines: list[CotStateMachine] | None,
        seeds: list[int],
        params: SamplingParams,
        max_new_tokens: int,
        should_stop: Callable[[], bool],
    ) -> Iterator[tuple[str, object]]:
        """CoT of each item under its state machine (``machines=None``: stop at EOS/pad only)."""
        _refuse_cfg(params.cfg_scale)
        if len(rows) != len(seeds) or (machines is not None and len(machines) != len(seeds)):
            raise ValueError("vllm backend: one prompt row (and machine) per seed, no CFG rows")
        self._check_fits(rows, None)
        states = [
            RequestState(machine=machines[i] if machines is not None else None, top_k=params.top_k, top_p=params.top_p)
            for i in range(len(seeds))
        ]

        def make_kwargs(i: int, key: str) -> dict:
            return phase1_sampling_kwargs(self.table, params, seeds[i], max_new_tokens, key)

        outputs = yield from self._generate(rows, states, make_kwargs, should_stop)
        yield "done", outputs

    def run_phase2(
        self,
        rows: list[list[int]],
        seeds: list[int],
        params: SamplingParams,
        target_codes: list[int | None],
        constrained: bool,
        max_new_tokens: list[int],
        should_stop: Callable[[], bool],
    ) -> Iterator[tuple[str, object]]:
        """Audio codes of each item (EOS excluded); exactly its ``target_codes`` when constrained and given."""
        _refuse_cfg(params.cfg_scale)
        if len(rows) != len(seeds):
            raise ValueError("vllm backend: one prompt row per seed, no CFG rows")
        for row, target in zip(rows, target_codes, strict=True):
            self._check_fits([row], target if constrained else None)
        states = [RequestState(top_k=params.top_k, top_p=params.top_p) for _ in seeds]

        def make_kwargs(i: int, key: str) -> dict:
            return phase2_sampling_kwargs(
                self.table, params, seeds[i], target_codes[i], constrained, max_new_tokens[i], key
            )

        outputs = yield from self._generate(rows, states, make_kwargs, should_stop)
        yield "done", [codes_from_tokens(tokens, self.table) for tokens in outputs]
