"""Object keys: pure functions, built from hashes, never from raw UIDs.

A UID comes from outside (a DICOM tag); putting it in a path or key would let a hostile
sender choose where we write. Every key component here is a hex digest.
"""

from __future__ import annotations

import hashlib
import re

_HEX64 = re.compile(r"[0-9a-f]{64}")
_BUILD = re.compile(r"[0-9a-f]{1,32}")


def digest(value: str) -> str:
    """SHA-256 hex digest of a string (used to turn an identifier into a key part)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _check_sha(sha256: str) -> str:
    if not _HEX64.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {sha256!r}")
    return sha256


def instance_key(study_uid: str, sop_instance_uid: str, sha256: str) -> str:
    """Key of one stored version of an instance (Part 10 file: our meta + bytes as received).

    One folder per study, not per instance: on the local store every new folder costs a
    ``mkdir`` and two more fsyncs on the ingest path.
    """
    return f"originals/{digest(study_uid)}/{digest(sop_instance_uid)}-{_check_sha(sha256)}.dcm"


def preview_key(sha256: str, frame: int, extension: str) -> str:
    """Key of the preview image of one frame of one instance version."""
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    if extension not in {"png", "jpeg"}:
        raise ValueError(f"extension must be png or jpeg, got {extension!r}")
    return f"previews/{_check_sha(sha256)}/frame-{frame}.{extension}"


def _check_format(extension: str) -> str:
    if extension not in {"png", "jpeg"}:
        raise ValueError(f"extension must be png or jpeg, got {extension!r}")
    return extension


def _check_build(build: str) -> str:
    if not _BUILD.fullmatch(build):
        raise ValueError(f"build must be 1-32 lowercase hex characters, got {build!r}")
    return build


def tiles_key(sha256: str, frame: int, extension: str, build: str) -> str:
    """Key of the tile pack (deep-zoom levels, overview, thumbnail) of one frame of one
    instance version, rendered with the dataset's default window.

    ``build`` (hex) differs for every build, so a rebuilt pack never overwrites the one
    that readers may still be using (and caches keyed by object key stay right).
    """
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    ext = _check_format(extension)
    return f"previews/{_check_sha(sha256)}/frame-{frame}-{_check_build(build)}.{ext}.tiles"


def render_key(sha256: str, frame: int, window: str, extension: str, build: str) -> str:
    """Key of an on-demand render (another window, or lossless tiles) of one frame.

    ``window`` is any text naming the render (e.g. ``"40_400_linear"``); only its digest
    goes into the key.
    """
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    name = digest(window)[:32]
    ext = _check_format(extension)
    return f"renders/{_check_sha(sha256)}/frame-{frame}/{name}-{_check_build(build)}.{ext}.tiles"


def export_key(name: str) -> str:
    """Key of an object we generated ourselves (opinion SR, ...), named by a digest."""
    return f"generated/{digest(name)}.dcm"
