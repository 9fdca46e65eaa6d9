from acestep_client.proto.acestep.v1 import generation_pb2 as _generation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodePurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODE_PURPOSE_UNSPECIFIED: _ClassVar[EncodePurpose]
    ENCODE_PURPOSE_SOURCE: _ClassVar[EncodePurpose]
    ENCODE_PURPOSE_REFERENCE: _ClassVar[EncodePurpose]
ENCODE_PURPOSE_UNSPECIFIED: EncodePurpose
ENCODE_PURPOSE_SOURCE: EncodePurpose
ENCODE_PURPOSE_REFERENCE: EncodePurpose

class SynthesizeRequest(_message.Message):
    __slots__ = ("params", "seeds", "audio_codes", "src_audio", "reference_audio", "chunk_frames", "request_id", "stream_encoding", "src_waveform")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CODES_FIELD_NUMBER: _ClassVar[int]
    SRC_AUDIO_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ENCODING_FIELD_NUMBER: _ClassVar[int]
    SRC_WAVEFORM_FIELD_NUMBER: _ClassVar[int]
    params: _generation_pb2.GenerationParams
    seeds: _containers.RepeatedScalarFieldContainer[int]
    audio_codes: _containers.RepeatedCompositeFieldContainer[_generation_pb2.ItemCodes]
    src_audio: _generation_pb2.EncodedAudio
    reference_audio: _generation_pb2.EncodedAudio
    chunk_frames: int
    request_id: str
    stream_encoding: _generation_pb2.StreamEncoding
    src_waveform: _generation_pb2.AudioInput
    def __init__(self, params: _Optional[_Union[_generation_pb2.GenerationParams, _Mapping]] = ..., seeds: _Optional[_Iterable[int]] = ..., audio_codes: _Optional[_Iterable[_Union[_generation_pb2.ItemCodes, _Mapping]]] = ..., src_audio: _Optional[_Union[_generation_pb2.EncodedAudio, _Mapping]] = ..., reference_audio: _Optional[_Union[_generation_pb2.EncodedAudio, _Mapping]] = ..., chunk_frames: _Optional[int] = ..., request_id: _Optional[str] = ..., stream_encoding: _Optional[_Union[_generation_pb2.StreamEncoding, str]] = ..., src_waveform: _Optional[_Union[_generation_pb2.AudioInput, _Mapping]] = ...) -> None: ...

class ItemDone(_message.Message):
    __slots__ = ("item_index", "seed", "num_frames", "gain", "peak", "rms")
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    GAIN_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    RMS_FIELD_NUMBER: _ClassVar[int]
    item_index: int
    seed: int
    num_frames: int
    gain: float
    peak: float
    rms: float
    def __init__(self, item_index: _Optional[int] = ..., seed: _Optional[int] = ..., num_frames: _Optional[int] = ..., gain: _Optional[float] = ..., peak: _Optional[float] = ..., rms: _Optional[float] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("progress", "audio_chunk", "item_done", "time_costs", "warning")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    ITEM_DONE_FIELD_NUMBER: _ClassVar[int]
    TIME_COSTS_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    progress: _generation_pb2.Progress
    audio_chunk: _generation_pb2.AudioChunk
    item_done: ItemDone
    time_costs: _generation_pb2.TimeCosts
    warning: _generation_pb2.Warning
    def __init__(self, progress: _Optional[_Union[_generation_pb2.Progress, _Mapping]] = ..., audio_chunk: _Optional[_Union[_generation_pb2.AudioChunk, _Mapping]] = ..., item_done: _Optional[_Union[ItemDone, _Mapping]] = ..., time_costs: _Optional[_Union[_generation_pb2.TimeCosts, _Mapping]] = ..., warning: _Optional[_Union[_generation_pb2.Warning, _Mapping]] = ...) -> None: ...

class EncodeAudioRequest(_message.Message):
    __slots__ = ("format", "data", "filename", "purpose", "seed")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    format: _generation_pb2.AudioFormat
    data: bytes
    filename: str
    purpose: EncodePurpose
    seed: int
    def __init__(self, format: _Optional[_Union[_generation_pb2.AudioFormat, str]] = ..., data: _Optional[bytes] = ..., filename: _Optional[str] = ..., purpose: _Optional[_Union[EncodePurpose, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class EncodeAudioResponse(_message.Message):
    __slots__ = ("encoded",)
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    encoded: _generation_pb2.EncodedAudio
    def __init__(self, encoded: _Optional[_Union[_generation_pb2.EncodedAudio, _Mapping]] = ...) -> None: ...
