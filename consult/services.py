"""The shared resources of a process: settings, catalog and object store."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from consult.catalog import Catalog
from consult.jobs import doorbell
from consult.settings import Settings
from storage import LocalObjectStore, ObjectStore, S3ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    """The object store the settings name: S3 when an endpoint is set, else the local folder."""
    if settings.s3_endpoint:
        s3 = S3ObjectStore(
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            # Short, so that a C-STORE answers 0xA700 before the sender gives up.
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            attempts=settings.s3_attempts,
        )
        s3.ensure_bucket()
        return s3
    return LocalObjectStore(settings.objects_dir)


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    store: ObjectStore

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        catalog = Catalog(
            settings.catalog_url, busy_timeout_ms=int(settings.catalog_lock_timeout * 1000)
        )
        if migrate:
            catalog.migrate()
        catalog.after_jobs_queued = functools.partial(doorbell.ring, settings.doorbells_dir)
        return cls(settings=settings, catalog=catalog, store=open_store(settings))

    def close(self) -> None:
        self.store.close()
        self.catalog.dispose()
