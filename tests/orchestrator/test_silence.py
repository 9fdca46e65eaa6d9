"""An item is silent (no file is written) by its level before peak normalisation, which is on by default and would
otherwise lift any noise floor to normalization_db."""

from __future__ import annotations

from acestep_client.proto.acestep.v1 import dit_pb2
from orchestrator.pipeline import _silent


def test_silence_is_judged_before_normalisation_lifts_it():
    target = 10 ** (-1 / 20)
    quiet = dit_pb2.ItemDone(peak=8e-6, rms=2e-6, gain=target / 8e-6)  # normalised it would peak at -1 dBFS
    assert _silent(quiet)
    assert not _silent(dit_pb2.ItemDone(peak=2e-5, rms=5e-6, gain=target / 2e-5))
    assert _silent(dit_pb2.ItemDone(peak=0.0, rms=0.0, gain=1.0))
    # A clipping item is judged after the clip guard (1 / peak), as upstream divides it before anything else.
    assert not _silent(dit_pb2.ItemDone(peak=3.0, rms=0.5, gain=target / 3.0))
