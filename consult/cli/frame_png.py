"""``consult render``: one frame of a stored instance as a full-resolution lossless PNG.

It goes through the same pixel pipeline as the previews (:mod:`viewer.pixels`), so a render
can be checked by eye or against another renderer (``dcm2pnm +Ww C W``)::

    consult render 1.2.3.4 --frame 0 --window=-600,1500 --out lung.png

A window whose center is negative needs the ``--window=C,W`` spelling (argparse reads a
bare ``-600,...`` as an option).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy import select

from consult.catalog.tables import instance_versions, instances
from consult.dicom import identifiers
from consult.errors import ConfigurationError, ConsultError, NotFound
from consult.services import Services
from viewer import NoImage, RenderError, Window, encode_png, open_frames


def window_argument(value: str) -> Window:
    """``CENTER,WIDTH`` (modality units) -> a LINEAR window; argparse reports what is wrong."""
    parts = value.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{value!r} is not CENTER,WIDTH (e.g. 40,400)")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: CENTER and WIDTH must be numbers") from None
    try:
        return Window(center, width)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def uid_argument(value: str) -> str:
    """A UID by the one rule (:mod:`consult.dicom.identifiers`); argparse reports a bad one."""
    return identifiers.uid(value, repr(value[:80]), error=argparse.ArgumentTypeError)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "render", help="write one frame of a stored instance as a full-resolution lossless PNG"
    )
    p.add_argument("sop_instance_uid", type=uid_argument)
    p.add_argument("--frame", type=int, default=0, help="frame number, from 0 (default 0)")
    p.add_argument(
        "--window",
        type=window_argument,
        metavar="CENTER,WIDTH",
        help="VOI window in modality units, e.g. --window=-600,1500 (default: the dataset's "
        "first window or VOI LUT, else an automatic one)",
    )
    p.add_argument("--version", type=int, help="instance version (default: the current one)")
    p.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    p.set_defaults(handler=cmd_render)


def load_version(services: Services, sop_instance_uid: str, version: int | None) -> bytes:
    """The stored Part 10 bytes of an instance's current (or given) version."""
    with services.catalog.read() as conn:
        inst = conn.execute(
            select(instances.c.id, instances.c.current_version).where(
                instances.c.sop_instance_uid == sop_instance_uid
            )
        ).first()
        if inst is None:
            raise NotFound(f"no instance {sop_instance_uid!r} in the catalog")
        wanted = inst.current_version if version is None else version
        row = conn.execute(
            select(instance_versions.c.object_key).where(
                instance_versions.c.instance_pk == inst.id,
                instance_versions.c.version == wanted,
            )
        ).first()
        if row is None:
            known = conn.scalars(
                select(instance_versions.c.version)
                .where(instance_versions.c.instance_pk == inst.id)
                .order_by(instance_versions.c.version)
            ).all()
            raise NotFound(
                f"instance {sop_instance_uid!r} has no version {wanted} "
                f"(versions: {', '.join(str(v) for v in known)})"
            )
    return services.store.get(row.object_key)


def cmd_render(services: Services, args: Any) -> int:
    blob = load_version(services, args.sop_instance_uid, args.version)
    try:
        source = open_frames(blob)
        if not 0 <= args.frame < source.frames:
            raise ConfigurationError(
                f"frame {args.frame} is out of range: the instance has {source.frames} "
                f"frame(s), numbered from 0"
            )
        pixels = source.render(args.frame, args.window)
        window = None if source.is_color else (args.window or source.default_window(args.frame))
    except NoImage as exc:
        raise ConsultError(f"nothing to render: {exc}") from None
    except RenderError as exc:
        raise ConsultError(f"cannot render: {exc}") from None
    try:
        args.out.write_bytes(encode_png(pixels, compress_level=6))
    except OSError as exc:
        raise ConfigurationError(f"cannot write {args.out}: {exc.strerror}") from None
    height, width = pixels.shape[:2]
    kind = "RGB" if pixels.ndim == 3 else "greyscale"
    how = ""
    if isinstance(window, Window):
        how = f", window {window.center:g}/{window.width:g} {window.function}"
    elif window is not None:
        how = f", VOI LUT {window.explanation or ''}".rstrip()
    print(f"{args.out}: frame {args.frame} of {source.frames}, {width}x{height} {kind}{how}")
    return 0
