"""Training checkpoints in the object store: `checkpoints/<run_id>/<tag>/…` plus a `latest`
pointer written last, so a reader never follows it to a half-uploaded checkpoint.

A run killed at any moment resumes from the newest complete checkpoint and loses at most one
checkpoint interval.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flows.store import ObjectStore


def _prefix(run_id: str) -> str:
    return f"checkpoints/{run_id}"


def upload_checkpoint_files(store: ObjectStore, run_id: str, tag: str, folder: Path) -> str:
    """Upload the files of `folder` under checkpoints/<run_id>/<tag>/. With several ranks,
    each uploads what it wrote (its ZeRO shard, on its own node) before one commits."""
    prefix = f"{_prefix(run_id)}/{tag}"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path)
    return prefix


def commit_checkpoint(store: ObjectStore, run_id: str, tag: str, keep: int = 2) -> None:
    """Point `latest` at a fully uploaded `tag` and prune all but the newest `keep`."""
    store.put_bytes(f"{_prefix(run_id)}/latest", tag.encode())
    for old in list_checkpoints(store, run_id)[:-keep]:
        store.delete_prefix(f"{_prefix(run_id)}/{old}/")


def list_checkpoints(store: ObjectStore, run_id: str) -> list[str]:
    """Tags of the complete checkpoints of a run, oldest first (tags are `step-%08d`)."""
    tags = {info.key.split("/")[2] for info in store.list(f"{_prefix(run_id)}/")
            if info.key.count("/") >= 3}
    return sorted(tags)


def latest_checkpoint(store: ObjectStore, run_id: str) -> str | None:
    key = f"{_prefix(run_id)}/latest"
    return store.get_bytes(key).decode() if store.exists(key) else None


def download_checkpoint(store: ObjectStore, run_id: str, tag: str, dest: Path) -> Path:
    """Fetch checkpoints/<run_id>/<tag>/ into dest/<tag>/ (each file checksum-verified)."""
    prefix = f"{_prefix(run_id)}/{tag}/"
    target = dest / tag
    if target.exists():
        shutil.rmtree(target)
    for info in store.list(prefix):
        store.get_file(info.key, target / info.key[len(prefix):])
    return target


def step_tag(step: int) -> str:
    return f"step-{step:08d}"
