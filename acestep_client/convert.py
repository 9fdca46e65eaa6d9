"""Lossless conversion between the API dataclasses and their proto messages.

Field names are identical on both sides, so the conversion walks the dataclass fields and the
message descriptor together; only enums (task_type, audio_format), the seeds oneof and lists (timesteps: an
empty repeated field reads back as None, the dataclass default) need care.
Unset optional proto fields mean "the API default" (None for Optional fields), and an explicit
value equal to that default reads back as the very same default object (``repainting_end=-1.0`` is
the dataclass's ``-1``), so the deterministic key cannot tell "unset" from "set to the default".
Enum numbers a client made up (e.g. TaskType 99) are InvalidArgument naming the field, never a crash.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from acestep_client.errors import InvalidArgument
from acestep_client.proto.acestep.v1 import generation_pb2 as pb
from acestep_client.types import GenerationConfig, GenerationParams, ModelInfo

_ENUM_FIELDS = {"task_type": ("TASK_TYPE_", pb.TaskType), "audio_format": ("AUDIO_FORMAT_", pb.AudioFormat)}
_ENUM_DEFAULTS = {"task_type": "text2music", "audio_format": "flac"}


def _enum_to_proto(name: str, value: str) -> int:
    prefix, enum = _ENUM_FIELDS[name]
    try:
        return enum.Value(prefix + value.upper().replace("-", "_"))  # cover-nofsq -> COVER_NOFSQ
    except ValueError:
        raise InvalidArgument(name, f"unknown value {value!r}") from None


def check_enum(field: str, enum: Any, number: int) -> int:
    """``number`` if ``enum`` (a generated EnumTypeWrapper) defines it, else InvalidArgument naming ``field``.

    proto3 enums are open: a client built from other .proto versions can send any int32.
    """
    if number not in enum.values():
        allowed = ", ".join(f"{value} ({key})" for key, value in enum.items())
        raise InvalidArgument(field, f"unknown {enum.DESCRIPTOR.name} value {number}; allowed {allowed}")
    return number


def _enum_from_proto(name: str, number: int) -> str:
    prefix, enum = _ENUM_FIELDS[name]
    check_enum(name, enum, number)
    if number == 0:
        return _ENUM_DEFAULTS[name]
    return enum.Name(number).removeprefix(prefix).lower().replace("_", "-")


def task_type_number(name: str) -> int:
    """The TaskType number of an API task name (``"cover-nofsq"`` -> TASK_TYPE_COVER_NOFSQ)."""
    return _enum_to_proto("task_type", name)


def task_type_name(number: int) -> str:
    """The API task name of a TaskType number (0 reads as text2music)."""
    return _enum_from_proto("task_type", number)


def _fill(message: Any, obj: Any, skip: tuple[str, ...] = ()) -> Any:
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if f.name in _ENUM_FIELDS:
            setattr(message, f.name, _enum_to_proto(f.name, value))
        elif value is not None:
            repeated = message.DESCRIPTOR.fields_by_name[f.name].is_repeated
            items = _sequence(f.name, value) if repeated else None
            try:
                if repeated:
                    getattr(message, f.name).extend(items)
                else:
                    setattr(message, f.name, value)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f.name, f"cannot be sent: {exc}") from None
    return message


def _sequence(name: str, value: Any) -> list[Any]:
    """A list field's values; a bare string or number would otherwise be sent as characters or fail obscurely."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidArgument(name, f"must be a list, got {type(value).__name__}")
    return list(value)


def _read(message: Any, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    values: dict[str, Any] = {}
    descriptor = message.DESCRIPTOR
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        field_descriptor = descriptor.fields_by_name[f.name]
        if f.name in _ENUM_FIELDS:
            values[f.name] = _enum_from_proto(f.name, getattr(message, f.name))
        elif field_descriptor.is_repeated:
            values[f.name] = list(getattr(message, f.name)) or None  # empty: None (e.g. no custom timesteps)
        elif field_descriptor.has_presence and not message.HasField(f.name):
            continue  # unset: the dataclass default
        else:
            value = getattr(message, f.name)
            if field_descriptor.has_presence and f.default is not dataclasses.MISSING and value == f.default:
                value = f.default  # explicit default == unset, down to its type (-1.0 -> -1)
            values[f.name] = value
    return values


def params_to_proto(params: GenerationParams) -> pb.GenerationParams:
    return _fill(pb.GenerationParams(), params)


def params_from_proto(message: pb.GenerationParams) -> GenerationParams:
    return GenerationParams(**_read(message, GenerationParams))


def config_to_proto(config: GenerationConfig) -> pb.GenerationConfig:
    message = _fill(pb.GenerationConfig(), config, skip=("seeds",))
    seeds = config.seeds
    if isinstance(seeds, bool):
        raise InvalidArgument("seeds", f"must be a list of integers, an integer or None, got {seeds!r}")
    if isinstance(seeds, int):
        message.single_seed = seeds
    elif seeds is not None:
        message.seed_list.SetInParent()
        message.seed_list.values.extend(seeds)
    return message


def config_from_proto(message: pb.GenerationConfig) -> GenerationConfig:
    values = _read(message, GenerationConfig, skip=("seeds",))
    which = message.WhichOneof("seeds")
    if which == "single_seed":
        values["seeds"] = message.single_seed
    elif which == "seed_list":
        values["seeds"] = list(message.seed_list.values)
    return GenerationConfig(**values)


_MODEL_KINDS = {pb.MODEL_KIND_DIT: "dit", pb.MODEL_KIND_LM: "lm", pb.MODEL_KIND_ADAPTER: "adapter"}


def model_info_from_proto(message: pb.ModelInfo) -> ModelInfo:
    """A ListModels entry as the SDK's dataclass; kinds and tasks a newer server knows and we do not are kept as
    their numbers' names (``kind_7``, ``task_9``) rather than refused: listing must not fail on them."""
    tasks = []
    for number in message.task_types:
        try:
            tasks.append(task_type_name(number))
        except InvalidArgument:
            tasks.append(f"task_{number}")
    return ModelInfo(
        name=message.name, kind=_MODEL_KINDS.get(message.kind, f"kind_{message.kind}"), task_types=tasks,
        min_inference_steps=message.min_inference_steps, max_inference_steps=message.max_inference_steps,
        default_inference_steps=message.default_inference_steps, is_turbo=message.is_turbo, loaded=message.loaded,
        max_duration_s=message.max_duration_s, max_batch_size=message.max_batch_size, base_model=message.base_model,
        adapter_format=message.adapter_format, replicas=list(message.replicas), is_default=message.is_default,
    )
