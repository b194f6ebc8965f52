"""Job handlers by kind: what a worker runs for each kind of queued job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consult.consultations.delivery import KIND as DELIVER_OPINION
from consult.consultations.delivery import handle_deliver_opinion
from consult.previews.builds import handle_preview
from consult.services import Services

Handler = Callable[[Services, dict[str, Any]], None]


def handlers() -> dict[str, Handler]:
    """The registry of job kinds a worker runs."""
    return {"preview": handle_preview, DELIVER_OPINION: handle_deliver_opinion}
