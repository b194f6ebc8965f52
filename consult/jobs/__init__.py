"""Background work: the durable job queue in the catalog (``queue``), the worker loop
(``worker``) and the doorbell that wakes waiting workers (``doorbell``).
"""

from consult.jobs.queue import (
    Job,
    claim,
    complete,
    counts,
    enqueue,
    extend_lease,
    fail,
)

__all__ = [
    "Job",
    "claim",
    "complete",
    "counts",
    "enqueue",
    "extend_lease",
    "fail",
]
