"""Repaint's waveform splice: outside the repainted span the decoded audio is replaced by the source's samples.

Upstream 6d467e4 (core/generation/handler/repaint_waveform_splice.py, generate_music.py) does this right after
the VAE decode of a repaint whose repaint_mode is not "aggressive", before normalisation and fades: the VAE's
reconstruction error outside the span goes away, the source itself is heard there. Per sample a weight w is 1
inside the span [int(start·48000), int(end·48000)), 0 outside, and over ``crossfade`` samples just OUTSIDE each
edge (over the source side) it ramps ``linspace(0, 1, n + 2)[1:-1]`` up before the span and
``linspace(1, 0, n + 2)[1:-1]`` down after it (cut short at the signal's ends); the output is
w·decoded + (1 − w)·source. Span and source are on the padded time axis: outpainting (repainting_start < 0,
repainting_end past the end) pads the source with silence, as the latents were (tasks.py ``padded_span``).

Differs on purpose:
- the crossfade is repaint_wav_crossfade_sec as requested (round(seconds·48000) samples; 0 = a hard cut).
  Upstream accepts the field but ignores it, deriving the width from the mode: 0.05 s conservative,
  0.05·(1 − repaint_strength) balanced.
- where the output outlasts the source (the latent length is padded to at least 128 frames and rounds to whole
  frames) the samples past the source's end stay the decoded audio; upstream cuts the output to the shorter.
- the audio streams window by window (vae_decode.py): :meth:`WaveformSplice.apply` splices one window at a
  time, and the windows together equal the whole signal spliced at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acestep_client.errors import InvalidArgument

from .tasks import padded_span


@dataclass(frozen=True)
class WaveformSplice:
    """The splice of one request (every item shares its span). ``source`` [2, n] float32 lies on the output's
    time axis (output sample s is source sample s, silence where outpainting padded it); ``start``/``end`` are
    the span in output samples; ``crossfade`` the ramp length outside each edge, in samples."""

    source: torch.Tensor
    start: int
    end: int
    crossfade: int

    def segments(self) -> list[tuple[int, int, torch.Tensor | None]]:
        """(first, end, weights) pieces of [0, len(source)) where the source counts: weights None = source
        alone, else the decoded audio's weight per sample. Outside them (the span, past the source) the decoded
        audio is kept as it is."""
        total = self.source.shape[-1]
        start = min(max(self.start, 0), total)
        end = min(max(self.end, start), total)
        if start == 0 and end == total:
            return []  # everything is repainted: nothing of the source is heard
        fade_in = max(start - self.crossfade, 0)
        fade_out = min(end + self.crossfade, total)
        ramp_up = torch.linspace(0.0, 1.0, start - fade_in + 2)[1:-1]
        ramp_down = torch.linspace(1.0, 0.0, fade_out - end + 2)[1:-1]
        pieces = [(0, fade_in, None), (fade_in, start, ramp_up), (end, fade_out, ramp_down), (fade_out, total, None)]
        return [piece for piece in pieces if piece[1] > piece[0]]

    def apply(self, audio: torch.Tensor, first: int) -> torch.Tensor:
        """``audio`` [B, 2, n] (output samples ``first`` onwards) spliced; a new tensor, ``audio`` is not changed."""
        out = audio.clone()
        last = first + audio.shape[-1]
        for begin, finish, weights in self.segments():
            lo, hi = max(begin, first), min(finish, last)
            if lo >= hi:
                continue
            src = self.source[:, lo:hi].to(device=audio.device, dtype=audio.dtype)
            window = slice(lo - first, hi - first)
            if weights is None:
                out[..., window] = src
            else:
                w = weights[lo - begin : hi - begin].to(device=audio.device, dtype=audio.dtype)
                out[..., window] = w * audio[..., window] + (1.0 - w) * src
        return out


def repaint_splice(req, sample_rate: int, hop: int) -> WaveformSplice | None:
    """The splice a SynthesisRequest asks for, or None: only repaint, not in "aggressive" mode, with a source
    waveform (``src_waveform``, else ``src_audio``). The padding and the span follow what the task plan did:
    in seconds for a waveform source, in whole latent frames for pre-encoded latents (the gRPC path)."""
    if req.task_type != "repaint" or req.edit.repaint_mode == "aggressive":
        return None
    wav = req.src_waveform if req.src_waveform is not None else req.src_audio
    if wav is None:
        return None
    if not isinstance(wav, torch.Tensor) or wav.dim() != 2 or wav.shape[0] != 2 or wav.shape[1] == 0:
        shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise InvalidArgument("src_waveform", f"allowed a float tensor [2, n>0] at 48 kHz, got {shape}")
    if not torch.isfinite(wav).all():
        raise InvalidArgument("src_waveform", "allowed finite samples, got NaN/inf")
    wav = wav.detach().float().cpu().clamp(-1.0, 1.0)  # as the model's source is (tasks.py, upstream)
    if req.src_latents is not None:  # the plan padded whole latent frames
        span = padded_span(req, req.src_latents.shape[0], sample_rate / hop)
        left_pad, right_pad = span.left * hop, span.right * hop
    else:  # the plan padded the waveform
        span = padded_span(req, wav.shape[-1], sample_rate)
        left_pad, right_pad = span.left, span.right
    if left_pad or right_pad:
        wav = torch.nn.functional.pad(wav, (left_pad, right_pad))
    crossfade = round(req.edit.repaint_wav_crossfade_sec * sample_rate)
    return WaveformSplice(wav, int(span.start * sample_rate), int(span.end * sample_rate), crossfade)
