"""Bad input through the real servers is INVALID_ARGUMENT naming the field and what is allowed, never INTERNAL or
UNKNOWN (issue 15 and the reliability suite's findings).

Two bounded, derandomized hypothesis fuzzes (GenerateMusic fields, EncodeAudio bytes) guard the whole surface; the
tests after them pin each cause found: sources too short for the VAE, longer than 600 s or expanding past it from a
tiny file, repaint spans past 600 s, NUL in a server path, NaN latents, 5,000-digit audio codes, format_sample's
NaN duration and negative bpm, request bytes protobuf cannot parse, and values too long to echo in a status.
"""

from __future__ import annotations

import io
import math
import struct
import urllib.request

import grpc
import numpy as np
import pytest
import soundfile as sf
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from acestep_client import GenerationConfig, GenerationParams
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import dit_pb2, dit_pb2_grpc, lm_pb2, lm_pb2_grpc, orchestrator_pb2_grpc
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import orchestrator_pb2 as orch_pb2

FAST = {"caption": "lofi beat", "duration": 10, "inference_steps": 1, "thinking": False, "use_cot_metas": False}
LONG_CODE = "<|audio_code_" + "7" * 5000 + "|>"
ALLOWED_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck))
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


# ---------------------------------------------------------------------------------------------------- helpers
def _audio(frames: int, rate: int = 48_000, channels: int = 2, container: str = "WAV", subtype: str | None = None,
           level: float = 0.1) -> bytes:
    samples = level * np.random.default_rng(0).standard_normal((frames, channels)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def _silent_flac(seconds: int, rate: int = 48_000, channels: int = 2) -> bytes:
    """Silence compresses to almost nothing: 700 s of 48 kHz stereo is ~130 KB of FLAC."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as file:
        block = np.zeros((rate, channels), dtype=np.float32)
        for _ in range(seconds):
            file.write(block)
    return buffer.getvalue()


def _unknown_length(flac: bytes) -> bytes:
    """The FLAC with STREAMINFO's total-samples field zeroed: 'unknown', as streaming encoders write it."""
    data = bytearray(flac)
    data[21] &= 0xF0
    data[22:26] = b"\0\0\0\0"
    return bytes(data)


def _request(params: GenerationParams | gen_pb2.GenerationParams, **fields) -> orch_pb2.GenerateMusicRequest:
    message = params if isinstance(params, gen_pb2.GenerationParams) else params_to_proto(params)
    config = config_to_proto(GenerationConfig(batch_size=1, seeds=[1], use_random_seed=False))
    return orch_pb2.GenerateMusicRequest(params=message, config=config, **fields)


def _generate(address: str, request: orch_pb2.GenerateMusicRequest) -> grpc.StatusCode:
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        try:
            list(orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic(request, timeout=120))
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def _refusal(call, *args, streamed: bool = True) -> grpc.RpcError:
    """The error ``call(*args)`` ends with; ``streamed``: its responses are a stream (read to the end)."""
    with pytest.raises(grpc.RpcError) as excinfo:
        result = call(*args, timeout=60)
        if streamed:
            list(result)
    return excinfo.value


def _refused(stack, request: orch_pb2.GenerateMusicRequest) -> grpc.RpcError:
    with grpc.insecure_channel(stack.address, options=CHANNEL_OPTIONS) as channel:
        return _refusal(orchestrator_pb2_grpc.MusicGenerationServiceStub(channel).GenerateMusic, request)


def _encode_refused(stack, data: bytes, purpose: int = dit_pb2.ENCODE_PURPOSE_SOURCE) -> grpc.RpcError:
    with grpc.insecure_channel(stack.stack.dit.address, options=CHANNEL_OPTIONS) as channel:
        stub = dit_pb2_grpc.DiffusionServiceStub(channel)
        return _refusal(stub.EncodeAudio, iter([dit_pb2.EncodeAudioRequest(data=data, purpose=purpose)]),
                        streamed=False)


def _encode(stack, data: bytes, purpose: int = dit_pb2.ENCODE_PURPOSE_SOURCE) -> gen_pb2.EncodedAudio:
    with grpc.insecure_channel(stack.stack.dit.address, options=CHANNEL_OPTIONS) as channel:
        stub = dit_pb2_grpc.DiffusionServiceStub(channel)
        return stub.EncodeAudio(iter([dit_pb2.EncodeAudioRequest(data=data, purpose=purpose)]), timeout=120).encoded


def _assert_invalid(error: grpc.RpcError, field: str, *fragments: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert error.details().startswith(f"{field}: "), error.details()
    for fragment in fragments:
        assert fragment in error.details(), (fragment, error.details())


def _latent_channels(stack) -> int:
    return stack.stack.dit.servicer.engine.latent_channels  # 64 in the released models, fewer in the tiny ones


def _dit_calls(stack, method: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.stack.metrics_port}/metrics", timeout=5).read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "acestep_requests_total" and sample.labels.get("service") == "dit"
               and sample.labels.get("method") == method)


# ---------------------------------------------------------------------------------------------------- fuzz
ODD_TEXT = st.sampled_from(["", "\x00", "a\x00b", "\u202e\u200b\ufeff", "🎵" * 300, "x" * 100_000, LONG_CODE,
                            "<|audio_code_1|>", "../../etc/passwd", "\n\r\t", "ode", "sde", "heun", "aggressive",
                            "auto", "db4", "C major", "4/4", "en", "cover"])
TEXT = ODD_TEXT | st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, -1.0, 0.0, 5e-324, 1e9, 601.0, 1200.0,
                           0.5, -600.0]) | st.floats(allow_nan=True, allow_infinity=True)
