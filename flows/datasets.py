"""Curated datasets in the object store: find a manifest, stream its shards for training."""

from __future__ import annotations

import functools
import json

from flows.errors import ObjectNotFound
from flows.settings import Settings
from flows.store import ObjectStore, open_store
from models.data.dataset import ShardDataset


def load_manifest(store: ObjectStore, name: str, digest: str | None = None) -> dict:
    """The manifest of dataset `name` at `digest`, or the newest one when digest is None."""
    if digest:
        key = f"datasets/{name}/{digest}/manifest.json"
        if not store.exists(key):
            raise ObjectNotFound(f"no dataset {name}@{digest} in {store.uri()}; run "
                                 "`make curate` or check the digest")
        return json.loads(store.get_bytes(key))
    manifests = [json.loads(store.get_bytes(info.key)) for info in store.list(f"datasets/{name}/")
                 if info.key.endswith("/manifest.json")]
    if not manifests:
        raise ObjectNotFound(f"no dataset {name!r} in {store.uri()}; run `make curate` first")
    return max(manifests, key=lambda m: m["created"])


def shard_dataset(settings: Settings, manifest: dict, split: str = "train",
                  **kwargs) -> ShardDataset:
    """A streaming dataset over the manifest's shards, read straight from the store."""
    store = open_store(settings)

    # partials, not lambdas: picklable, so DataLoader workers may be spawned (CUDA needs it)
    return ShardDataset([functools.partial(store.open, s["key"]) for s in manifest["shards"]],
                        split=split, **kwargs)
