"""Who may see which study: the one access check, and the audit event it writes.

The rule: a user sees a study only if their hospital sent it (``studies.hospital_id``) or
takes part in a consultation on it (:func:`taking_part`: the requesting hospital, or the
target hospital unless it declined). Every route
that returns patient data (pages, previews, API) goes through :func:`require_study`;
:func:`require_consultation` and :func:`require_preview` find the study first and then
call it. A study the user may not see is answered as not found (404, so its existence is
not revealed) and audited as denied. Preview reads are audited once per (session, instance
version) through the audit ``dedup_key``, not once per image.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, and_, or_, select

from consult.access import audit
from consult.access.audit import Actor, Outcome
from consult.access.directory import User
from consult.catalog import Catalog
from consult.catalog.tables import (
    consultations,
    instance_versions,
    instances,
    previews,
    series,
    studies,
)
from consult.dicom.identifiers import is_uid
from consult.errors import ConsultationNotFound, NotFound, StudyNotFound


@dataclass(frozen=True)
class Caller:
    """Who asks, and from which client address."""

    user: User
    client: str

    @property
    def actor(self) -> Actor:
        return Actor.of(self.user, self.client)


@dataclass(frozen=True)
class StudyRef:
    """The study a check granted access to."""

    pk: int
    study_uid: str
    hospital_id: int


@dataclass(frozen=True)
class PreviewRef:
    """A preview image a check granted access to."""

    id: int
    frame: int
    status: str
    object_key: str | None
    media_type: str | None
    version_pk: int
    sha256: str
    study: StudyRef


# The consultation status in which the target hospital takes no part any more
# (ConsultationStatus.DECLINED; consultations/ sits above this package).
_DECLINED = "declined"


def taking_part(hospital_id: int) -> ColumnElement[bool]:
    """SQL condition on ``consultations``: ``hospital_id`` takes part in the consultation.

    The participation rule, here only: the requesting hospital always; the target hospital
    unless it declined (then it takes no part any more). :func:`takes_part` is the same
    rule for a consultation already loaded.
    """
    return or_(
        consultations.c.requesting_hospital_id == hospital_id,
        and_(
            consultations.c.target_hospital_id == hospital_id,
            consultations.c.status != _DECLINED,
        ),
    )


def takes_part(hospital_id: int, *, requesting_id: int, target_id: int, status: str) -> bool:
    """:func:`taking_part` for one consultation's hospitals and status."""
    return hospital_id == requesting_id or (hospital_id == target_id and status != _DECLINED)


def visible_to(hospital_id: int) -> ColumnElement[bool]:
    """SQL condition on ``studies``: the study is visible to users of ``hospital_id``."""
    on_consultation = select(consultations.c.study_pk).where(taking_part(hospital_id))
    return or_(studies.c.hospital_id == hospital_id, studies.c.id.in_(on_consultation))


def _decide(
    conn: Connection, user: User, study_uid: str, via_consultation: int | None
) -> tuple[StudyRef | None, str]:
    if not is_uid(study_uid):
        return None, "malformed study UID"
    row = conn.execute(
        select(studies.c.id, studies.c.study_uid, studies.c.hospital_id).where(
            studies.c.study_uid == study_uid
        )
    ).first()
    if row is None:
        return None, "no such study"
    ref = StudyRef(pk=row.id, study_uid=row.study_uid, hospital_id=row.hospital_id)
    if via_consultation is not None:
        part = conn.execute(
            select(consultations.c.id).where(
                consultations.c.id == via_consultation,
                consultations.c.study_pk == ref.pk,
                taking_part(user.hospital_id),
            )
        ).first()
        if part is None:
            return None, "hospital takes no part in the consultation"
        return ref, ""
    allowed = conn.execute(
        select(studies.c.id).where(studies.c.id == ref.pk, visible_to(user.hospital_id))
    ).first()
    if allowed is None:
        return None, "hospital neither sent the study nor takes part in a consultation on it"
    return ref, ""


