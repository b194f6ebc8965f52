"""Object storage for consult: one interface, a local folder and S3. Knows nothing of DICOM."""

from storage.base import ObjectInfo, ObjectStore, check_key
from storage.errors import ObjectNotFound, StorageError, StorageUnavailable
from storage.local import LocalObjectStore
from storage.s3 import S3ObjectStore

__all__ = [
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StorageError",
    "StorageUnavailable",
    "check_key",
]