INT32 = st.sampled_from([-(2**31), -1, 0, 1, 2, 8, 9, 2**31 - 1]) | st.integers(-(2**31), 2**31 - 1)
INT64 = st.sampled_from([-(2**63), -2, -1, 0, 2**32, 2**63 - 1]) | st.integers(-(2**63), 2**63 - 1)
ENUMS = st.sampled_from([-1, 0, 1, 2, 3, 4, 7, 8, 99, 2**31 - 1])
# A valid long duration would run minutes of CPU diffusion: durations come from a short list of edge values.
SPECIAL = {"duration": st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 5.0, 10.0, 601.0, 1e308]),
           "cot_duration": st.sampled_from([math.nan, -math.inf, 0.0, 9.0, 10.0, 601.0])}
_SCALARS = {
    FieldDescriptor.TYPE_STRING: TEXT, FieldDescriptor.TYPE_DOUBLE: NUMBERS, FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_ENUM: ENUMS, FieldDescriptor.TYPE_INT32: INT32, FieldDescriptor.TYPE_INT64: INT64,
}


def _values(field: FieldDescriptor):
    scalar = SPECIAL.get(field.name, _SCALARS[field.type])
    return st.lists(scalar, max_size=40) if field.is_repeated else scalar


@st.composite
def _fuzzed(draw, base):
    """``base`` with one to four of its scalar (or repeated scalar) fields set to hostile values."""
    message = type(base)()
    message.CopyFrom(base)
    fields = [f for f in base.DESCRIPTOR.fields if f.type != FieldDescriptor.TYPE_MESSAGE]
    for field in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4, unique_by=lambda f: f.name)):
        value = draw(_values(field))
        if field.is_repeated:
            getattr(message, field.name)[:] = value
        else:
            setattr(message, field.name, value)
    return message


# Uploads a hostile client sends: too short for the VAE, expanding (1 Hz, 16 channels), cut, or not audio at all.
_UPLOADS = st.sampled_from([_audio(1), _audio(1000), _audio(4800), _audio(200, rate=1, channels=1),
                            _audio(480, channels=16), _audio(48_000, container="FLAC")[:200], b"RIFF" + bytes(60)]) \
    | st.binary(max_size=300)


@st.composite
def _upload_request(draw, request: orch_pb2.GenerateMusicRequest) -> None:
    request.stream_encoding = draw(ENUMS)
    request.params.task_type = draw(st.sampled_from([1, 2, 3, 7]))  # text2music, cover, repaint, cover-nofsq
    request.params.repainting_start = draw(st.sampled_from([0.0, 2.0, -5.0, -300.0, -600.0, 600.0, math.nan]))
    request.params.repainting_end = draw(st.sampled_from([-1.0, 6.0, 400.0, 600.0, 1200.0, math.inf]))
    for name in draw(st.sets(st.sampled_from(["src_audio", "reference_audio"]), min_size=1)):
        upload = getattr(request, name)
        kind = draw(st.sampled_from(["data", "data", "server_path", "format"]))
        if kind == "server_path":
            upload.server_path = draw(TEXT)
        else:
            upload.data = draw(_UPLOADS)
            if kind == "format":
                upload.format = draw(ENUMS)
        if draw(st.booleans()):
            setattr(request.params, name, draw(TEXT))


