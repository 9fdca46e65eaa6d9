"""A model server's own check that a request names a model it serves.

The orchestrator routes each request to replicas serving its model (orchestrator/routing.py); a route
built on a stale inventory, or a caller dialling a replica directly, must get NOT_FOUND naming both models,
never another model's output. Runs before any model work.
"""

from __future__ import annotations

from collections.abc import Sequence

from acestep_client.errors import NotFound


def served_model(field: str, requested: str, served: Sequence[str], label: str) -> str:
    """The model of ``served`` a request naming ``requested`` gets ("" = the first, the server's default).

    ``served`` empty (a server built without names, in tests) accepts any request as before.
    """
    if not served or not requested:
        return served[0] if served else requested
    if requested not in served:
        raise NotFound(f"{field}: this {label} replica serves {', '.join(served)}, not {requested!r}; ask the "
                       "orchestrator (it routes each model to its replicas) or a replica serving it")
    return requested
