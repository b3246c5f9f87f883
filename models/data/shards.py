"""Dataset shards: tar files of samples, streamed in order (WebDataset-style layout).

A sample is a dict:
    key          str, unique in the dataset
    frames       (T, H, W, 3) uint8 RGB clip
    keypoints    (T, 133, 4) float32, models.keypoints format
    references   (K, H, W, 3) uint8, K >= 1 reference images of the character
    reference_keypoints  (K, 133, 4) float32, the references' keypoints, optional
    camera       (T, 3) float32 per-frame camera (pan_x, pan_y, zoom), optional
    annotations  dict: caption, action_phrase, motion_intensity, camera_move, identity_id,
                 motion_id, source, split, scores… (JSON-serialisable)

In a shard each sample is two members, `<key>.npz` (arrays, compressed: lossless, so
synthetic ground truth stays exact) and `<key>.json` (annotations). Samples that share a
`motion_id` are written next to each other, so a streaming reader can form cross-identity
pairs without random access.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from models.errors import InvalidInput
from models.keypoints import validate

ARRAYS = ("frames", "keypoints", "references", "reference_keypoints", "camera")


def check_sample(sample: dict) -> dict:
    """Validate shapes and types before a sample is written; returns it."""
    missing = {"key", "frames", "keypoints", "references", "annotations"} - sample.keys()
    if missing:
        raise InvalidInput(f"sample is missing {sorted(missing)}")
    key = sample["key"]
    if not key or "/" in key or "." in key:
        raise InvalidInput(f"sample key {key!r} must be non-empty without '/' or '.'")
    frames, refs = sample["frames"], sample["references"]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInput(f"{key}: frames must be (T, H, W, 3) uint8, got {frames.shape} "
                           f"{frames.dtype}")
    if refs.dtype != np.uint8 or refs.ndim != 4 or refs.shape[-1] != 3 or len(refs) == 0:
        raise InvalidInput(f"{key}: references must be (K>=1, H, W, 3) uint8, got {refs.shape}")
    kps = validate(sample["keypoints"])
    if len(kps) != len(frames):
        raise InvalidInput(f"{key}: {len(kps)} keypoint frames for {len(frames)} video frames")
    if sample.get("reference_keypoints") is not None and \
            len(validate(sample["reference_keypoints"])) != len(refs):
        raise InvalidInput(f"{key}: reference_keypoints must have one (133, 4) array per "
                           f"reference ({len(refs)})")
    return sample


def encode_sample(sample: dict) -> tuple[bytes, bytes]:
    """(npz bytes, json bytes) of a sample."""
    check_sample(sample)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: sample[k] for k in ARRAYS if sample.get(k) is not None})
    meta = json.dumps(sample["annotations"], sort_keys=True, default=json_default).encode()
    return buf.getvalue(), meta


def decode_sample(key: str, npz: bytes, meta: bytes) -> dict:
    with np.load(io.BytesIO(npz)) as arrays:
        sample = {k: arrays[k] for k in arrays.files}
    sample["key"] = key
    sample["annotations"] = json.loads(meta)
    return sample


def sample_digest(sample: dict) -> str:
    """Content hash of a sample (arrays and annotations), independent of compression."""
    digest = hashlib.sha256(sample["key"].encode())
    for name in ARRAYS:
        if sample.get(name) is not None:
            arr = np.ascontiguousarray(sample[name])
            digest.update(f"{name}{arr.dtype}{arr.shape}".encode())
            digest.update(arr.tobytes())
    digest.update(json.dumps(sample["annotations"], sort_keys=True,
                             default=json_default).encode())
    return digest.hexdigest()


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


@dataclass
class ShardInfo:
    path: Path
    keys: list[str] = field(default_factory=list)
    size: int = 0


class ShardWriter:
    """Writes samples into `<dir>/<prefix>-00000.tar`, … starting a new shard once one
    passes `max_bytes`. A sample is never split across shards."""

    def __init__(self, directory: str | Path, max_bytes: int = 256 << 20, prefix: str = "shard"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.prefix = max_bytes, prefix
        self.shards: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None

    def write(self, sample: dict, may_split: bool = True) -> None:
        """Append a sample; `may_split=False` keeps it in the current shard (used to keep a
        cross-identity group together)."""
        npz, meta = encode_sample(sample)
        if self._tar is None or (may_split and self.shards[-1].size >= self.max_bytes):
            self._open_next()
        for suffix, payload in ((".npz", npz), (".json", meta)):
            info = tarfile.TarInfo(sample["key"] + suffix)
            info.size = len(payload)
            self._tar.addfile(info, io.BytesIO(payload))
        self.shards[-1].keys.append(sample["key"])
        self.shards[-1].size += len(npz) + len(meta) + 1024  # + tar headers

    def _open_next(self) -> None:
        self._close_current()
        path = self.directory / f"{self.prefix}-{len(self.shards):05d}.tar"
        self._tar = tarfile.open(path, "w")  # noqa: SIM115 - closed in _close_current
        self.shards.append(ShardInfo(path))

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            self.shards[-1].size = self.shards[-1].path.stat().st_size

    def close(self) -> list[ShardInfo]:
        self._close_current()
        return self.shards

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_shards(samples: Iterable[dict], directory: str | Path,
                 max_bytes: int = 256 << 20, presorted: bool = False) -> list[ShardInfo]:
    """Write samples grouped by `motion_id`; a group never spans two shards. `presorted`:
    the samples already come grouped (a generator need not be held in memory to sort)."""

    def group(sample: dict) -> str:
        return str(sample["annotations"].get("motion_id", sample["key"]))

    previous = None
    with ShardWriter(directory, max_bytes=max_bytes) as writer:
        for sample in samples if presorted else sorted(samples, key=group):
            writer.write(sample, may_split=group(sample) != previous)
            previous = group(sample)
    return writer.shards


def iter_shard(stream: BinaryIO) -> Iterator[dict]:
    """Samples of one shard, read as a stream (no seeking: works on an S3 response)."""
    pending: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, suffix = member.name.rpartition(".")
            data = tar.extractfile(member).read()
            parts = pending.setdefault(key, {})
            parts[suffix] = data
            if {"npz", "json"} <= parts.keys():
                del pending[key]
                yield decode_sample(key, parts["npz"], parts["json"])
    if pending:
        raise InvalidInput(f"shard ends with incomplete samples: {sorted(pending)[:3]}")
