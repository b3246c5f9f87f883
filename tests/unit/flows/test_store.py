"""One suite, run against both backends: the local folder and S3 (moto's real HTTP server on
loopback, spoken to through the minio SDK exactly as MinIO would be)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from moto.server import ThreadedMotoServer

from flows.errors import ChecksumMismatch, ObjectNotFound, ServiceUnavailable, StoreError
from flows.settings import load_settings
from flows.store import LocalStore, S3Store, open_store
from tests.conftest import free_port

ACCESS, SECRET = "mc-test-access", "mc-test-secret-key"


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("moto_endpoint")
    monkeypatch.setenv("MC_STORE_BACKEND", "s3")
    monkeypatch.setenv("MC_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("MC_S3_BUCKET", f"mc-{os.urandom(4).hex()}")
    monkeypatch.setenv("MC_S3_ACCESS_KEY", ACCESS)
    monkeypatch.setenv("MC_S3_SECRET_KEY", SECRET)
    monkeypatch.setenv("MC_STORE_PART_SIZE_MB", "5")
    return open_store(load_settings())


def test_bytes_round_trip_with_checksum(store):
    data = b"pose maps and latents" * 100
    info = store.put_bytes("datasets/demo/abc/sample.bin", data)
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert store.get_bytes("datasets/demo/abc/sample.bin") == data
    assert store.stat("datasets/demo/abc/sample.bin") == info
    assert store.exists("datasets/demo/abc/sample.bin")
    assert not store.exists("datasets/demo/abc/other.bin")


def test_overwrite_replaces_content_and_checksum(store):
    store.put_bytes("checkpoints/r1/last.pt", b"old")
    new = store.put_bytes("checkpoints/r1/last.pt", b"new content")
    assert store.get_bytes("checkpoints/r1/last.pt") == b"new content"
    assert store.stat("checkpoints/r1/last.pt").sha256 == new.sha256


def test_large_file_streams_both_ways(store, tmp_path):
    # 12 MiB: more than two 5 MiB multipart parts on S3, many chunks locally.
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(12 << 20))
    info = store.put_file("checkpoints/run-1/step-10.pt", src)
    dest = tmp_path / "out" / "big.bin"
    got = store.get_file("checkpoints/run-1/step-10.pt", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert got.sha256 == info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    with store.open("checkpoints/run-1/step-10.pt") as fh:
        assert fh.read(4) == src.read_bytes()[:4]


def test_put_stream_of_unknown_length(store):
    info = store.put_stream("model-repository/3/config.pbtxt", io.BytesIO(b"name: 'x'"))
    assert info.size == 9 and store.get_bytes("model-repository/3/config.pbtxt") == b"name: 'x'"


def test_list_by_prefix_in_key_order(store):
    for key in ["datasets/b/2", "datasets/a/1", "datasets/b/1", "checkpoints/x/1"]:
        store.put_bytes(key, key.encode())
    assert [o.key for o in store.list("datasets/")] == ["datasets/a/1", "datasets/b/1",
                                                       "datasets/b/2"]
    assert [o.key for o in store.list("datasets/b/")] == ["datasets/b/1", "datasets/b/2"]
    assert len(list(store.list())) == 4
    assert all(o.sha256 == hashlib.sha256(o.key.encode()).hexdigest() for o in store.list())


def test_a_prefix_downloads_into_a_folder_and_complete_files_are_kept(store, tmp_path):
    store.put_bytes("pre/a.txt", b"aaa")
    store.put_bytes("pre/sub/b.txt", b"bb")
    store.put_bytes("other/c.txt", b"c")
    got = store.get_prefix("pre/", tmp_path / "dest")
    assert [o.key for o in got] == ["pre/a.txt", "pre/sub/b.txt"]
    assert (tmp_path / "dest/a.txt").read_bytes() == b"aaa"
    assert (tmp_path / "dest/sub/b.txt").read_bytes() == b"bb"
    assert not (tmp_path / "dest/c.txt").exists()
    (tmp_path / "dest/a.txt").write_bytes(b"xyz")  # same size: kept when asked
    store.get_prefix("pre/", tmp_path / "dest", keep_complete=True)
    assert (tmp_path / "dest/a.txt").read_bytes() == b"xyz"
    store.get_prefix("pre/", tmp_path / "dest")
    assert (tmp_path / "dest/a.txt").read_bytes() == b"aaa"
    assert store.get_prefix("nothing/", tmp_path / "none") == []


def test_delete_and_delete_prefix(store):
    store.put_bytes("tmp/a", b"1")
    store.put_bytes("tmp/sub/b", b"2")
    store.put_bytes("keep/c", b"3")
    store.delete("tmp/a")
    store.delete("tmp/a")  # deleting a missing key is fine
    assert not store.exists("tmp/a")
    assert store.delete_prefix("tmp/") == 1
    assert [o.key for o in store.list()] == ["keep/c"]


def test_missing_object_is_a_clear_error(store, tmp_path):
    with pytest.raises(ObjectNotFound, match="no object"):
        store.get_bytes("datasets/none")
    with pytest.raises(ObjectNotFound):
        store.get_file("datasets/none", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b", ".mc-meta/x"])
def test_bad_keys_are_refused(store, key):
    with pytest.raises(StoreError, match="invalid object key"):
        store.put_bytes(key, b"x")


def test_interrupted_write_leaves_nothing_visible(store):
    store.put_bytes("checkpoints/r/last.pt", b"the good one")

    class Exploding(io.RawIOBase):
        def __init__(self):
            self.sent = 0

        def readable(self):
            return True

        def readinto(self, buf):
            if self.sent > 3 << 20:
                raise OSError("disk on fire")
            n = min(len(buf), 1 << 20)
            buf[:n] = b"\0" * n
            self.sent += n
            return n

    for key in ("checkpoints/r/new.pt", "checkpoints/r/last.pt"):
        with pytest.raises(OSError, match="disk on fire"):
            store.put_stream(key, Exploding())
    assert not store.exists("checkpoints/r/new.pt")
    assert store.get_bytes("checkpoints/r/last.pt") == b"the good one"
    assert [o.key for o in store.list()] == ["checkpoints/r/last.pt"]


def _corrupt(store, key: str, data: bytes) -> None:
    """Change an object's bytes behind the store's back, keeping the recorded checksum."""
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)
    else:
        sha = store.stat(key).sha256
        store.client.put_object(bucket_name=store.bucket, object_name=key,
                                data=io.BytesIO(data), length=len(data),
                                metadata={"sha256": sha})


def test_corruption_is_detected_and_no_file_appears(store, tmp_path):
    store.put_bytes("datasets/d/shard-0", b"0123456789")
    _corrupt(store, "datasets/d/shard-0", b"01234567890")
    with pytest.raises(ChecksumMismatch, match="does not match"):
        store.get_bytes("datasets/d/shard-0")
    with pytest.raises(ChecksumMismatch):
        store.get_file("datasets/d/shard-0", tmp_path / "shard")
    assert not (tmp_path / "shard").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mc-tmp")]


def test_s3_credentials_never_show_and_down_endpoint_is_one_line(moto_endpoint):
    store = S3Store(moto_endpoint, "mc-repr", ACCESS, SECRET)
    assert SECRET not in repr(store) and ACCESS not in repr(store)
    with pytest.raises(ServiceUnavailable, match="unreachable.*MC_S3_ENDPOINT"):
        S3Store(f"127.0.0.1:{free_port()}", "mc-down", ACCESS, SECRET)


def test_s3_backend_needs_an_endpoint(monkeypatch):
    monkeypatch.setenv("MC_STORE_BACKEND", "s3")
    with pytest.raises(StoreError, match="MC_S3_ENDPOINT"):
        open_store(load_settings())
