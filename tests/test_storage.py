"""The object store: the same behaviour from the local folder and from S3 (moto over HTTP)."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from storage import (
    LocalObjectStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    StorageError,
    StorageUnavailable,
    check_key,
)
from storage.keys import digest, export_key, instance_key, preview_key
from tests.support import free_port

SHA = hashlib.sha256(b"x").hexdigest()


# --- the interface, on both stores ---------------------------------------------------------


def test_put_get_head_exists_delete(store: ObjectStore) -> None:
    key = "originals/ab/cd.dcm"
    data = bytes(range(256)) * 40
    assert not store.exists(key)

    store.put(key, data, content_type="application/dicom")

    assert store.get(key) == data
    assert store.head(key) == ObjectInfo(key=key, size=len(data))
    assert store.exists(key)
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.get(key)


def test_get_range(store: ObjectStore) -> None:
    data = b"0123456789"
    store.put("a/range", data)
    assert store.get_range("a/range", 0, 4) == b"0123"
    assert store.get_range("a/range", 3, 2) == b"34"
    assert store.get_range("a/range", 8, 100) == b"89"  # clipped at the end
    assert store.get_range("a/range", 2, 0) == b""


def test_empty_object(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.head("empty").size == 0


def test_overwrite_replaces(store: ObjectStore) -> None:
    store.put("k/v", b"first version")
    store.put("k/v", b"second")
    assert store.get("k/v") == b"second"
    assert store.head("k/v").size == len(b"second")


def test_list_by_prefix(store: ObjectStore) -> None:
    for key in ["p/one", "p/sub/two", "q/three"]:
        store.put(key, key.encode())
    everything = {info.key: info.size for info in store.list()}
    assert everything == {"p/one": 5, "p/sub/two": 9, "q/three": 7}
    assert sorted(info.key for info in store.list("p/")) == ["p/one", "p/sub/two"]
    assert list(store.list("nothing/")) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get("no/such/key"),
        lambda s: s.get_range("no/such/key", 0, 10),
        lambda s: s.head("no/such/key"),
    ],
    ids=["get", "get_range", "head"],
)
def test_missing_key(store: ObjectStore, call: Callable[[ObjectStore], object]) -> None:
    with pytest.raises(ObjectNotFound) as info:
        call(store)
    assert info.value.key == "no/such/key"
    assert isinstance(info.value, StorageError)


def test_delete_missing_is_quiet(store: ObjectStore) -> None:
    store.delete("never/stored")
    assert not store.exists("never/stored")


BAD_KEYS = [
    "",
    "../escape",
    "a/../../etc/passwd",
    "/absolute",
    "back\\slash",
    "a//b",
    "trailing/",
    "./dot",
    "with space",
    "new\nline",
    "nul\x00byte",
    "ümlaut",
    "percent%2e",
    ".hidden",
    "a/.tmp-1234",
    "x" * 513,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"data")
    for call in (store.get, store.head, store.exists, store.delete):
        with pytest.raises(ValueError, match="invalid object key"):
            call(key)
    with pytest.raises(ValueError, match="invalid object key"):
        store.get_range(key, 0, 1)
    assert list(store.list()) == []


def test_good_keys_accepted() -> None:
    for key in ["a", "a/b/c.dcm", "previews/" + SHA + "/frame-0.png", "x_y-z.1", "x" * 512]:
        assert check_key(key) == key


# --- the local folder ------------------------------------------------------------------------


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_local_overwrite_is_atomic(tmp_path: Path) -> None:
    """A reader sees the old bytes or the new bytes, never a mix or a short file."""
    store = LocalObjectStore(tmp_path / "objects")
    size = 1 << 20
    versions = [bytes([n]) * size for n in range(4)]
    store.put("obj", versions[0])
    done = threading.Event()
    seen: set[bytes] = set()

    def read_until_done() -> int:
        reads = 0
        while not done.is_set() or reads == 0:
            data = store.get("obj")
            assert len(data) == size
            assert data.count(data[:1]) == size, "a reader saw a mix of two versions"
            seen.add(data[:1])
            reads += 1
        return reads

    with ThreadPoolExecutor(max_workers=2) as pool:
        readers = [pool.submit(read_until_done) for _ in range(2)]
        try:
            for n in range(40):
                store.put("obj", versions[n % len(versions)])
        finally:
            done.set()
        assert all(r.result(timeout=30) > 0 for r in readers)

    assert store.get("obj") == versions[39 % len(versions)]
    assert seen <= {v[:1] for v in versions}
    assert _temp_files(tmp_path) == []


def test_local_failed_put_leaves_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put("a", b"a file where a folder would go")
    with pytest.raises(StorageError, match="cannot write"):
        store.put("a/b", b"data")
    assert store.get("a") == b"a file where a folder would go"
    assert _temp_files(tmp_path) == []
    assert [info.key for info in store.list()] == ["a"]


def test_local_objects_are_files_under_root(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    store.put("x/y/z.bin", b"payload")
    assert (root / "x" / "y" / "z.bin").read_bytes() == b"payload"


def test_local_stage_then_publish(tmp_path: Path) -> None:
    """The two halves of a put: bytes durable under a temporary name, then under the key
    learnt meanwhile; discarding leaves nothing."""
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    staged = store.stage([b"meta", b"", b"payload"])
    assert list(store.list()) == [] and len(_temp_files(root)) == 1
    staged.publish("a/b/c.dcm")
    assert store.get("a/b/c.dcm") == b"metapayload"
    assert _temp_files(root) == []
    with pytest.raises(RuntimeError, match="already published"):
        staged.publish("a/b/d.dcm")
    store.stage([b"x"]).discard()
    assert _temp_files(root) == []
    assert [info.key for info in store.list()] == ["a/b/c.dcm"]


def test_local_publish_failure_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    store.put("a", b"a file where a folder would go")
    staged = store.stage([b"data"])
    with pytest.raises(StorageError, match="cannot write 'a/b'"):
        staged.publish("a/b")
    with pytest.raises(ValueError, match="invalid object key"):
        store.stage([b"data"]).publish("../escape")
    assert store.get("a") == b"a file where a folder would go"
    assert [info.key for info in store.list()] == ["a"]


def test_local_stale_temporaries_are_removed_at_start(tmp_path: Path) -> None:
    """A crashed writer's temporary file goes when a store opens the folder a day later;
    a fresh one (perhaps another process's write in progress) stays."""
    import os
    import time

    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    old, fresh = store.stage([b"old"]), store.stage([b"fresh"])
    (old_path,) = [p for p in _temp_files(root) if p.read_bytes() == b"old"]
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_path, (two_days_ago, two_days_ago))
    LocalObjectStore(root)
    assert [p.read_bytes() for p in _temp_files(root)] == [b"fresh"]
    fresh.publish("k")
    old.discard()  # already gone: nothing to do
    assert store.get("k") == b"fresh"


