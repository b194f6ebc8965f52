"""Errors of the object store.

    StorageError               the store could not do what was asked (retry later)
    ├── ObjectNotFound         no object under that key
    └── StorageUnavailable     the store did not answer in time or refused the request

Backend exceptions (botocore's ``ClientError``, ``OSError``) are translated here and never
leak upward.
"""

from __future__ import annotations


class StorageError(Exception):
    """The object store failed; the operation may succeed if retried."""


class ObjectNotFound(StorageError):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object under key {key!r}")
        self.key = key


class StorageUnavailable(StorageError):
    """The store could not be reached, timed out, or refused the request."""
