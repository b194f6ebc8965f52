"""S3 object store over boto3 (MinIO, AWS, Ceph RGW, moto in tests).

Configured for the ingest path: path-style addressing (MinIO, moto), short connect and
read timeouts and few attempts (a C-STORE sender waiting minutes aborts instead of
retrying), and explicit checksum mode: boto3's default CRC checksums on every PUT are
rejected by some S3-compatible servers, so automatic checksums are off
(``when_required``) and we send the SHA-256 of every body ourselves.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.base import ObjectInfo, check_key
from storage.errors import ObjectNotFound, StorageError, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

_MISSING = {"404", "NoSuchKey", "NotFound"}


def _translate(key: str, exc: Exception) -> StorageError:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return ObjectNotFound(key)
        return StorageError(f"S3 refused {key!r}: {code}")
    return StorageUnavailable(f"S3 unreachable for {key!r}: {type(exc).__name__}")


class S3ObjectStore:
    """Objects in one bucket."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        attempts: int = 2,
    ) -> None:
        config = Config(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # total_max_attempts counts the first try; botocore's max_attempts does not.
            retries={"total_max_attempts": attempts, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )
        self.bucket = bucket
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region,
            config=config,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as exc:
                raise _translate(self.bucket, exc) from exc
        except BotoCoreError as exc:
            raise _translate(self.bucket, exc) from exc

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Upload; returns once the endpoint acknowledged a body matching our SHA-256."""
        check_key(key)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                # With the algorithm named, the endpoint also keeps the checksum (HEAD with
                # ChecksumMode reports it); it still travels as a plain header, not a trailer.
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(key, exc) from exc

    def _get(self, key: str, **extra: Any) -> bytes:
        check_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
            return response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise _translate(key, exc) from exc

    def get(self, key: str) -> bytes:
        return self._get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return self._get(key, Range=f"bytes={start}-{start + length - 1}")

    def head(self, key: str) -> ObjectInfo:
        check_key(key)
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(key, exc) from exc
        return ObjectInfo(key=key, size=int(response["ContentLength"]))

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"], size=int(item["Size"]))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(prefix, exc) from exc

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(key, exc) from exc

    def close(self) -> None:
        self.client.close()
