"""Warnings: what the service did that the request did not spell out (a caption cut to the model's
window, seeds ignored), gathered from every backend and reported in GenerationDone, never silent."""

from __future__ import annotations

from acestep_client.assemble import warning_lines
from acestep_client.proto.acestep.v1 import generation_pb2 as gen_pb2
from acestep_client.proto.acestep.v1 import orchestrator_pb2
from acestep_client.types import GenerationConfig


def seed_warnings(config: GenerationConfig) -> list[gen_pb2.Warning]:
    """The reference's seed rule, said out loud: given seeds count only with use_random_seed=false."""
    seeds = config.seeds
    given = [] if seeds is None else [seeds] if isinstance(seeds, int) else list(seeds)
    if not given:
        return []
    if config.use_random_seed:
        return [gen_pb2.Warning(field="seeds", message=(
            "ignored: use_random_seed is true (its default), so every item got a random seed; set "
            "use_random_seed=false to use the given seeds (each item's seed is in its result)"))]
    batch = config.batch_size
    if len(given) > batch:
        return [gen_pb2.Warning(field="seeds", message=(
            f"{len(given)} seeds for batch_size {batch}: only the first {batch} were used"))]
    if len(given) < batch:
        rest = (f"item {batch - 1} got a random seed" if len(given) == batch - 1
                else f"items {len(given)}-{batch - 1} got random seeds")
        return [gen_pb2.Warning(field="seeds", message=(
            f"{len(given)} seed(s) for batch_size {batch}: {rest} (each item's seed is in its "
            "result)"))]
    return []


class Notices:
    """The warnings of one request, in the order they arose, each once."""

    def __init__(self) -> None:
        self.items: list[gen_pb2.Warning] = []

    def add(self, *warnings: gen_pb2.Warning) -> None:
        for warning in warnings:
            if all((w.field, w.message) != (warning.field, warning.message) for w in self.items):
                self.items.append(warning)

    def done(self, status: str, num_items: int) -> orchestrator_pb2.GenerationDone:
        """GenerationDone with the warnings, also appended to ``status`` one per line."""
        return orchestrator_pb2.GenerationDone(status_message=status + warning_lines(self.items), num_items=num_items,
                                               warnings=self.items)
