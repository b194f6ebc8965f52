"""Job handlers by kind: what a worker runs for each kind of queued job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consult.previews import handle_preview
from consult.services import Services

Handler = Callable[[Services, dict[str, Any]], None]


def handlers() -> dict[str, Handler]:
    """The registry, built on demand so optional modules load only in workers."""
    registry: dict[str, Handler] = {"preview": handle_preview}
    try:
        from consult.delivery import handle_deliver_opinion
    except ImportError:  # pragma: no cover - until delivery lands
        pass
    else:
        registry["deliver_opinion"] = handle_deliver_opinion
    return registry
