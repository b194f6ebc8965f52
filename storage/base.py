"""The object store interface: put, get, range get, head, list, delete."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    """What ``head`` and ``list`` report about a stored object."""

    key: str
    size: int


class ObjectStore(Protocol):
    """A flat key -> bytes store. Knows nothing of DICOM.

    ``put`` returns only once the object is durable (fsynced on disk, or acknowledged by
    the S3 endpoint); it raises :class:`storage.errors.StorageError` otherwise.
    """

    def put(self, key: str, data: bytes, *, content_type: str = ...) -> None: ...

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, start: int, length: int) -> bytes: ...

    def head(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


def check_key(key: str) -> str:
    """Refuse keys that could escape a folder or confuse a backend.

    A key is 1-512 ASCII letters, digits and ``-_./``, made of non-empty parts that do not
    start with a dot (no ``..``, and no name the local store keeps for its temporary files).
    Non-ASCII letters are refused too: file systems that normalise Unicode could map two
    keys to one file.
    """
    if (
        not key
        or len(key) > 512
        or not all((c.isascii() and c.isalnum()) or c in "-_./" for c in key)
        or any(not part or part.startswith(".") for part in key.split("/"))
    ):
        raise ValueError(f"invalid object key {key!r}")
    return key
