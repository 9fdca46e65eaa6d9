"""DescribeMusic: the LM's text modes (understand, create sample, format) relayed to an LM replica."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from acestep_client.describe import validate_describe_task
from acestep_client.errors import FailedPrecondition
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import lm_pb2, orchestrator_pb2
from orchestrator.pipeline import Backends
from orchestrator.replicas import Restarted


def prepare_describe(request: orchestrator_pb2.DescribeMusicRequest, backends: Backends) -> lm_pb2.DescribeRequest:
    """The LM's request, once the task checks out (a bad request never reaches the LM, nor waits in the queue)."""
    mode = validate_describe_task(request.task)
    if backends.lm is None:
        raise FailedPrecondition(f"{mode} needs the LM service, and this deployment has none; configure --lm")
    return lm_pb2.DescribeRequest(task=request.task, request_id=request.request_id)


async def describe_events(
    request: orchestrator_pb2.DescribeMusicRequest | lm_pb2.DescribeRequest,
    backends: Backends,
    timeout: Callable[[], float | None] = lambda: None,
) -> AsyncIterator[orchestrator_pb2.DescribeMusicResponse]:
    """Stream the LM's progress and description; ``request`` may come prepared (:func:`prepare_describe`).

    A replica lost before the description came is replaced and the task runs again there (progress restarts).
    The text modes run on the deployment's default LM (the replicas serving it use their own default model).
    """
    lm_request = request if isinstance(request, lm_pb2.DescribeRequest) else prepare_describe(request, backends)
    assert backends.lm is not None and backends.lm_router is not None  # prepare_describe refused none
    choice, _ = await backends.lm_router.choose("")
    described: list[gen_pb2.SampleDescription] = []  # read by the restart rule as the stream goes
    async for response in backends.lm.stream("Describe", lm_request, timeout=timeout, restart=lambda: not described,
                                             targets=choice.targets):
        if isinstance(response, Restarted):
            continue
        kind = response.WhichOneof("event")
        if kind == "progress":
            yield orchestrator_pb2.DescribeMusicResponse(progress=response.progress)
        elif kind == "description":
            described.append(response.description)
            yield orchestrator_pb2.DescribeMusicResponse(description=response.description)