@st.composite
def _wire_bytes(draw, request: orch_pb2.GenerateMusicRequest) -> bytes:
    """The serialized request cut short or with a byte changed: what protobuf may refuse to parse."""
    data = bytearray(request.SerializeToString())
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xFE, 0xFF]))
    return bytes(data)


@st.composite
def _generate_requests(draw) -> orch_pb2.GenerateMusicRequest | bytes:
    request = _request(GenerationParams(**FAST))
    part = draw(st.sampled_from(["params", "params", "params", "config", "seeds", "uploads", "uploads", "wire"]))
    if part == "params":
        request.params.CopyFrom(draw(_fuzzed(request.params)))
    elif part == "config":
        request.config.CopyFrom(draw(_fuzzed(request.config)))
    elif part == "seeds":
        request.config.seed_list.values[:] = draw(st.lists(INT64, max_size=100))
    elif part == "uploads":
        draw(_upload_request(request))
    else:
        return draw(_wire_bytes(request))
    return request


@FUZZ
@given(request=_generate_requests())
def test_generate_music_fuzz_is_never_internal_or_unknown(stack, request):
    """Only OK, INVALID_ARGUMENT or FAILED_PRECONDITION (lego on turbo, say): never INTERNAL, UNKNOWN, or
    RESOURCE_EXHAUSTED from a status too long to travel."""
    if isinstance(request, bytes):
        with grpc.insecure_channel(stack.address) as channel:
            call = channel.unary_stream("/acestep.v1.MusicGenerationService/GenerateMusic",
                                        request_serializer=lambda b: b, response_deserializer=lambda b: b)
            try:
                list(call(request, timeout=120))
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
    else:
        code = _generate(stack.address, request)
    assert code in ALLOWED_CODES, (code, request)


_FILES = {"wav": _audio(4800), "wav16": _audio(4800, subtype="PCM_16"), "flac": _audio(4800, container="FLAC"),
          "mp3": _audio(4800, container="MP3"), "mono8k": _audio(800, rate=8000, channels=1)}


@st.composite
def _uploads(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "patched", "patched", "word"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    data = bytearray(_FILES[draw(st.sampled_from(sorted(_FILES)))])
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "patched":  # any header byte: sample rate, channels, sizes, STREAMINFO, frame sync
        offset = draw(st.integers(0, 63))
        data[offset] = draw(st.integers(0, 255))
        return bytes(data)
    offset = draw(st.integers(0, 60))  # a whole little-endian word: a rate or size of 0, 1 or 2^32 - 1
    data[offset: offset + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 7, 2**31, 2**32 - 1]) | st.integers(
        0, 2**32 - 1)))
    return bytes(data)


@FUZZ
@given(data=_uploads(), purpose=st.sampled_from([dit_pb2.ENCODE_PURPOSE_SOURCE] * 5 + [dit_pb2.ENCODE_PURPOSE_REFERENCE,
                                                                                      99]))
def test_encode_audio_fuzz_is_only_ok_or_invalid_argument(stack, data, purpose):
    with grpc.insecure_channel(stack.stack.dit.address, options=CHANNEL_OPTIONS) as channel:
        stub = dit_pb2_grpc.DiffusionServiceStub(channel)
        try:
            encoded = stub.EncodeAudio(iter([dit_pb2.EncodeAudioRequest(data=data, purpose=purpose)]),
                                       timeout=120).encoded
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details(), data[:64])
            return
    assert purpose != 99
    latents = np.frombuffer(encoded.latents_f32le, dtype="<f4")
    assert encoded.frames >= 1 and latents.size == encoded.frames * encoded.channels
    assert np.isfinite(latents).all()


# ---------------------------------------------------------------------------------------------------- sources
@pytest.mark.parametrize("frames", [1, 10, 1000, 1919])
def test_a_source_shorter_than_one_latent_frame_is_refused_naming_src_audio_and_the_minimum(stack, frames):
    request = _request(GenerationParams(task_type="cover", src_audio="short.wav", **FAST),
                       src_audio=gen_pb2.AudioInput(data=_audio(frames)))
    _assert_invalid(_refused(stack, request), "src_audio", "at least 0.04 s", "1920-sample")
    _assert_invalid(_encode_refused(stack, _audio(frames)), "data", "at least 0.04 s")


