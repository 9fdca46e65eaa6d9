"""Stop points: a long forward (a DiT pass over a long song, a VAE pass over a long upload) stops inside,
at its next layer, once whoever waits for it has gone, instead of running to its end."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from acestep_client.errors import Cancelled
from dit_service.batcher import BatchOp, ForwardBatcher
from dit_service.engine import DiTEngine
from dit_service.stop_points import stop_point, stoppable

LAYERS = 200


class SlowForward:
    """A forward of LAYERS layers of 10 ms, with a stop point before each (as the DiT and VAE have)."""

    def __init__(self) -> None:
        self.layers_run = 0
        self.ended = threading.Event()

    def __call__(self, payloads: list) -> list:
        try:
            for _ in range(LAYERS):
                stop_point("test forward")
                self.layers_run += 1
                time.sleep(0.01)
            return payloads
        finally:
            self.ended.set()


def stop_after(checks: int):
    """A should_stop that turns true at its ``checks``-th call."""
    calls = [0]

    def should_stop() -> bool:
        calls[0] += 1
        return calls[0] >= checks

    return should_stop


@pytest.fixture(scope="module")
def engine(tiny_root) -> DiTEngine:
    return DiTEngine.load(tiny_root, "acestep-v15-turbo")


def test_a_vae_encode_stops_inside_at_a_stop_point(engine):
    wav = torch.rand(2, 48_000 * 20) - 0.5
    should_stop = stop_after(5)  # four stop points pass: the encode has started, then it stops
    with pytest.raises(Cancelled, match="inside the VAE"):
        engine.encode_audio(wav, should_stop)
    latents, codes = engine.encode_audio(wav)  # without a stop it runs to the end, as before
    assert latents.shape[0] == 20 * 25 and len(codes) == 20 * 5


def test_a_dit_forward_stops_between_its_layers(engine):
    decoder = engine.model.decoder
    channels, frames = engine.latent_channels, 50
    x, context = torch.randn(1, frames, channels), torch.randn(1, frames, 2 * channels)
    cross_kv = decoder.precompute_cross_kv(torch.randn(1, 8, decoder.condition_embedder.in_features))
    with torch.inference_mode():
        assert decoder(x, torch.tensor([0.5]), context, cross_kv).shape == x.shape
        with stoppable(stop_after(2)), pytest.raises(Cancelled, match="inside the DiT forward"):
            decoder(x, torch.tensor([0.5]), context, cross_kv)  # layer 0 runs, layer 1 does not start


def test_a_batched_forward_nobody_waits_for_is_abandoned_at_its_next_layer():
    forward = SlowForward()
    batcher = ForwardBatcher()
    stop = threading.Event()
    op = BatchOp("slow", forward)
    with batcher.session(stop.is_set) as session:
        threading.Timer(0.2, stop.set).start()
        with pytest.raises(Cancelled):
            session.submit(op, key=0, rows=1, payload="x")
    assert forward.ended.wait(5)
    assert 0 < forward.layers_run < LAYERS
    assert batcher.close(timeout=5)


def test_closing_the_batcher_stops_a_running_forward():
    forward = SlowForward()
    batcher = ForwardBatcher()
    op = BatchOp("slow", forward)
    results: list = []

    def caller() -> None:
        with batcher.session() as session:
            try:
                results.append(session.submit(op, key=0, rows=1, payload="x"))
            except Exception as exc:
                results.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    time.sleep(0.2)
    assert batcher.close(timeout=5)  # the worker has ended, well before the forward's 2 s
    thread.join(5)
    assert 0 < forward.layers_run < LAYERS
    assert isinstance(results[0], Cancelled)