# --- S3 (moto's server over HTTP) --------------------------------------------------------------


def _s3(endpoint: str, bucket: str, **options: Any) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint=endpoint,
        bucket=bucket,
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        **options,
    )


def test_s3_put_sends_sha256_checksum(moto_endpoint: str) -> None:
    store = _s3(moto_endpoint, "checksums")
    store.ensure_bucket()
    sent: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        sent.append({k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()})

    store.client.meta.events.register("before-send.s3.PutObject", record)
    data = b"dataset bytes as received" * 100
    expected = base64.b64encode(hashlib.sha256(data).digest()).decode()

    store.put("originals/obj", data)

    assert sent[-1]["x-amz-checksum-sha256"] == expected
    head = store.client.head_object(Bucket="checksums", Key="originals/obj", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected
    store.close()


def test_s3_ensure_bucket_is_idempotent(moto_endpoint: str) -> None:
    store = _s3(moto_endpoint, "twice")
    store.ensure_bucket()
    store.put("k", b"kept")
    store.ensure_bucket()
    assert store.get("k") == b"kept"
    store.close()


def test_s3_missing_bucket_is_an_error_not_a_missing_object(moto_endpoint: str) -> None:
    store = _s3(moto_endpoint, "never-created")
    with pytest.raises(StorageError) as info:
        store.get("k")
    assert not isinstance(info.value, ObjectNotFound)
    with pytest.raises(StorageError):
        store.put("k", b"data")
    store.close()


def _within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; fail unless it finishes before the deadline. Returns its error."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(call)
        error = future.exception(timeout=seconds)
    return error


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.put("k", b"data"),
        lambda s: s.get("k"),
        lambda s: s.head("k"),
        lambda s: list(s.list()),
        lambda s: s.ensure_bucket(),
    ],
    ids=["put", "get", "head", "list", "ensure_bucket"],
)
def test_s3_unreachable_fails_fast(call: Callable[[S3ObjectStore], object]) -> None:
    """A dead endpoint gives StorageUnavailable within seconds (the sender retries)."""
    store = _s3(f"http://127.0.0.1:{free_port()}", "bucket", connect_timeout=1, read_timeout=1)
    error = _within(10, lambda: call(store))
    assert isinstance(error, StorageUnavailable), error
    store.close()


# --- keys ------------------------------------------------------------------------------------

HEX64 = r"[0-9a-f]{64}"
HOSTILE_UIDS = ["../../etc", "/abs", "a\\b", "", "1.2.3\x00", "x" * 1000, "1.2.840.10008.1"]


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_instance_key_never_contains_the_uid(uid: str) -> None:
    key = instance_key(uid, uid, SHA)
    assert re.fullmatch(rf"originals/{HEX64}/{HEX64}-{SHA}\.dcm", key)
    assert check_key(key) == key
    if len(uid) > 3:
        assert uid not in key


def test_instance_keys_are_stable_and_distinct() -> None:
    assert instance_key("1.2.3", "1.2.3.4", SHA) == instance_key("1.2.3", "1.2.3.4", SHA)
    other_sha = hashlib.sha256(b"y").hexdigest()
    keys = {
        instance_key("1.2.3", "1.2.3.4", SHA),
        instance_key("1.2.3", "1.2.3.5", SHA),
        instance_key("1.2.4", "1.2.3.4", SHA),
        instance_key("1.2.3", "1.2.3.4", other_sha),
    }
    assert len(keys) == 4
    assert instance_key("1.2.3", "1.2.3.4", SHA).split("/")[1] == digest("1.2.3")


@pytest.mark.parametrize(
    "sha",
    [SHA.upper(), SHA[:-1], SHA + "0", SHA + "\n", "../" + SHA[3:], "g" * 64, ""],
    ids=["upper", "short", "long", "newline", "dots", "not-hex", "empty"],
)
def test_bad_sha256_refused(sha: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        instance_key("1.2.3", "1.2.3.4", sha)
    with pytest.raises(ValueError, match="sha256"):
        preview_key(sha, 0, "png")


def test_preview_and_export_keys() -> None:
    assert preview_key(SHA, 2, "png") == f"previews/{SHA}/frame-2.png"
    assert check_key(preview_key(SHA, 0, "jpeg"))
    with pytest.raises(ValueError, match="frame"):
        preview_key(SHA, -1, "png")
    with pytest.raises(ValueError, match="extension"):
        preview_key(SHA, 0, "../png")
    key = export_key("../../opinion 1")
    assert re.fullmatch(rf"generated/{HEX64}\.dcm", key)
    assert check_key(key) == key
