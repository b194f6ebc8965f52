"""Object keys: pure functions, built from hashes, never from raw UIDs.

A UID comes from outside (a DICOM tag); putting it in a path or key would let a hostile
sender choose where we write. Every key component here is a hex digest.
"""

from __future__ import annotations

import hashlib
import re

_HEX64 = re.compile(r"[0-9a-f]{64}")


def digest(value: str) -> str:
    """SHA-256 hex digest of a string (used to turn an identifier into a key part)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _check_sha(sha256: str) -> str:
    if not _HEX64.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {sha256!r}")
    return sha256


def instance_key(study_uid: str, sop_instance_uid: str, sha256: str) -> str:
    """Key of one stored version of an instance (Part 10 file: our meta + bytes as received)."""
    return f"originals/{digest(study_uid)}/{digest(sop_instance_uid)}/{_check_sha(sha256)}.dcm"


def preview_key(sha256: str, frame: int, extension: str) -> str:
    """Key of the preview image of one frame of one instance version."""
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    if extension not in {"png", "jpeg"}:
        raise ValueError(f"extension must be png or jpeg, got {extension!r}")
    return f"previews/{_check_sha(sha256)}/frame-{frame}.{extension}"


def export_key(name: str) -> str:
    """Key of an object we generated ourselves (opinion SR, ...), named by a digest."""
    return f"generated/{digest(name)}.dcm"
