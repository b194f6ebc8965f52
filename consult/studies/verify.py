"""Re-read every stored object and check it against the catalog's SHA-256.

The checksum covers the dataset bytes as received (``dataset_offset`` onward), the part that
must never change; the file meta before it is ours.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from consult.catalog.tables import instance_versions, instances, series, studies
from consult.errors import StudyNotFound
from consult.services import Services
from storage import ObjectNotFound, StorageError

log = logging.getLogger(__name__)


class ProblemKind(enum.StrEnum):
    """Why a stored version failed the check."""

    MISMATCH = "mismatch"
    """The object's dataset bytes do not have the SHA-256 the catalog recorded."""
    MISSING = "missing"
    """There is no object under the version's key."""
    UNREADABLE = "unreadable"
    """The object store would not give the object back (the detail says what it said)."""


@dataclass(frozen=True)
class Problem:
    """One stored version that failed the check."""

    kind: ProblemKind
    study_uid: str
    sop_instance_uid: str
    version: int
    object_key: str
    detail: str


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Row:
    study_uid: str
    sop_instance_uid: str
    version: int
    object_key: str
    dataset_offset: int
    sha256: str
    size: int


def _rows(services: Services, study_uid: str | None) -> list[_Row]:
    query = (
        select(
            studies.c.study_uid,
            instances.c.sop_instance_uid,
            instance_versions.c.version,
            instance_versions.c.object_key,
            instance_versions.c.dataset_offset,
            instance_versions.c.sha256,
            instance_versions.c.size,
        )
        .join(series, series.c.study_pk == studies.c.id)
        .join(instances, instances.c.series_pk == series.c.id)
        .join(instance_versions, instance_versions.c.instance_pk == instances.c.id)
        .order_by(studies.c.id, series.c.id, instances.c.id, instance_versions.c.version)
    )
    with services.catalog.read() as conn:
        if study_uid is not None:
            found = conn.execute(
                select(studies.c.id).where(studies.c.study_uid == study_uid)
            ).first()
            if found is None:
                raise StudyNotFound(f"no study {study_uid!r} in the catalog")
            query = query.where(studies.c.study_uid == study_uid)
        return [_Row(*row) for row in conn.execute(query).all()]


def verify(
    services: Services,
    *,
    study_uid: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check every version (of one study, or of all); ``on_step(done, total)`` after each."""
    rows = _rows(services, study_uid)
    report = VerifyReport()
    for done, row in enumerate(rows, start=1):
        problem = _check(services, row)
        if problem is not None:
            log.warning("verify: %s %s v%d", problem.kind, row.sop_instance_uid, row.version)
            report.problems.append(problem)
        report.checked += 1
        if on_step is not None:
            on_step(done, len(rows))
    return report


def _check(services: Services, row: _Row) -> Problem | None:
    def problem(kind: ProblemKind, detail: str) -> Problem:
        return Problem(
            kind, row.study_uid, row.sop_instance_uid, row.version, row.object_key, detail
        )

    try:
        blob = services.store.get(row.object_key)
    except ObjectNotFound:
        return problem(ProblemKind.MISSING, "no object under its key")
    except StorageError as exc:
        return problem(ProblemKind.UNREADABLE, str(exc)[:200])
    data = blob[row.dataset_offset :]
    actual = hashlib.sha256(data).hexdigest()
    if actual != row.sha256:
        return problem(
            ProblemKind.MISMATCH,
            f"sha256 {actual} ({len(data)} bytes), catalog has {row.sha256} ({row.size} bytes)",
        )
    return None
