"""Who takes part: ``hospitals``, ``peers`` (their DICOM nodes) and ``users``."""

from __future__ import annotations

import argparse
import sys

from consult.access import directory
from consult.cli.command import Commands, with_services
from consult.services import Services


def register(commands: Commands) -> None:
    hospitals = commands.add_parser("hospitals", help="manage hospitals").add_subparsers(
        dest="action", required=True
    )
    h_add = hospitals.add_parser("add", help="add a hospital")
    h_add.add_argument("name")
    h_add.set_defaults(run=with_services(cmd_hospitals_add))
    h_list = hospitals.add_parser("list", help="list hospitals")
    h_list.set_defaults(run=with_services(cmd_hospitals_list))

    peers = commands.add_parser("peers", help="manage DICOM peers").add_subparsers(
        dest="action", required=True
    )
    p_add = peers.add_parser("add", help="register a DICOM peer of a hospital")
    p_add.add_argument("--hospital", required=True, help="hospital name")
    p_add.add_argument("--ae", required=True, help="the peer's AE title")
    p_add.add_argument("--host", required=True, help="the peer's host name or address")
    p_add.add_argument("--port", type=int, help="where the peer receives (opinions go there)")
    p_add.set_defaults(run=with_services(cmd_peers_add))

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    u_add = users.add_parser("add", help="add a user")
    u_add.add_argument("username")
    u_add.add_argument("--hospital", required=True)
    u_add.add_argument("--role", required=True, choices=[r.value for r in directory.Role])
    u_add.add_argument("--name", default="", help="display name")
    u_add.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )
    u_add.set_defaults(run=with_services(cmd_users_add))
    for action in ("disable", "enable"):
        u = users.add_parser(action, help=f"{action} a user (takes effect at once)")
        u.add_argument("username")
        u.set_defaults(run=with_services(cmd_users_set_disabled), disabled=action == "disable")


def cmd_hospitals_add(services: Services, args: argparse.Namespace) -> int:
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, args.name)
    print(f"hospital {hospital.name!r} added (id {hospital.id})")
    return 0


def cmd_hospitals_list(services: Services, args: argparse.Namespace) -> int:
    with services.catalog.read() as conn:
        for hospital in directory.list_hospitals(conn):
            print(f"{hospital.id}\t{hospital.name}")
    return 0


def cmd_peers_add(services: Services, args: argparse.Namespace) -> int:
    """Register the peer; with a port, queue the opinions the hospital could not receive."""
    from consult.consultations import opinions

    with services.catalog.write() as conn:
        hospital = directory.get_hospital(conn, args.hospital)
        peer = directory.add_peer(conn, hospital, args.ae, args.host, args.port)
        queued = opinions.queue_undelivered(conn, hospital.id, peer.id) if peer.port else []
    where = f", receives on port {peer.port}" if peer.port else ""
    print(f"peer {peer.ae_title}@{peer.host} added to {hospital.name!r}{where}")
    if queued:
        print(
            f"{len(queued)} signed opinion(s) never delivered (the hospital had no "
            f"peer to send to) queued for delivery"
        )
    return 0


def cmd_users_add(services: Services, args: argparse.Namespace) -> int:
    """Add a user whose password is the first line of standard input."""
    password = sys.stdin.readline().rstrip("\r\n")
    with services.catalog.write() as conn:
        hospital = directory.get_hospital(conn, args.hospital)
        user = directory.add_user(
            conn,
            args.username,
            hospital=hospital,
            role=directory.Role(args.role),
            password=password,
            display_name=args.name,
        )
    print(f"user {user.username!r} ({user.role.value}) added to {hospital.name!r}")
    return 0


def cmd_users_set_disabled(services: Services, args: argparse.Namespace) -> int:
    """Disable (``disabled``) or enable a user; a disabled user's sessions end at once."""
    with services.catalog.write() as conn:
        directory.set_disabled(conn, args.username, args.disabled)
    print(f"user {args.username!r} {args.action}d")
    return 0
