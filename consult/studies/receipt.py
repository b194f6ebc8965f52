"""Arrival tracking: when a study is stable, and the receipt of what arrived.

A study is *stable* once nothing arrived for ``CONSULT_STABLE_SECONDS``: :func:`is_stable` is
the one place that rule lives (pages, API and CLI call it). The receipt lists every series
(count, last arrival) and every version of every instance (size, SHA-256, arrival time), so
the sending side can check that what it sent is what we hold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from consult.catalog import as_utc, utcnow
from consult.catalog.tables import hospitals, instance_versions, instances, series, studies
from consult.errors import StudyNotFound


def stable_at(last_received_at: datetime, stable_seconds: float) -> datetime:
    """When a study whose last instance arrived at ``last_received_at`` becomes stable."""
    return as_utc(last_received_at) + timedelta(seconds=stable_seconds)


def is_stable(last_received_at: datetime, stable_seconds: float, now: datetime) -> bool:
    """A study is stable once nothing arrived for ``stable_seconds`` (the setting
    ``CONSULT_STABLE_SECONDS``); naive datetimes (SQLite) are taken as UTC."""
    return as_utc(now) >= stable_at(last_received_at, stable_seconds)


def is_stable_study(conn: Connection, study_pk: int, stable_seconds: float) -> bool:
    """Whether the study (its row id) is stable now (:func:`is_stable`)."""
    last = conn.execute(
        select(studies.c.last_received_at).where(studies.c.id == study_pk)
    ).scalar_one_or_none()
    if last is None:
        raise StudyNotFound("study not found")
    return is_stable(last, stable_seconds, utcnow())


@dataclass(frozen=True)
class InstanceReceipt:
    sop_instance_uid: str
    instance_number: str
    version: int
    current: bool
    size: int
    sha256: str
    transfer_syntax_uid: str
    calling_ae: str
    received_at: datetime


@dataclass(frozen=True)
class SeriesReceipt:
    series_uid: str
    number: str
    modality: str
    description: str
    instance_count: int
    last_received_at: datetime
    instances: list[InstanceReceipt]


@dataclass(frozen=True)
class Receipt:
    study_uid: str
    sender: str
    description: str
    study_date: str
    first_received_at: datetime
    last_received_at: datetime
    stable: bool
    stable_at: datetime
    stable_seconds: float
    as_of: datetime
    instance_count: int
    version_count: int
    series: list[SeriesReceipt]


def study_receipt(
    conn: Connection, study_uid: str, *, stable_seconds: float, now: datetime | None = None
) -> Receipt:
    """The receipt of one study; :class:`StudyNotFound` for a UID we do not hold."""
    now = as_utc(now or utcnow())
    study = conn.execute(
        select(studies, hospitals.c.name.label("sender"))
        .join(hospitals, hospitals.c.id == studies.c.hospital_id)
        .where(studies.c.study_uid == study_uid)
    ).first()
    if study is None:
        raise StudyNotFound(f"no study {study_uid!r} in the catalog")
    rows = conn.execute(
        select(
            series.c.id.label("series_pk"),
            instances.c.sop_instance_uid,
            instances.c.instance_number,
            instances.c.current_version,
            instance_versions.c.version,
            instance_versions.c.size,
            instance_versions.c.sha256,
            instance_versions.c.transfer_syntax_uid,
            instance_versions.c.calling_ae,
            instance_versions.c.received_at,
        )
        .join(instances, instances.c.series_pk == series.c.id)
        .join(instance_versions, instance_versions.c.instance_pk == instances.c.id)
        .where(series.c.study_pk == study.id)
        .order_by(series.c.id, instances.c.id, instance_versions.c.version)
    ).all()
    by_series: dict[int, list[InstanceReceipt]] = {}
    for r in rows:
        by_series.setdefault(r.series_pk, []).append(
            InstanceReceipt(
                sop_instance_uid=r.sop_instance_uid,
                instance_number=r.instance_number,
                version=r.version,
                current=r.version == r.current_version,
                size=r.size,
                sha256=r.sha256,
                transfer_syntax_uid=r.transfer_syntax_uid,
                calling_ae=r.calling_ae,
                received_at=as_utc(r.received_at),
            )
        )
    series_rows = conn.execute(
        select(series).where(series.c.study_pk == study.id).order_by(series.c.id)
    ).all()
    series_list = [
        SeriesReceipt(
            series_uid=s.series_uid,
            number=s.series_number,
            modality=s.modality,
            description=s.description,
            instance_count=s.instance_count,
            last_received_at=as_utc(s.last_received_at),
            instances=by_series.get(s.id, []),
        )
        for s in sorted(series_rows, key=lambda s: (_number(s.series_number), s.id))
    ]
    return Receipt(
        study_uid=study.study_uid,
        sender=study.sender,
        description=study.description,
        study_date=study.study_date,
        first_received_at=as_utc(study.first_received_at),
        last_received_at=as_utc(study.last_received_at),
        stable=is_stable(study.last_received_at, stable_seconds, now),
        stable_at=stable_at(study.last_received_at, stable_seconds),
        stable_seconds=stable_seconds,
        as_of=now,
        instance_count=sum(s.instance_count for s in series_list),
        version_count=len(rows),
        series=series_list,
    )


def _number(text: str) -> tuple[int, int, str]:
    """Series numbers sort as numbers; blanks and non-numbers after them."""
    return (0, int(text), "") if text.strip().isdigit() else (1, 0, text)


def _time(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


def to_json(receipt: Receipt) -> str:
    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return _time(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return json.dumps(convert(asdict(receipt)), indent=2)


def _table(header: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    for row in rows:
        lines.append(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return [line.rstrip() for line in lines]


def to_text(receipt: Receipt) -> str:
    r = receipt
    if r.stable:
        stable = f"yes (nothing arrived since {_time(r.last_received_at)})"
    else:
        stable = f"no, still arriving (stable at {_time(r.stable_at)} if nothing else arrives)"
    lines = [
        f"Study {r.study_uid}",
        f"  sender:        {r.sender}",
        f"  description:   {r.description or '-'} ({r.study_date or 'no date'})",
        f"  first arrival: {_time(r.first_received_at)}",
        f"  last arrival:  {_time(r.last_received_at)}",
        f"  stable:        {stable}",
        f"  received:      {r.instance_count} instance(s), {r.version_count} version(s), "
        f"{len(r.series)} series",
        "",
    ]
    lines += _table(
        ["Series", "Modality", "Instances", "Last arrival", "Description"],
        [
            [
                s.number or "-",
                s.modality or "-",
                str(s.instance_count),
                _time(s.last_received_at),
                s.description,
            ]
            for s in r.series
        ],
    )
    for s in r.series:
        lines += ["", f"Series {s.number or '-'} ({s.series_uid})"]
        lines += _table(
            ["SOP Instance UID", "Version", "Size", "SHA-256", "Received at"],
            [
                [
                    i.sop_instance_uid,
                    f"{i.version}{'' if i.current else ' (old)'}",
                    str(i.size),
                    i.sha256,
                    _time(i.received_at),
                ]
                for i in s.instances
            ],
            indent="  ",
        )
    return "\n".join(lines)