def test_the_shortest_source_encodes_and_a_one_sample_reference_is_repeated_as_upstream(stack):
    assert _encode(stack, _audio(1920)).frames == 1
    # 1,764 frames at 44.1 kHz resample to exactly 1,920 samples at 48 kHz.
    assert _encode(stack, _audio(1764, rate=44_100)).frames == 1
    reference = _encode(stack, _audio(1, level=0.5), dit_pb2.ENCODE_PURPOSE_REFERENCE)
    assert reference.frames == 750  # three 10 s segments of the repeated sample


@pytest.mark.parametrize("field", ["src_audio", "reference_audio"])
def test_a_source_over_600_s_is_refused_from_its_header_before_the_dit_sees_it(stack, field):
    flac = _silent_flac(700)
    assert len(flac) < 200_000  # the issue's file: ~100 KB that decodes to 700 s (270 MB of float32)
    params = GenerationParams(task_type="cover" if field == "src_audio" else "text2music", **{field: "long.flac"},
                              **FAST)
    encodes = _dit_calls(stack, "EncodeAudio")
    error = _refused(stack, _request(params, **{field: gen_pb2.AudioInput(data=flac)}))
    _assert_invalid(error, field, "at most 600 seconds", "700 s")
    assert _dit_calls(stack, "EncodeAudio") == encodes  # refused by the orchestrator: nothing was sent on
    _assert_invalid(_encode_refused(stack, flac), "data", "at most 600 seconds")


def test_a_flac_that_hides_its_length_is_cut_off_at_600_s(stack):
    """Its header passes (no length to check); decoding stops one block past 600 s instead of reading 700 s."""
    flac = _unknown_length(_silent_flac(700, rate=8000, channels=1))
    _assert_invalid(_encode_refused(stack, flac), "data", "at most 600 seconds")


@pytest.mark.parametrize(("data", "fragment"), [
    (_audio(200, rate=1, channels=1), "sample rate must be between 8000 and 192000 Hz, got 1 Hz"),
    (_audio(4800, rate=384_000, channels=1), "got 384000 Hz"),
    (_audio(4800, channels=16), "must have 1-8 channels, got 16"),
])
def test_an_upload_that_would_expand_is_refused_naming_the_field(stack, data, fragment):
    request = _request(GenerationParams(task_type="cover", src_audio="odd.wav", **FAST),
                       src_audio=gen_pb2.AudioInput(data=data))
    _assert_invalid(_refused(stack, request), "src_audio", fragment)
    ref = _request(GenerationParams(reference_audio="odd.wav", **FAST), reference_audio=gen_pb2.AudioInput(data=data))
    _assert_invalid(_refused(stack, ref), "reference_audio", fragment)
    _assert_invalid(_encode_refused(stack, data), "data", fragment)


def test_the_444_byte_upload_at_1_hz_from_the_issue_is_refused(stack):
    data = _audio(200, rate=1, channels=1, subtype="FLOAT")
    assert len(data) <= 1000
    request = _request(GenerationParams(task_type="cover", src_audio="tiny.wav", **FAST),
                       src_audio=gen_pb2.AudioInput(data=data))
    _assert_invalid(_refused(stack, request), "src_audio", "sample rate")


# ---------------------------------------------------------------------------------------------------- repaint
@pytest.mark.parametrize(("start", "end", "field", "fragment"), [
    (-600.0, 600.0, "repainting_end", "in (-600, 0] seconds"),
    (0.0, 1200.0, "repainting_end", "in (0, 600] seconds"),
    (-300.0, 400.0, "repainting_end", "in (-300, 300] seconds"),
])
def test_a_repaint_span_past_600_s_is_refused_naming_the_field(stack, start, end, field, fragment):
    params = GenerationParams(task_type="repaint", src_audio="song.wav", repainting_start=start, repainting_end=end,
                              **FAST)
    error = _refused(stack, _request(params, src_audio=gen_pb2.AudioInput(data=_audio(48_000 * 10))))
    _assert_invalid(error, field, fragment)


