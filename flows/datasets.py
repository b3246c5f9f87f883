"""Curated datasets in the object store: find a manifest, stream its shards for training."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from flows.errors import ObjectNotFound
from flows.settings import Settings
from flows.store import ObjectStore, open_store
from models.data.dataset import ShardDataset


def dataset_prefix(name: str, digest: str) -> str:
    """Where dataset `name`@`digest` lives in the store: its shards and manifest.json."""
    return f"datasets/{name}/{digest}"


def load_manifest(store: ObjectStore, name: str, digest: str | None = None) -> dict:
    """The manifest of dataset `name` at `digest`, or the newest one when digest is None."""
    if digest:
        key = f"{dataset_prefix(name, digest)}/manifest.json"
        if not store.exists(key):
            raise ObjectNotFound(f"no dataset {name}@{digest} in {store.uri()}; run "
                                 "`make curate` or check the digest")
        return json.loads(store.get_bytes(key))
    manifests = [json.loads(store.get_bytes(info.key)) for info in store.list(f"datasets/{name}/")
                 if info.key.endswith("/manifest.json")]
    if not manifests:
        raise ObjectNotFound(f"no dataset {name!r} in {store.uri()}; run `make curate` first")
    return max(manifests, key=lambda m: m["created"])


@dataclass(frozen=True)
class DatasetRef:
    """What a run records of the curated dataset it reads or writes (an MLflow dataset input):
    which one, where it lives, and how many kept clips each split has."""

    name: str
    digest: str
    source: str  # the store URI of its prefix: shards + manifest.json
    splits: dict[str, int]  # kept clips per split ("train", "eval")


def dataset_ref(settings: Settings, name: str, digest: str) -> DatasetRef:
    """The dataset `name`@`digest` as a run records it, read from its manifest."""
    store = open_store(settings)
    manifest = load_manifest(store, name, digest)
    split = "kept_split_"  # the manifest's counts (flows/curate.py `_counts`)
    return DatasetRef(name, digest, store.uri(dataset_prefix(name, digest)),
                      {k.removeprefix(split): int(v) for k, v in manifest["counts"].items()
                       if k.startswith(split)})


def shard_dataset(settings: Settings, manifest: dict, split: str = "train",
                  **kwargs) -> ShardDataset:
    """A streaming dataset over the manifest's shards, read straight from the store."""
    store = open_store(settings)

    # partials, not lambdas: picklable, so DataLoader workers may be spawned (CUDA needs it)
    return ShardDataset([functools.partial(store.open, s["key"]) for s in manifest["shards"]],
                        split=split, **kwargs)
