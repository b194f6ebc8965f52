"""The demo: a referring and a consulting hospital, their users, and a sample study.

``consult demo``; the study comes from :mod:`consult.dicom.synthetic`. Passwords are
random, printed, and kept (mode 0600) in the data folder so that a second run prints the
same ones; nothing is created twice.
"""

from __future__ import annotations

import argparse
import os
import secrets

from consult.access import directory
from consult.cli.command import Commands, with_services
from consult.dicom.synthetic import dataset_bytes, demo_study
from consult.errors import Conflict
from consult.ingest.pipeline import Origin, ingest
from consult.services import Services

REFERRING = "Referring Hospital"
CONSULTING = "Consulting Hospital"
DEMO_AE = "REFPACS"
DEMO_PACS_PORT = 11113
USERS = (
    ("referrer", REFERRING, directory.Role.REFERRING, "Dr. Rita Referrer"),
    ("specialist", CONSULTING, directory.Role.SPECIALIST, "Dr. Sam Specialist"),
)


def register(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="create the demo hospitals, users and sample study")
    demo.set_defaults(run=with_services(cmd_demo))


def cmd_demo(services: Services, args: argparse.Namespace) -> int:
    """Create what is missing of the demo and print the logins (the same on every run)."""
    settings = services.settings
    creds_path = settings.data_dir / "demo-credentials.txt"
    saved: dict[str, str] = {}
    if creds_path.exists():
        for line in creds_path.read_text().splitlines():
            name, _, password = line.partition(" ")
            saved[name] = password
    with services.catalog.write() as conn:
        referring = directory.get_or_add_hospital(conn, REFERRING)
        directory.get_or_add_hospital(conn, CONSULTING)
        peer = directory.find_peer(conn, DEMO_AE, "127.0.0.1")
        if peer is None:
            peer = directory.add_peer(conn, referring, DEMO_AE, "127.0.0.1", DEMO_PACS_PORT)
        for username, hospital_name, role, display in USERS:
            password = saved.get(username) or secrets.token_urlsafe(12)
            try:
                directory.add_user(
                    conn,
                    username,
                    hospital=directory.get_hospital(conn, hospital_name),
                    role=role,
                    password=password,
                    display_name=display,
                )
            except Conflict:
                if username not in saved:
                    password = "(set before; not known to the demo)"  # noqa: S105
            saved[username] = password
    fd = os.open(creds_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{name} {pw}\n" for name, pw in saved.items())
    origin = Origin(peer.hospital_id, DEMO_AE, "127.0.0.1", 0)
    for ds, ts in demo_study():
        ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    print("Demo ready:")
    print(f"  hospitals: {REFERRING!r} (sends studies) and {CONSULTING!r} (gives opinions)")
    for username, hospital_name, role, _ in USERS:
        print(f"  login {username} / {saved[username]}  ({role.value}, {hospital_name})")
    print(
        f"  DICOM peer {DEMO_AE}@127.0.0.1 may send to AE {settings.ae_title} "
        f"port {settings.dicom_port}; opinions go back to 127.0.0.1:{DEMO_PACS_PORT}"
    )
    return 0
