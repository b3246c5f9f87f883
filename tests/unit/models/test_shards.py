import io

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models.data.dataset import (
    ConditionDropout,
    Endless,
    ShardDataset,
    local_shard,
    still_example,
)
from models.data.shards import iter_shard, sample_digest, write_shards
from models.errors import InvalidInput
from models.keypoints import empty


def make_sample(key, identity, motion, split="train", t=4, size=8, value=None):
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    frames = rng.integers(0, 255, (t, size, size, 3), dtype=np.uint8)
    if value is not None:
        frames[:] = value
    kps = empty(t)
    kps[..., 3] = 1.0
    kps[..., 0] = rng.random((t, 133))
    return {
        "key": key, "frames": frames, "keypoints": kps,
        "references": frames[:1].copy(), "camera": np.zeros((t, 3), np.float32),
        "annotations": {"identity_id": identity, "motion_id": motion, "split": split,
                        "caption": f"{identity} doing {motion}", "motion_intensity": 0.5,
                        "action_phrase": motion, "camera_move": "static",
                        "scores": {"sharpness": np.float32(1.5)}},
    }


def test_round_trip_is_lossless_and_grouped_by_motion(tmp_path):
    samples = [make_sample(f"s{i}", f"char{i % 3}", f"motion{i % 2}") for i in range(6)]
    shards = write_shards(samples, tmp_path, max_bytes=2000)
    assert len(shards) > 1  # small max_bytes: several shards, no sample split
    read = [s for info in shards for s in iter_shard(io.BytesIO(info.path.read_bytes()))]
    assert sorted(s["key"] for s in read) == sorted(s["key"] for s in samples)
    by_key = {s["key"]: s for s in samples}
    for got in read:
        want = by_key[got["key"]]
        assert np.array_equal(got["frames"], want["frames"])
        assert np.array_equal(got["keypoints"], want["keypoints"])
        assert got["annotations"]["scores"]["sharpness"] == pytest.approx(1.5)
        assert sample_digest(got) == sample_digest(want)
    motions = [s["annotations"]["motion_id"] for s in read]
    assert motions == sorted(motions)


def test_bad_samples_are_refused(tmp_path):
    bad = make_sample("x", "a", "m")
    bad["frames"] = bad["frames"].astype(np.float32)
    with pytest.raises(InvalidInput, match="uint8"):
        write_shards([bad], tmp_path)
    bad = make_sample("x", "a", "m")
    bad["keypoints"] = bad["keypoints"][:2]
    with pytest.raises(InvalidInput, match="keypoint frames"):
        write_shards([bad], tmp_path)
    with pytest.raises(InvalidInput, match="key"):
        write_shards([make_sample("a/b", "a", "m")], tmp_path)


