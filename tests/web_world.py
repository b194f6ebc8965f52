"""A small world for the web tests: three hospitals, their users, a study sent by the first.

- North (the referring hospital) sent a CT study over DICOM; its PACS is a destination peer.
- South (the consulting hospital) has a specialist who answers.
- East is unrelated: its users must not see North's study.

Studies are ingested with the real ingest path and previews rendered by the real worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select
from starlette.testclient import TestClient

from consult.access import directory
from consult.access.directory import Hospital, Role
from consult.catalog.tables import consultations, previews
from consult.cli.servers import job_handlers
from consult.ingest.pipeline import Origin, StoredInstance, ingest_file
from consult.jobs.worker import Worker
from consult.services import Services
from consult.web.app import create_app
from tests.support import sample

PASSWORD = "correct horse battery"
CT = "pydicom__CT_small.dcm"
MR = "pydicom__MR_small_implicit.dcm"

# username -> (hospital key, role)
USERS: dict[str, tuple[str, Role]] = {
    "ref_north": ("north", Role.REFERRING),
    "spec_north": ("north", Role.SPECIALIST),
    "admin_north": ("north", Role.ADMIN),
    "spec_south": ("south", Role.SPECIALIST),
    "ref_south": ("south", Role.REFERRING),
    "ref_east": ("east", Role.REFERRING),
    "spec_east": ("east", Role.SPECIALIST),
}


@dataclass
class World:
    services: Services
    hospitals: dict[str, Hospital]
    study_uid: str = ""
    stored: list[StoredInstance] = field(default_factory=list)

    def origin(self, key: str) -> Origin:
        return Origin(
            hospital_id=self.hospitals[key].id,
            calling_ae=f"{key.upper()}_PACS",
            peer_host="127.0.0.1",
            peer_port=40000,
        )

    def ingest(self, path: Path, key: str = "north") -> StoredInstance:
        stored = ingest_file(self.services, path, origin=self.origin(key))
        self.stored.append(stored)
        return stored

    def run_jobs(self) -> int:
        worker = Worker(self.services, job_handlers())
        ran = 0
        while worker.run_once():
            ran += 1
        return ran

    def preview_ids(self) -> list[int]:
        with self.services.catalog.read() as conn:
            return [int(r) for r in conn.execute(select(previews.c.id)).scalars()]

    def consultation_ids(self) -> list[int]:
        with self.services.catalog.read() as conn:
            return [int(r) for r in conn.execute(select(consultations.c.id)).scalars()]

    @contextmanager
    def client(self, username: str | None = None) -> Iterator[TestClient]:
        """A browser-like client, logged in as ``username`` (through the API) if given."""
        with TestClient(create_app(self.services), follow_redirects=False) as client:
            if username is not None:
                login(client, username)
            yield client


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the API; returns the CSRF token (also kept in client.headers)."""
    response = client.post("/api/session", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token = str(response.json()["csrf_token"])
    client.headers["X-CSRF-Token"] = token
    return token


@contextmanager
def cheap_hashing() -> Iterator[None]:
    """Create users with light argon2 parameters (verification reads them from the hash).

    Production parameters cost about half a second per hash on a test machine; seven users
    per test would dominate the suite.
    """
    saved = directory._hasher
    directory._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    try:
        yield
    finally:
        directory._hasher = saved


def build_world(services: Services, *, with_study: bool = True) -> World:
    with services.catalog.write() as conn, cheap_hashing():
        hospitals = {
            "north": directory.add_hospital(conn, "North Referring Hospital"),
            "south": directory.add_hospital(conn, "South Specialist Hospital"),
            "east": directory.add_hospital(conn, "East Unrelated Hospital"),
        }
        for username, (key, role) in USERS.items():
            directory.add_user(
                conn,
                username,
                hospital=hospitals[key],
                role=role,
                password=PASSWORD,
                display_name=f"Dr {username}",
            )
        directory.add_peer(conn, hospitals["north"], "NORTH_PACS", "127.0.0.1", 40104)
        directory.add_peer(conn, hospitals["north"], "NORTH_MOD", "127.0.0.2")
    world = World(services=services, hospitals=hospitals)
    if with_study:
        world.study_uid = world.ingest(sample(CT)).study_uid
        world.run_jobs()
    return world


def hostile_copy(tmp_path: Path, name: str, **changes: Any) -> Path:
    """A copy of a sample as a new study (fresh UIDs) with some attributes changed."""
    ds = dcmread(sample(name))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = tmp_path / f"changed-{name}"
    ds.save_as(out)
    return out


def request_consultation(client: TestClient, world: World, **overrides: Any) -> int:
    body = {
        "study_uid": world.study_uid,
        "target_hospital_id": world.hospitals["south"].id,
        "question": "Is this a fracture?",
        "urgency": "urgent",
        **overrides,
    }
    response = client.post("/api/consultations", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])
