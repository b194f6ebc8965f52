"""Local-folder object store: the embedded default. Writes are atomic and fsynced."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from storage.base import ObjectInfo, check_key
from storage.errors import ObjectNotFound, StorageError

_counter = itertools.count()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore:
    """Objects as files under ``root``; the key is the relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a crashed writer left (over a day old: no live write is)."""
        cutoff = time.time() - 86400
        for tmp in self.root.glob(".tmp-*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                continue

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write to a temporary file, fsync it, rename it into place, fsync the folder."""
        check_key(key)
        self.stage([data]).publish(key)

    def stage(self, parts: Sequence[bytes]) -> StagedObject:
        """Write ``parts`` (one after another) to a temporary file and fsync it.

        The first half of a put, for callers that learn the key only later (a key made of
        the content's hash can be computed while the bytes go to disk): ``publish(key)``
        finishes the put, ``discard()`` forgets it. Raises StorageError.
        """
        # A name unique to this process and write (cheaper than mkstemp's retries), in the
        # root: the same file system as every key, and never a key (keys hold no ".x").
        tmp = self.root / f".tmp-{os.getpid()}-{next(_counter)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                try:
                    for part in parts:
                        view = memoryview(part)
                        while view:
                            view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write a staged object: {exc.strerror or exc}") from exc
        return StagedObject(self, tmp)

    def _publish(self, tmp: Path, key: str) -> None:
        path = self._path(key)
        try:
            try:
                self._make_dirs(path.parent)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r}: {exc.strerror or exc}") from exc

    def _make_dirs(self, folder: Path) -> None:
        """Create missing folders durably: a new folder's entry lives in its parent, which
        must be fsynced too, or a power loss can take the folder and its files with it."""
        if folder.is_dir():
            return
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue  # a concurrent writer made it; it fsyncs the parent itself
            _fsync_dir(new.parent)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc.strerror or exc}") from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with self._path(key).open("rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc.strerror or exc}") from exc

    def head(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(key=key, size=self._path(key).stat().st_size)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in sorted(files):
                if name.startswith(".tmp-"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield ObjectInfo(key=key, size=full.stat().st_size)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def close(self) -> None:
        return None


class StagedObject:
    """Bytes durable under a temporary name in a local store, not yet under their key."""

    def __init__(self, store: LocalObjectStore, tmp: Path) -> None:
        self._store = store
        self._tmp: Path | None = tmp

    def publish(self, key: str) -> None:
        """Move the bytes under ``key`` (replacing what was there) and make that durable."""
        check_key(key)
        if self._tmp is None:
            raise RuntimeError("staged object already published or discarded")
        tmp, self._tmp = self._tmp, None
        self._store._publish(tmp, key)

    def discard(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