def test_truncated_shard_is_an_error(tmp_path):
    (info,) = write_shards([make_sample("s0", "a", "m")], tmp_path)
    data = info.path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - tarfile's own error for a cut stream
        list(iter_shard(io.BytesIO(data[: len(data) // 2])))


def test_dataset_pairs_identities_and_respects_split(tmp_path):
    samples = [make_sample(f"m{m}c{c}", f"char{c}", f"motion{m}", value=10 * c)
               for m in range(3) for c in range(3)]
    samples.append(make_sample("held", "char9", "motion9", split="eval"))
    shards = write_shards(samples, tmp_path, max_bytes=4000)
    ds = ShardDataset([local_shard(s.path) for s in shards], cross_identity=1.0,
                      dropout=ConditionDropout(everything=1.0), shuffle_buffer=4)
    examples = list(ds)
    assert sorted(e["key"] for e in examples) == sorted(s["key"] for s in samples[:-1])
    for e in examples:
        assert e["cross_identity"] and e["driver_key"] != e["key"]
        assert e["driver_key"][:2] == e["key"][:2]  # same motion
        assert all(e["drop"].values())
    held = list(ShardDataset([local_shard(s.path) for s in shards], split="eval"))
    assert [e["key"] for e in held] == ["held"]


def test_dataloader_workers_split_shards_without_duplicates(tmp_path):
    samples = [make_sample(f"s{i}", f"c{i}", f"m{i}") for i in range(8)]
    shards = write_shards(samples, tmp_path, max_bytes=1500)
    ds = ShardDataset([local_shard(s.path) for s in shards], dropout=None)
    # spawned workers: a fork of a test process that ran Prefect flows before exits 1 (the
    # child's threading._shutdown fails on Prefect's threads); spawning also needs a
    # picklable dataset, as CUDA training does
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    keys = [k for batch in loader for k in batch["key"]]
    assert sorted(keys) == sorted(s["key"] for s in samples)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["frames"].shape == (2, 4, 8, 8, 3) and batch["frames"].dtype == torch.uint8


def test_endless_batches_prepared_in_a_worker_process(tmp_path):
    """What the training loop reads: one DataLoader for the whole run, its worker preparing
    each example's conditions (pose maps, face codes, text) while the model trains."""
    from models.conditions import PREPARED, PrepareConditions

    samples = [make_sample(f"s{i}", f"c{i % 2}", f"m{i // 2}") for i in range(6)]
    shards = write_shards(samples, tmp_path)
    ds = ShardDataset([local_shard(s.path) for s in shards], dropout=None,
                      transform=PrepareConditions(16))
    loader = DataLoader(Endless(ds), batch_size=4, num_workers=1,
                        multiprocessing_context="spawn")  # see the test above
    batches = [b for _, b in zip(range(3), loader, strict=False)]  # 12 examples: 2 epochs
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys[:6]) == sorted(s["key"] for s in samples)
    prepared = batches[0][PREPARED]
    assert prepared["body_maps"].shape == (4, 3, 4, 16, 16)
    assert prepared["frames"].shape == (4, 4, 16, 16, 3)
    assert prepared["text_tokens"].shape == (4, 32, 384)
    assert prepared["text_mask"].any(1).all()


def test_fewer_shards_than_readers_split_motion_groups(tmp_path):
    # One shard, two readers (two training ranks on the tiny dataset): each reads the shard
    # and keeps every other motion group, so neither is idle, nothing is seen twice or
    # lost, and each example still finds its cross-identity partner.
    samples = [make_sample(f"m{m}c{c}", f"char{c}", f"motion{m}")
               for m in range(5) for c in range(2)]
    shards = write_shards(samples, tmp_path)
    assert len(shards) == 1
    seen = []
    for reader in range(2):
        ds = ShardDataset([local_shard(s.path) for s in shards], dropout=None,
                          cross_identity=1.0)
        ds._consumer = lambda reader=reader: (reader, 2)  # as rank `reader` of 2
        seen.append([(e["key"], e["driver_key"]) for e in ds])
    assert all(seen) and not {k for k, _ in seen[0]} & {k for k, _ in seen[1]}
    assert sorted(k for part in seen for k, _ in part) == sorted(s["key"] for s in samples)
    assert all(k != d and k[:2] == d[:2] for part in seen for k, d in part)
    # validation reads everything on every rank
    assert len(list(ShardDataset([local_shard(s.path) for s in shards], dropout=None,
                                 distributed=False))) == len(samples)


def test_still_example_is_static_with_zero_intensity():
    frames = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    kps = np.random.default_rng(1).random((5, 133, 4)).astype(np.float32)
    ex = still_example({"frames": frames, "keypoints": kps, "driver_keypoints": kps,
                        "driver_frames": frames, "motion_intensity": np.float32(0.7),
                        "camera": np.zeros((5, 3), np.float32)})
    assert ex["motion_intensity"] == 0 and ex["static"]
    assert (ex["frames"] == frames[0]).all() and (ex["keypoints"] == kps[0]).all()