def require_study(
    catalog: Catalog,
    user: User,
    study_uid: str,
    *,
    action: str,
    client: str,
    via_consultation: int | None = None,
    audit_object: tuple[str, str] | None = None,
    dedup_key: str | None = None,
) -> StudyRef:
    """The study if ``user`` may see it, else :class:`StudyNotFound`; audited either way.

    ``via_consultation`` narrows the check to one consultation the user's hospital must
    take part in. ``audit_object`` names what is read (default: the study), and
    ``dedup_key`` makes a successful read audited only once.
    """
    object_type, object_id = audit_object or ("study", study_uid[:128])
    with catalog.read() as conn:
        ref, reason = _decide(conn, user, study_uid, via_consultation)
        if ref is not None and dedup_key is not None and audit.seen(conn, dedup_key):
            return ref
    actor = Actor.of(user, client)
    with catalog.write() as conn:
        audit.record(
            conn,
            actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            outcome=Outcome.SUCCESS if ref is not None else Outcome.DENIED,
            detail=reason,
            dedup_key=dedup_key if ref is not None else None,
        )
    if ref is None:
        raise StudyNotFound("study not found")
    return ref


def deny(
    catalog: Catalog,
    user: User,
    client: str,
    action: str,
    object_type: str,
    object_id: str,
    detail: str = "no such object",
) -> None:
    """Audit a refused read of something that does not exist (the caller answers 404)."""
    with catalog.write() as conn:
        audit.record(
            conn,
            Actor.of(user, client),
            action=action,
            object_type=object_type,
            object_id=object_id,
            outcome=Outcome.DENIED,
            detail=detail,
        )


def require_consultation(
    catalog: Catalog, user: User, consultation_id: int, *, action: str, client: str
) -> StudyRef:
    """The consultation's study if ``user``'s hospital takes part in it; else 404, audited."""
    with catalog.read() as conn:
        study_uid = conn.execute(
            select(studies.c.study_uid)
            .join(consultations, consultations.c.study_pk == studies.c.id)
            .where(consultations.c.id == consultation_id)
        ).scalar_one_or_none()
    if study_uid is None:
        deny(catalog, user, client, action, "consultation", str(consultation_id))
        raise ConsultationNotFound("consultation not found")
    try:
        return require_study(
            catalog,
            user,
            study_uid,
            action=action,
            client=client,
            via_consultation=consultation_id,
            audit_object=("consultation", str(consultation_id)),
        )
    except StudyNotFound:
        raise ConsultationNotFound("consultation not found") from None


def require_preview(
    catalog: Catalog, user: User, preview_id: int, *, client: str, session_key: str
) -> PreviewRef:
    """A preview image if ``user`` may see its study; audited once per session and version."""
    with catalog.read() as conn:
        row = conn.execute(
            select(
                previews.c.id,
                previews.c.frame,
                previews.c.status,
                previews.c.object_key,
                previews.c.media_type,
                previews.c.version_pk,
                instance_versions.c.sha256,
                studies.c.study_uid,
            )
            .join(instance_versions, instance_versions.c.id == previews.c.version_pk)
            .join(instances, instances.c.id == instance_versions.c.instance_pk)
            .join(series, series.c.id == instances.c.series_pk)
            .join(studies, studies.c.id == series.c.study_pk)
            .where(previews.c.id == preview_id)
        ).first()
    if row is None:
        deny(catalog, user, client, "preview.read", "preview", str(preview_id))
        raise NotFound("preview not found")
    try:
        study = require_study(
            catalog,
            user,
            row.study_uid,
            action="preview.read",
            client=client,
            audit_object=("instance_version", str(row.version_pk)),
            dedup_key=f"preview:{session_key}:{row.version_pk}",
        )
    except StudyNotFound:
        raise NotFound("preview not found") from None
    return PreviewRef(
        id=row.id,
        frame=row.frame,
        status=row.status,
        object_key=row.object_key,
        media_type=row.media_type,
        version_pk=row.version_pk,
        sha256=row.sha256,
        study=study,
    )
