"""DescribeMusic: the LM's text modes (understand, create sample, format) relayed to an LM replica."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from acestep_client.describe import validate_describe_task
from acestep_client.errors import FailedPrecondition
from acestep_client.proto.acestep.v1 import lm_pb2, orchestrator_pb2
from orchestrator.pipeline import Backends


async def describe_events(
    request: orchestrator_pb2.DescribeMusicRequest,
    backends: Backends,
    timeout: Callable[[], float | None] = lambda: None,
) -> AsyncIterator[orchestrator_pb2.DescribeMusicResponse]:
    """Validate here (a bad request never reaches the LM), then stream the LM's progress and description."""
    mode = validate_describe_task(request.task)
    if backends.lm is None:
        raise FailedPrecondition(f"{mode} needs the LM service, and this deployment has none; configure --lm")
    lm_request = lm_pb2.DescribeRequest(task=request.task, request_id=request.request_id)
    async for response in backends.lm.stream("Describe", lm_request, timeout=timeout()):
        kind = response.WhichOneof("event")
        if kind == "progress":
            yield orchestrator_pb2.DescribeMusicResponse(progress=response.progress)
        elif kind == "description":
            yield orchestrator_pb2.DescribeMusicResponse(description=response.description)
