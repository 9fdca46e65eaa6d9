from acestep_client.proto.acestep.v1 import generation_pb2 as _generation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateMusicRequest(_message.Message):
    __slots__ = ("params", "config", "src_audio", "reference_audio", "request_id", "stream_encoding")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SRC_AUDIO_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ENCODING_FIELD_NUMBER: _ClassVar[int]
    params: _generation_pb2.GenerationParams
    config: _generation_pb2.GenerationConfig
    src_audio: _generation_pb2.AudioInput
    reference_audio: _generation_pb2.AudioInput
    request_id: str
    stream_encoding: _generation_pb2.StreamEncoding
    def __init__(self, params: _Optional[_Union[_generation_pb2.GenerationParams, _Mapping]] = ..., config: _Optional[_Union[_generation_pb2.GenerationConfig, _Mapping]] = ..., src_audio: _Optional[_Union[_generation_pb2.AudioInput, _Mapping]] = ..., reference_audio: _Optional[_Union[_generation_pb2.AudioInput, _Mapping]] = ..., request_id: _Optional[str] = ..., stream_encoding: _Optional[_Union[_generation_pb2.StreamEncoding, str]] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("item_index", "seed", "key", "params", "num_frames", "sample_rate_hz", "silent", "gain")
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    GAIN_FIELD_NUMBER: _ClassVar[int]
    item_index: int
    seed: int
    key: str
    params: _generation_pb2.GenerationParams
    num_frames: int
    sample_rate_hz: int
    silent: bool
    gain: float
    def __init__(self, item_index: _Optional[int] = ..., seed: _Optional[int] = ..., key: _Optional[str] = ..., params: _Optional[_Union[_generation_pb2.GenerationParams, _Mapping]] = ..., num_frames: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., silent: _Optional[bool] = ..., gain: _Optional[float] = ...) -> None: ...

class GenerationDone(_message.Message):
    __slots__ = ("status_message", "num_items", "warnings")
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NUM_ITEMS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    status_message: str
    num_items: int
    warnings: _containers.RepeatedCompositeFieldContainer[_generation_pb2.Warning]
    def __init__(self, status_message: _Optional[str] = ..., num_items: _Optional[int] = ..., warnings: _Optional[_Iterable[_Union[_generation_pb2.Warning, _Mapping]]] = ...) -> None: ...

class GenerateMusicResponse(_message.Message):
    __slots__ = ("progress", "lm_metadata", "audio_chunk", "item_result", "time_costs", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LM_METADATA_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    ITEM_RESULT_FIELD_NUMBER: _ClassVar[int]
    TIME_COSTS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: _generation_pb2.Progress
    lm_metadata: _generation_pb2.LmMetadata
    audio_chunk: _generation_pb2.AudioChunk
    item_result: ItemResult
    time_costs: _generation_pb2.TimeCosts
    done: GenerationDone
    def __init__(self, progress: _Optional[_Union[_generation_pb2.Progress, _Mapping]] = ..., lm_metadata: _Optional[_Union[_generation_pb2.LmMetadata, _Mapping]] = ..., audio_chunk: _Optional[_Union[_generation_pb2.AudioChunk, _Mapping]] = ..., item_result: _Optional[_Union[ItemResult, _Mapping]] = ..., time_costs: _Optional[_Union[_generation_pb2.TimeCosts, _Mapping]] = ..., done: _Optional[_Union[GenerationDone, _Mapping]] = ...) -> None: ...

class DescribeMusicRequest(_message.Message):
    __slots__ = ("task", "request_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task: _generation_pb2.DescribeTask
    request_id: str
    def __init__(self, task: _Optional[_Union[_generation_pb2.DescribeTask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DescribeMusicResponse(_message.Message):
    __slots__ = ("progress", "description")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    progress: _generation_pb2.Progress
    description: _generation_pb2.SampleDescription
    def __init__(self, progress: _Optional[_Union[_generation_pb2.Progress, _Mapping]] = ..., description: _Optional[_Union[_generation_pb2.SampleDescription, _Mapping]] = ...) -> None: ...
