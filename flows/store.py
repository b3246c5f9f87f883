"""Object store: one interface, two backends (a local folder, MinIO/S3 through the minio SDK).

Keys are `/`-separated paths such as `datasets/<name>/<digest>/shard-00000.tar`,
`checkpoints/<run_id>/step-100.pt`, `model-repository/<version>/...`.

Guarantees, on both backends:
- writes are atomic: a reader sees the whole new object under its key or nothing (local:
  write to a temporary file in the same folder, fsync, rename; S3: a PUT or a completed
  multipart upload is atomic by the protocol);
- every object carries the SHA-256 of its content, recorded at write time, and reads into
  files verify it (`ChecksumMismatch`) before the file appears at its destination;
- large objects stream in chunks; nothing is read whole into memory unless asked
  (`get_bytes`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flows.errors import ChecksumMismatch, ObjectNotFound, ServiceUnavailable, StoreError
from flows.settings import Settings

CHUNK = 1 << 20  # 1 MiB
# A setting's value naming an object-store key or prefix instead of a local path
# (MC_CURATE__VIDEOS, MC_TRAIN__WAN_WEIGHTS): `store:<key>`.
STORE_PREFIX = "store:"
SHA_META = "sha256"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_key(key: str) -> str:
    """Keys are relative, normalised, and cannot climb out of the store."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}: use a relative path like 'datasets/x/y'")
    if any(p.startswith(".mc-") for p in parts):
        raise StoreError(f"invalid object key {key!r}: '.mc-' names are reserved by the store")
    return key


def _check_prefix(prefix: str) -> str:
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


