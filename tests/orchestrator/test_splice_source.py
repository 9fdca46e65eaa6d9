"""The orchestrator sends a repaint's uploaded file to the DiT for the waveform splice when it fits in half a
message, and says so when it does not (the request still runs)."""

from __future__ import annotations

import numpy as np

from acestep_client.audio_io import write_audio
from acestep_client.proto.acestep.v1 import dit_pb2
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from orchestrator.notices import Notices
from orchestrator.pipeline import _add_splice_source


def _wav(tmp_path) -> bytes:
    audio = np.zeros((2, 4800), dtype=np.float32)
    return write_audio(tmp_path / "a.wav", audio, 48_000, "wav").read_bytes()


def test_the_file_goes_along_when_it_fits_in_half_a_message(tmp_path):
    data, synth, notices = _wav(tmp_path), dit_pb2.SynthesizeRequest(), Notices()
    _add_splice_source(synth, data, "a.wav", 2 * len(data), notices)
    assert synth.src_waveform.data == data and synth.src_waveform.format == gen_pb2.AUDIO_FORMAT_WAV
    assert synth.src_waveform.filename == "a.wav" and notices.items == []


def test_a_file_too_large_is_left_out_with_a_warning(tmp_path):
    data, synth, notices = _wav(tmp_path), dit_pb2.SynthesizeRequest(), Notices()
    _add_splice_source(synth, data, "a.wav", 2 * len(data) - 2, notices)
    assert not synth.HasField("src_waveform")
    [warning] = notices.items
    assert warning.field == "repaint_wav_crossfade_sec"
    assert warning.message.startswith(f"the waveform splice was skipped: the source file ({len(data)} bytes)")
