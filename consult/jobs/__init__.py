"""Background work: the durable job queue in the catalog (``queue``), the worker loop
(``worker``) and the doorbell that wakes waiting workers (``doorbell``).
"""

from consult.jobs.queue import (
    FINISHED,
    Job,
    JobStatus,
    claim,
    complete,
    counts,
    enqueue,
    extend_lease,
    fail,
)

__all__ = [
    "FINISHED",
    "Job",
    "JobStatus",
    "claim",
    "complete",
    "counts",
    "enqueue",
    "extend_lease",
    "fail",
]