class ObjectStore(ABC):
    """What every layer uses to keep datasets, checkpoints and model repositories."""

    # -- writing
    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        """Upload a local file, streaming; atomic under `key`."""

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return self.put_stream(key, io.BytesIO(data))

    def put_stream(self, key: str, stream: BinaryIO) -> ObjectInfo:
        """Upload from a stream of unknown length: spooled to disk past 64 MiB, then put."""
        with tempfile.TemporaryDirectory(prefix="mc-put-") as tmp:
            path = Path(tmp) / "object"
            with open(path, "wb") as fh:
                shutil.copyfileobj(stream, fh, CHUNK)
            return self.put_file(key, path)

    # -- reading
    @abstractmethod
    def open(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A readable binary stream of the object (not verified; use get_file for that)."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and recorded checksum; `ObjectNotFound` if there is no such key."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            data = fh.read()
        self._verify(key, hashlib.sha256(data).hexdigest())
        return data

    def get_file(self, key: str, dest: str | Path) -> ObjectInfo:
        """Download to `dest`, streaming; `dest` appears only once its checksum matches."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with (
            _atomic_file(dest) as out,
            self.open(key) as src,
        ):
            for chunk in iter(lambda: src.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            info = self._verify(key, digest.hexdigest())
        return info

    def get_prefix(self, prefix: str, dest: str | Path, *,
                   keep_complete: bool = False) -> list[ObjectInfo]:
        """Every object under `prefix` into `dest`, at its key relative to the prefix, each
        checked like `get_file`; returns them (empty: nothing is there). keep_complete: a file
        already in place with the object's size is not fetched again (get_file writes
        atomically, so a file that is there is whole)."""
        objects = list(self.list(prefix))
        for info in objects:
            path = Path(dest) / info.key[len(prefix):]
            if not (keep_complete and path.is_file() and path.stat().st_size == info.size):
                self.get_file(info.key, path)
        return objects

    def _verify(self, key: str, sha: str) -> ObjectInfo:
        info = self.stat(key)
        if info.sha256 and info.sha256 != sha:
            raise ChecksumMismatch(
                f"{self.uri(key)}: content sha256 {sha[:12]}… does not match the recorded "
                f"{info.sha256[:12]}…; the object is corrupt, write it again"
            )
        return info

    # -- listing and removal
    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except ObjectNotFound:
            return False

    def delete_prefix(self, prefix: str) -> int:
        keys = [o.key for o in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """A URI naming the object (file://… or s3://bucket/…), for logs and MLflow tags."""


@contextlib.contextmanager
def _atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `dest`, then rename: all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".mc-tmp-{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class LocalStore(ObjectStore):
    """A folder. Checksums live in `.mc-meta/<key>.json` sidecars, written before the data
    is renamed into place, so a visible object always has its checksum."""

    META = ".mc-meta"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / self.META / f"{check_key(key)}.json"

    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        src, dest, meta = Path(path), self._path(key), self._meta_path(key)
        if not src.is_file():
            raise StoreError(f"cannot upload {src}: not a file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        meta.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with _atomic_file(dest) as out:
            with open(src, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            info = ObjectInfo(key, size, digest.hexdigest())
            with _atomic_file(meta) as mfh:
                mfh.write(json.dumps({"size": size, SHA_META: info.sha256}).encode())
        return info

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        try:
            fh = open(self._path(key), "rb")  # noqa: SIM115 - closed by the with below
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"no object {self.uri(key)}") from None
        with fh:
            yield fh

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {self.uri(key)}")
        size = path.stat().st_size
        try:
            sha = json.loads(self._meta_path(key).read_text())[SHA_META]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            # A file put there by hand has no sidecar; its checksum is its content's.
            sha = sha256_file(path)
        return ObjectInfo(key, size, sha)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".mc-")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(".mc-"):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            yield self.stat(key)

    def delete(self, key: str) -> None:
        for path in (self._path(key), self._meta_path(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        # prune now-empty folders up to the root
        parent = self._path(key).parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def uri(self, key: str = "") -> str:
        return (self.root / key).as_uri() if key else self.root.as_uri()


class S3Store(ObjectStore):
    """MinIO or any S3 API through the minio SDK. The SHA-256 rides along as user metadata."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str | None,
        secret_key: str | None,
        secure: bool = False,
        region: str | None = None,
        part_size: int = 16 << 20,
    ):
        from minio import Minio

        self.endpoint, self.bucket, self.part_size = endpoint, bucket, part_size
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
        )
        self._call(self._ensure_bucket)

    def __repr__(self) -> str:  # never show credentials
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    def _ensure_bucket(self) -> None:
        if not self.client.bucket_exists(bucket_name=self.bucket):
            self.client.make_bucket(bucket_name=self.bucket)

    def _call(self, fn, *args, **kwargs):
        """Run an SDK call, turning connection failures into one actionable message."""
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                raise ObjectNotFound(f"no object {self.uri(exc.object_name or '')}") from None
            raise StoreError(f"S3 error at {self.endpoint}: {exc.code}: {exc.message}") from None
        except (HTTPError, OSError) as exc:
            raise ServiceUnavailable(
                f"object store at {self.endpoint} is unreachable ({type(exc).__name__}); "
                "check MC_S3_ENDPOINT, or unset MC_STORE_BACKEND to use the local folder"
            ) from None

    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"cannot upload {path}: not a file")
        sha = sha256_file(path)
        self._call(
            self.client.fput_object,
            bucket_name=self.bucket,
            object_name=check_key(key),
            file_path=str(path),
            metadata={SHA_META: sha},
            part_size=self.part_size,
        )
        return ObjectInfo(key, path.stat().st_size, sha)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        sha = hashlib.sha256(data).hexdigest()
        self._call(
            self.client.put_object,
            bucket_name=self.bucket,
            object_name=check_key(key),
            data=io.BytesIO(data),
            length=len(data),
            metadata={SHA_META: sha},
        )
        return ObjectInfo(key, len(data), sha)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        resp = self._call(self.client.get_object, bucket_name=self.bucket,
                          object_name=check_key(key))
        try:
            yield resp
        finally:
            resp.close()
            resp.release_conn()

    def stat(self, key: str) -> ObjectInfo:
        st = self._call(self.client.stat_object, bucket_name=self.bucket,
                        object_name=check_key(key))
        meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
        return ObjectInfo(key, st.size, meta.get(f"x-amz-meta-{SHA_META}"))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        objects = self._call(
            lambda: list(self.client.list_objects(
                bucket_name=self.bucket, prefix=prefix or None, recursive=True))
        )
        for obj in sorted(objects, key=lambda o: o.object_name):
            yield self.stat(obj.object_name)

    def delete(self, key: str) -> None:
        self._call(self.client.remove_object, bucket_name=self.bucket,
                   object_name=check_key(key))

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings name: the local folder under MC_HOME, or MinIO/S3."""
    if settings.store_backend == "local":
        return LocalStore(settings.store_root)
    if not settings.s3_endpoint:
        raise StoreError("MC_STORE_BACKEND=s3 needs MC_S3_ENDPOINT (host:port of MinIO/S3)")

    def secret(value):
        return value.get_secret_value() if value else None

    return S3Store(
        endpoint=settings.s3_endpoint,
        bucket=settings.s3_bucket,
        access_key=secret(settings.s3_access_key),
        secret_key=secret(settings.s3_secret_key),
        secure=settings.s3_secure,
        region=settings.s3_region,
        part_size=settings.store_part_size_mb << 20,
    )
