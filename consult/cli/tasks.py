"""Job handlers by kind: what a worker runs for each kind of queued job."""

from __future__ import annotations

from consult.consultations.delivery import KIND as DELIVER_OPINION
from consult.consultations.delivery import handle_deliver_opinion
from consult.jobs.worker import Handler
from consult.previews.builds import handle_preview


def job_handlers() -> dict[str, Handler]:
    """The registry of job kinds a worker runs."""
    return {"preview": handle_preview, DELIVER_OPINION: handle_deliver_opinion}
