"""A streaming torch Dataset over dataset shards, local or in an object store.

Shards are read in order as streams (one open shard per worker at a time), split across
DataLoader workers and distributed ranks, shuffled through a buffer. Each training example
pairs a target clip with a driving motion: with probability `cross_identity` the driver is
another character performing the same motion (the shards keep such samples together), which
is how the model learns identity-agnostic motion. Every example carries per-condition
dropout flags for classifier-free guidance.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import BinaryIO

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from models.data.shards import iter_shard

ShardOpener = Callable[[], contextlib.AbstractContextManager[BinaryIO]]

# Annotation fields every example carries (fixed, so the default collate can batch them).
TEXT_FIELDS = ("caption", "action_phrase", "camera_move", "identity_id", "motion_id")


@dataclass(frozen=True)
class ConditionDropout:
    """Probability of dropping each condition in an example (for guidance training)."""

    text: float = 0.1
    reference: float = 0.1
    body: float = 0.05
    face: float = 0.1
    hands: float = 0.1
    camera: float = 0.1
    intensity: float = 0.1
    everything: float = 0.05  # all at once: the unconditional branch

    def sample(self, rng: random.Random) -> dict[str, bool]:
        drop_all = rng.random() < self.everything
        return {name: drop_all or rng.random() < p
                for name, p in asdict(self).items() if name != "everything"}


def _unchanged(example: dict) -> dict:
    return example


def local_shard(path) -> ShardOpener:
    # a partial, not a lambda: picklable, so DataLoader workers may be spawned (CUDA needs it)
    return functools.partial(open, path, "rb")


class ShardDataset(IterableDataset):
    def __init__(
        self,
        shards: Sequence[ShardOpener],
        *,
        split: str = "train",
        cross_identity: float = 0.5,
        dropout: ConditionDropout | None = ConditionDropout(),
        shuffle_buffer: int = 32,
        seed: int = 0,
        static_prob: float = 0.0,
        distributed: bool = True,
        transform: Callable[[dict], dict] | None = None,
    ):
        """distributed: split the data between the ranks of the process group (training);
        False: every rank reads all of it (validation, which must not depend on the world
        size). transform: applied to each example as it leaves the shuffle buffer, in the
        DataLoader worker (e.g. models.conditions.PrepareConditions)."""
        if not shards:
            raise ValueError("ShardDataset needs at least one shard")
        self.shards, self.split = list(shards), split
        self.cross_identity, self.dropout = cross_identity, dropout
        self.static_prob = static_prob
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0
        self.distributed = distributed
        self.transform = transform or _unchanged

    def set_epoch(self, epoch: int) -> None:
        """A new shard and buffer order per epoch (call before each pass)."""
        self.epoch = epoch

    def _consumer(self) -> tuple[int, int]:
        """(index, count) of this reader among all DataLoader workers of all ranks."""
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        rank, world = 0, 1
        if self.distributed and torch.distributed.is_available() and \
                torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return rank * nworkers + wid, world * nworkers

    def _shares_shards(self, readers: int) -> bool:
        """Fewer shards than readers: each reads every shard and keeps some motion groups."""
        return len(self.shards) < readers

    def _my_shards(self) -> list[ShardOpener]:
        """Whole shards per reader when there are enough of them; otherwise every reader
        opens every shard and `_groups` keeps its share of the motion groups."""
        me, readers = self._consumer()
        order = list(range(len(self.shards)))
        random.Random(self.seed + self.epoch).shuffle(order)
        if self._shares_shards(readers):
            return [self.shards[i] for i in order]
        return [self.shards[i] for i in order[me::readers]]

    def _samples(self) -> Iterator[dict]:
        for opener in self._my_shards():
            with opener() as stream:
                for sample in iter_shard(stream):
                    if sample["annotations"].get("split", "train") == self.split:
                        yield sample

    def _groups(self) -> Iterator[list[dict]]:
        """Consecutive samples sharing a motion_id; this reader's share of them when it
        reads shards that other readers read too."""
        me, readers = self._consumer()
        shared = self._shares_shards(readers)
        for index, group in enumerate(self._motion_groups()):
            if not shared or index % readers == me:
                yield group

    def _motion_groups(self) -> Iterator[list[dict]]:
        group: list[dict] = []
        for sample in self._samples():
            if group and sample["annotations"].get("motion_id") != \
                    group[0]["annotations"].get("motion_id"):
                yield group
                group = []
            group.append(sample)
        if group:
            yield group

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        rng = random.Random(hash((self.seed, self.epoch, worker.id if worker else 0)))
        buffer: list[dict] = []
        for group in self._groups():
            for target in group:
                buffer.append(self._example(target, group, rng))
                if len(buffer) >= self.shuffle_buffer:
                    yield self.transform(buffer.pop(rng.randrange(len(buffer))))
        rng.shuffle(buffer)
        yield from map(self.transform, buffer)

    def _example(self, target: dict, group: list[dict], rng: random.Random) -> dict:
        others = [s for s in group if s["annotations"].get("identity_id")
                  != target["annotations"].get("identity_id")]
        cross = bool(others) and rng.random() < self.cross_identity
        driver = rng.choice(others) if cross else target
        ann = target["annotations"]
        pose = target["keypoints"]
        if cross:
            # The pose condition is what inference will have: the driver's skeleton
            # retargeted onto the reference character's proportions, not the ground truth.
            from models.motion import retarget

            pose = retarget(driver["keypoints"], target["keypoints"][0]).astype(np.float32)
        example = {
            "key": target["key"],
            "frames": target["frames"],  # the ground truth the model must generate
            "keypoints": pose,  # the target's pose: the driver's motion on its body
            "driver_keypoints": driver["keypoints"],  # the motion as the driver did it
            "driver_frames": driver["frames"],  # what the driving video looked like
            "driver_key": driver["key"],
            "cross_identity": cross,
            "static": False,
            "motion_intensity": np.float32(ann.get("motion_intensity", 0.0)),
            **{name: str(ann.get(name, "")) for name in TEXT_FIELDS},
        }
        pick = rng.randrange(len(target["references"]))
        example["reference"] = target["references"][pick]
        if target.get("reference_keypoints") is not None:  # what a warp of it starts from
            example["reference_keypoints"] = target["reference_keypoints"][pick]
        if target.get("camera") is not None:
            example["camera"] = target["camera"]
        if rng.random() < self.static_prob:
            example = still_example(example)
        if self.dropout is not None:
            example["drop"] = self.dropout.sample(rng)
        return example


def still_example(example: dict) -> dict:
    """A static clip made from a still image, motion intensity 0: MotionCharacter's
    zero-intensity calibration, so intensity 0 means "do not move"."""
    frames, pose = example["frames"], example["keypoints"]
    return {**example, "frames": np.repeat(frames[:1], len(frames), 0),
            "keypoints": np.repeat(pose[:1], len(pose), 0),
            "driver_keypoints": np.repeat(pose[:1], len(pose), 0),
            "driver_frames": np.repeat(frames[:1], len(frames), 0),
            "motion_intensity": np.float32(0.0), "static": True,
            **({"camera": np.repeat(example["camera"][:1], len(frames), 0)}
               if "camera" in example else {})}


class Endless(IterableDataset):
    """A ShardDataset read over and over, a new shard and buffer order each pass: one
    DataLoader (and its workers, which load their encoders once) serves the whole run."""

    def __init__(self, dataset: ShardDataset):
        self.dataset = dataset

    def __iter__(self) -> Iterator[dict]:
        epoch = 0
        while True:
            self.dataset.set_epoch(epoch)
            empty = True
            for example in self.dataset:
                empty = False
                yield example
            if empty:
                raise RuntimeError("this reader of the dataset got no example; curate more "
                                   "clips or use fewer ranks or DataLoader workers")
            epoch += 1