@pytest.mark.parametrize(("start", "end"), [(-20.0, 10.0), (-15.0, -1)])
def test_a_repaint_whose_padding_takes_the_source_past_600_s_is_refused_from_its_header(stack, start, end):
    """590 s of source (its header says so: nothing is decoded) with 15-20 s of silence before it."""
    params = GenerationParams(task_type="repaint", src_audio="long.flac", repainting_start=start,
                              repainting_end=end, **FAST)
    upload = gen_pb2.AudioInput(data=_silent_flac(590, rate=8000, channels=1))
    encodes = _dit_calls(stack, "EncodeAudio")
    _assert_invalid(_refused(stack, _request(params, src_audio=upload)), "repainting_start", "at least -10 s",
                    "590 s source")
    assert _dit_calls(stack, "EncodeAudio") == encodes


def test_the_dit_refuses_latents_whose_repaint_padding_passes_600_s(stack):
    """A raw Synthesize with 590 s of source latents and 20 s of silence before them (no orchestrator)."""
    frames, channels = 590 * 25, _latent_channels(stack)
    latents = np.zeros((frames, channels), dtype="<f4").tobytes()
    params = GenerationParams(task_type="repaint", src_audio="x", repainting_start=-20.0, repainting_end=10.0, **FAST)
    request = dit_pb2.SynthesizeRequest(params=params_to_proto(params), seeds=[1], src_audio=gen_pb2.EncodedAudio(
        frames=frames, channels=channels, latents_f32le=latents))
    with grpc.insecure_channel(stack.stack.dit.address, options=CHANNEL_OPTIONS) as channel:
        error = _refusal(dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize, request)
    _assert_invalid(error, "repainting_start", "at least -10 s")


# ---------------------------------------------------------------------------------------------------- paths
def test_a_server_path_with_nul_is_refused_naming_the_field(stack, tmp_path):
    (tmp_path / "song.wav").write_bytes(_audio(48_000))
    backends = stack.stack.orchestrator.backends
    backends.audio_root = tmp_path  # this session's stack serves no --audio-root; lent one for this test
    try:
        for field, task in (("src_audio", "cover"), ("reference_audio", "text2music")):
            params = GenerationParams(task_type=task, **{field: "song.wav"}, **FAST)
            for path in ("song.wav\x00.txt", "\x00", "x" * 100_000, "../" * 50 + "etc/passwd"):
                error = _refused(stack, _request(params, **{field: gen_pb2.AudioInput(server_path=path)}))
                _assert_invalid(error, field, "server_path")
        params = GenerationParams(task_type="cover", src_audio="song.wav", **FAST)
        assert _generate(stack.address, _request(params, src_audio=gen_pb2.AudioInput(server_path="song.wav"))) \
            == grpc.StatusCode.OK
    finally:
        backends.audio_root = None
    error = _refused(stack, _request(GenerationParams(task_type="cover", src_audio="a\x00b", **FAST)))
    _assert_invalid(error, "src_audio", "without NUL characters")


