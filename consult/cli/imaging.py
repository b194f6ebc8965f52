"""The pictures: ``previews status|rebuild`` (where the preview pyramids stand; building them
again) and ``render`` (one frame of a stored instance as a full-resolution lossless PNG).

``render`` goes through the same pixel pipeline as the previews (:mod:`viewer.pixels`), so
a render can be checked by eye or against another renderer (``dcm2pnm +Ww C W``)::

    consult render 1.2.3.4 --frame 0 --window=-600,1500 --out lung.png

A window whose center is negative needs the ``--window=C,W`` spelling (argparse reads a
bare ``-600,...`` as an option).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from consult.cli.command import Commands, with_services
from consult.cli.progress import Progress
from consult.dicom import identifiers
from consult.errors import ConfigurationError, ConsultError
from consult.jobs.queue import JobStatus
from consult.previews.builds import KIND, PreviewStatus, handle_preview
from consult.previews.maintenance import (
    current_versions,
    job_outcomes,
    preview_status,
    queue_rebuild,
)
from consult.services import Services
from consult.studies.export import stored_bytes
from viewer import NoImage, RenderError, Window, encode_png, open_frames

SHOWN_FAILURES = 50


def register(commands: Commands) -> None:
    parser = commands.add_parser("previews", help="preview pyramids: status, rebuild")
    actions = parser.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="previews built, missing, failed (with reasons)")
    status.add_argument("--study", metavar="UID", help="only this study")
    status.set_defaults(run=with_services(cmd_previews_status))
    rebuild = actions.add_parser(
        "rebuild", help="build the previews again; this process works on them too"
    )
    rebuild.add_argument("--study", metavar="UID", help="only this study")
    rebuild.add_argument(
        "--no-wait", action="store_true", help="queue the jobs and leave them to the workers"
    )
    rebuild.add_argument("--progress", action="store_true", help="progress bar even when piped")
    rebuild.set_defaults(run=with_services(cmd_previews_rebuild))

    render = commands.add_parser(
        "render", help="write one frame of a stored instance as a full-resolution lossless PNG"
    )
    render.add_argument("sop_instance_uid", type=uid_argument)
    render.add_argument("--frame", type=int, default=0, help="frame number, from 0 (default 0)")
    render.add_argument(
        "--window",
        type=window_argument,
        metavar="CENTER,WIDTH",
        help="VOI window in modality units, e.g. --window=-600,1500 (default: the dataset's "
        "first window or VOI LUT, else an automatic one)",
    )
    render.add_argument("--version", type=int, help="instance version (default: the current one)")
    render.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    render.set_defaults(run=with_services(cmd_render))


def cmd_previews_status(services: Services, args: argparse.Namespace) -> int:
    with services.catalog.read() as conn:
        status = preview_status(conn, args.study)
    settings = services.settings
    print(f"instances: {status.instances} ({status.without_previews} without previews yet)")
    frames = status.frames
    print(
        "frames: " + ", ".join(f"{s.replace('_', ' ')} {frames.get(s, 0)}" for s in PreviewStatus)
    )
    jobs = status.jobs
    print("preview jobs (all studies): " + ", ".join(f"{s} {jobs.get(s, 0)}" for s in JobStatus))
    print(
        f"on-demand renders: {status.cache_items} of at most {settings.render_cache_items}, "
        f"{status.cache_bytes / 1048576:.1f} of at most {settings.render_cache_mb} MB"
    )
    for failure in status.failures[:SHOWN_FAILURES]:
        print(f"failed: {failure.sop_instance_uid} frame {failure.frame}: {failure.reason}")
    if len(status.failures) > SHOWN_FAILURES:
        print(f"... and {len(status.failures) - SHOWN_FAILURES} more failed frames")
    return 0


def cmd_previews_rebuild(services: Services, args: argparse.Namespace) -> int:
    """Queue a build of every current version and, unless ``--no-wait``, work on preview
    jobs here (beside any running workers) until they are all finished."""
    with services.catalog.read() as conn:
        versions = current_versions(conn, args.study)
    job_ids = queue_rebuild(services, versions)
    print(f"{len(job_ids)} preview job(s) queued for {len(versions)} instance(s)")
    if args.no_wait or not job_ids:
        return 0
    from consult.jobs.worker import Worker

    worker = Worker(services, {KIND: handle_preview})
    bar = Progress(len(job_ids), "rebuilding previews") if Progress.wanted(args.progress) else None
    finished = failed = 0
    while finished < len(job_ids):
        if not worker.run_once():
            time.sleep(0.2)  # the others are with other workers
        with services.catalog.read() as conn:
            finished, failed = job_outcomes(conn, job_ids)
        while bar is not None and bar.done < finished:
            bar.step()
    print(f"{len(job_ids) - failed} rebuilt, {failed} failed (see `consult previews status`)")
    return 1 if failed else 0


def uid_argument(value: str) -> str:
    """A UID by the one rule (:mod:`consult.dicom.identifiers`); argparse reports a bad one."""
    return identifiers.uid(value, repr(value[:80]), error=argparse.ArgumentTypeError)


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


def cmd_render(services: Services, args: argparse.Namespace) -> int:
    blob = stored_bytes(services, args.sop_instance_uid, args.version)
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
