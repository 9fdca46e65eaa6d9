"""A real MusicGenerationService test double on 127.0.0.1:0 that streams scripted, valid events.

The script: 2 items whose audio arrives split and out of order, interleaved between items, with
per-item gains, LM metadata, progress (one step backwards, which the client must not show), time
costs in two events, and done. The request's caption picks a variant:
``abort`` (INVALID_ARGUMENT after some chunks), ``no-done`` (stream ends early), ``silent``
(item 1 is silent), ``refuse`` (INVALID_ARGUMENT on inference_steps right after queued, before any
model work, as a turbo deployment refuses too many steps).
"""

from __future__ import annotations

import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from acestep_client.audio_io import pcm_bytes
from acestep_client.convert import params_from_proto, params_to_proto
from acestep_client.keys import audio_key
from acestep_client.proto.acestep.v1 import generation_pb2 as gen
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch
from acestep_client.proto.acestep.v1 import orchestrator_pb2_grpc as orch_grpc

RATE = 48_000
FRAMES = (24_000, 19_200)  # 0.5 s and 0.4 s
GAINS = (0.5, 2.0)
SEEDS = (42, 7)
CODES = ("<|audio_code_1|><|audio_code_2|>", "<|audio_code_3|>")
ABORT_DETAILS = "bpm: must be between 30 and 300, got 12"
REFUSE_DETAILS = "inference_steps: must be between 1 and 8 on acestep-v15-turbo, a turbo model, got 50"


def raw_audio(item: int) -> np.ndarray:
    """The un-gained audio of an item, [2, frames]; peak * gain stays under 1."""
    t = np.arange(FRAMES[item]) / RATE
    amp = 0.8 if item == 0 else 0.3
    freq = 440.0 * (item + 1)
    return np.stack([amp * np.sin(2 * np.pi * freq * t), -amp * np.sin(2 * np.pi * freq * t)]).astype(np.float32)


def expected_audio(item: int) -> np.ndarray:
    return raw_audio(item) * np.float32(GAINS[item])


def _chunk(item: int, start: int, stop: int) -> orch.GenerateMusicResponse:
    audio = raw_audio(item)[:, start:stop]
    return orch.GenerateMusicResponse(
        audio_chunk=gen.AudioChunk(
            item_index=item, start_frame=start, sample_rate_hz=RATE, channels=2, pcm_f32le=pcm_bytes(audio)
        )
    )


def _progress(stage: int, fraction: float, step: int = 0, total: int = 0, message: str = ""):
    return orch.GenerateMusicResponse(
        progress=gen.Progress(stage=stage, fraction=fraction, step=step, total_steps=total, message=message)
    )


def item_result(request: orch.GenerateMusicRequest, item: int, silent: bool = False) -> orch.ItemResult:
    params = gen.GenerationParams()
    params.CopyFrom(request.params)
    params.seed = SEEDS[item]
    params.audio_codes = CODES[item]
    key = audio_key(params_from_proto(params).to_dict())
    return orch.ItemResult(
        item_index=item, seed=SEEDS[item], key=key, params=params, num_frames=FRAMES[item],
        sample_rate_hz=RATE, silent=silent, gain=GAINS[item],
    )


def script(request: orch.GenerateMusicRequest) -> list[orch.GenerateMusicResponse]:
    """The full, valid event sequence for ``request``."""
    silent = request.params.caption == "silent"
    return [
        _progress(gen.STAGE_QUEUED, 0.0, message="queued"),
        _progress(gen.STAGE_LM_PHASE1, 0.1),
        orch.GenerateMusicResponse(
            lm_metadata=gen.LmMetadata(bpm=120, caption="refined", duration=30.0, keyscale="C major",
                                       language="en", timesignature="4", cot_text="<think>...</think>")
        ),
        _progress(gen.STAGE_DIFFUSION, 0.4, 1, 2),
        _progress(gen.STAGE_DIFFUSION, 0.35, 2, 2),  # a step backwards: the client must not show it
        _progress(gen.STAGE_DECODE, 0.7, 1, 2),
        _chunk(0, 10_000, FRAMES[0]),
        _chunk(1, 12_000, FRAMES[1]),
        _chunk(0, 0, 10_000),
        _chunk(1, 0, 5_000),
        _chunk(1, 5_000, 12_000),
        orch.GenerateMusicResponse(item_result=item_result(request, 1, silent=silent)),
        orch.GenerateMusicResponse(item_result=item_result(request, 0)),
        orch.GenerateMusicResponse(time_costs=gen.TimeCosts(seconds={"lm_phase1_time": 0.5, "lm_total_time": 1.0})),
        _progress(gen.STAGE_DONE, 0.95),
        orch.GenerateMusicResponse(
            time_costs=gen.TimeCosts(seconds={"dit_total_time_cost": 2.0, "pipeline_total_time": 3.5})
        ),
        orch.GenerateMusicResponse(done=gen_done()),
    ]


def gen_done() -> orch.GenerationDone:
    return orch.GenerationDone(status_message="Generation completed successfully!", num_items=2)


@dataclass
class Call:
    request: orch.GenerateMusicRequest
    metadata: dict[str, str]


@dataclass
class FakeMusicService(orch_grpc.MusicGenerationServiceServicer):
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def GenerateMusic(self, request, context):
        with self.lock:
            self.calls.append(Call(request, dict(context.invocation_metadata())))
        events = script(request)
        caption = request.params.caption
        if caption == "abort":
            yield from events[:8]
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, ABORT_DETAILS)
        elif caption == "refuse":
            yield from events[:1]
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, REFUSE_DETAILS)
        elif caption == "no-done":
            yield from events[:-1]
        else:
            yield from events


@dataclass
class Server:
    address: str
    service: FakeMusicService


@pytest.fixture
def server():
    service = FakeMusicService()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    orch_grpc.add_MusicGenerationServiceServicer_to_server(service, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield Server(f"127.0.0.1:{port}", service)
    grpc_server.stop(grace=None)


def scripted_request(caption: str = "ambient piano", audio_format: int = gen.AUDIO_FORMAT_FLAC):
    """A request as the SDK would build it, for driving ``script`` without a network."""
    from acestep_client.types import GenerationParams

    request = orch.GenerateMusicRequest(params=params_to_proto(GenerationParams(caption=caption, bpm=90)))
    request.config.audio_format = audio_format
    return request


@pytest.fixture
def kit():
    """This module, so tests reach its helpers (importlib import mode has no sibling imports)."""
    return sys.modules[__name__]