# ---------------------------------------------------------------------------------------------------- latents
@pytest.mark.parametrize("field", ["src_audio", "reference_audio"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_latents_given_to_synthesize_are_refused(stack, field, bad):
    channels = _latent_channels(stack)
    latents = np.zeros((250, channels), dtype="<f4")
    latents[17, 1] = bad
    encoded = gen_pb2.EncodedAudio(frames=250, channels=channels, latents_f32le=latents.tobytes())
    source = {"task_type": "cover-nofsq", "src_audio": "x"} if field == "src_audio" else {}
    params = GenerationParams(**source, **FAST)
    request = dit_pb2.SynthesizeRequest(params=params_to_proto(params), seeds=[1], **{field: encoded})
    with grpc.insecure_channel(stack.stack.dit.address, options=CHANNEL_OPTIONS) as channel:
        error = _refusal(dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize, request)
    _assert_invalid(error, field, "finite", "frame 17")


@pytest.mark.parametrize(("frames", "channels"), [(-1, -64), (0, 64), (15_001, 64), (2, -32)])
def test_latent_shapes_a_client_made_up_are_refused(stack, frames, channels):
    encoded = gen_pb2.EncodedAudio(frames=frames, channels=channels, latents_f32le=b"\0" * 512)
    params = GenerationParams(task_type="cover-nofsq", src_audio="x", **FAST)
    request = dit_pb2.SynthesizeRequest(params=params_to_proto(params), seeds=[1], src_audio=encoded)
    with grpc.insecure_channel(stack.stack.dit.address, options=CHANNEL_OPTIONS) as channel:
        error = _refusal(dit_pb2_grpc.DiffusionServiceStub(channel).Synthesize, request)
    _assert_invalid(error, "src_audio")


# ---------------------------------------------------------------------------------------------------- codes, text
def test_a_5000_digit_audio_code_is_invalid_argument_everywhere_codes_are_read(stack):
    expected = ("audio_codes", "0-65534", "5000-digit")
    _assert_invalid(_refused(stack, _request(GenerationParams(audio_codes=LONG_CODE, **FAST))), *expected)
    task = gen_pb2.DescribeTask(understand=gen_pb2.UnderstandInput(audio_codes=LONG_CODE))
    with grpc.insecure_channel(stack.address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        _assert_invalid(_refusal(stub.DescribeMusic, orch_pb2.DescribeMusicRequest(task=task)), *expected)
    with grpc.insecure_channel(stack.stack.lm.address) as channel:
        stub = lm_pb2_grpc.LanguageModelServiceStub(channel)
        _assert_invalid(_refusal(stub.Describe, lm_pb2.DescribeRequest(task=task)), *expected)


@pytest.mark.parametrize(("sample", "field", "fragment"), [
    (gen_pb2.FormatSampleInput(caption="x", duration=math.nan), "duration", "finite"),
    (gen_pb2.FormatSampleInput(caption="x", duration=-math.inf), "duration", "finite"),
    (gen_pb2.FormatSampleInput(caption="x", bpm=-5), "bpm", "between 30 and 300"),
])
def test_format_sample_refuses_nan_durations_and_negative_bpms(stack, sample, field, fragment):
    task = gen_pb2.DescribeTask(format_sample=sample, sampling=gen_pb2.LmTextSampling(max_new_tokens=8))
    with grpc.insecure_channel(stack.address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        _assert_invalid(_refusal(stub.DescribeMusic, orch_pb2.DescribeMusicRequest(task=task)), field, fragment)
    with grpc.insecure_channel(stack.stack.lm.address) as channel:
        stub = lm_pb2_grpc.LanguageModelServiceStub(channel)
        _assert_invalid(_refusal(stub.Describe, lm_pb2.DescribeRequest(task=task)), field, fragment)


# ---------------------------------------------------------------------------------------------------- wire
def _raw(address: str, method: str, data: bytes, streaming_request: bool) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
        if streaming_request:
            return _refusal(channel.stream_unary(method, **identity), iter([data]), streamed=False)
        return _refusal(channel.unary_stream(method, **identity), data)


# (server, method, request message, the tag of one of its string fields: request_id or filename)
RAW_TARGETS = [
    ("orchestrator", "MusicGenerationService/GenerateMusic", "GenerateMusicRequest", 5),
    ("orchestrator", "MusicGenerationService/DescribeMusic", "DescribeMusicRequest", 2),
    ("lm", "LanguageModelService/Plan", "PlanRequest", 6),
    ("dit", "DiffusionService/EncodeAudio", "EncodeAudioRequest", 3),
]


@pytest.mark.parametrize(("server", "method", "message", "string_field"), RAW_TARGETS, ids=[t[2] for t in RAW_TARGETS])
@pytest.mark.parametrize("damage", ["corrupt", "bad-utf8"])
def test_request_bytes_protobuf_cannot_parse_are_invalid_argument_not_unknown(stack, server, method, message,
                                                                              string_field, damage):
    address = {"orchestrator": stack.address, "lm": stack.stack.lm.address, "dit": stack.stack.dit.address}[server]
    data = b"\xff\xff\xff\xff" if damage == "corrupt" else bytes([string_field << 3 | 2, 2, 0xFF, 0xFE])
    error = _raw(address, f"/acestep.v1.{method}", data, streaming_request=server == "dit")
    _assert_invalid(error, "request", f"acestep.v1.{message}", "UTF-8" if damage == "bad-utf8" else "corrupt")


def test_a_refused_value_too_long_to_echo_is_still_invalid_argument(stack):
    """The status details travel in a header clients cap at 8-16 KiB: a 100 KB echo became RESOURCE_EXHAUSTED."""
    for field, value in (("infer_method", "x" * 100_000), ("dcw_wavelet", "🎵" * 30_000), ("src_audio", "y" * 100_000)):
        params = params_to_proto(GenerationParams(**FAST))
        setattr(params, field, value)
        error = _refused(stack, _request(params))
        _assert_invalid(error, field)
        assert len(error.details().encode()) <= 1000
