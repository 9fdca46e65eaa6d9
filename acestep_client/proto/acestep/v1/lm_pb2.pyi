from acestep_client.proto.acestep.v1 import generation_pb2 as _generation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanRequest(_message.Message):
    __slots__ = ("params", "seeds", "lm_batch_chunk_size", "constrained_decoding_debug", "generate_codes", "request_id")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    LM_BATCH_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINED_DECODING_DEBUG_FIELD_NUMBER: _ClassVar[int]
    GENERATE_CODES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    params: _generation_pb2.GenerationParams
    seeds: _containers.RepeatedScalarFieldContainer[int]
    lm_batch_chunk_size: int
    constrained_decoding_debug: bool
    generate_codes: bool
    request_id: str
    def __init__(self, params: _Optional[_Union[_generation_pb2.GenerationParams, _Mapping]] = ..., seeds: _Optional[_Iterable[int]] = ..., lm_batch_chunk_size: _Optional[int] = ..., constrained_decoding_debug: _Optional[bool] = ..., generate_codes: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ItemMetadata(_message.Message):
    __slots__ = ("item_index", "metadata")
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    item_index: int
    metadata: _generation_pb2.LmMetadata
    def __init__(self, item_index: _Optional[int] = ..., metadata: _Optional[_Union[_generation_pb2.LmMetadata, _Mapping]] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("progress", "metadata", "codes", "time_costs", "warning")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    TIME_COSTS_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    progress: _generation_pb2.Progress
    metadata: ItemMetadata
    codes: _generation_pb2.ItemCodes
    time_costs: _generation_pb2.TimeCosts
    warning: _generation_pb2.Warning
    def __init__(self, progress: _Optional[_Union[_generation_pb2.Progress, _Mapping]] = ..., metadata: _Optional[_Union[ItemMetadata, _Mapping]] = ..., codes: _Optional[_Union[_generation_pb2.ItemCodes, _Mapping]] = ..., time_costs: _Optional[_Union[_generation_pb2.TimeCosts, _Mapping]] = ..., warning: _Optional[_Union[_generation_pb2.Warning, _Mapping]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("task", "request_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task: _generation_pb2.DescribeTask
    request_id: str
    def __init__(self, task: _Optional[_Union[_generation_pb2.DescribeTask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("progress", "description")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    progress: _generation_pb2.Progress
    description: _generation_pb2.SampleDescription
    def __init__(self, progress: _Optional[_Union[_generation_pb2.Progress, _Mapping]] = ..., description: _Optional[_Union[_generation_pb2.SampleDescription, _Mapping]] = ...) -> None: ...
