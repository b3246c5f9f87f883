"""The curation plan's split (flows/curate.py `plan_jobs`): the held-out mocap windows share
no frame with a training window, on the real BVH takes the project ships."""

from __future__ import annotations

from collections import defaultdict

from flows.curate import clip_spec, plan_jobs
from flows.settings import get_settings
from models.data.sources import MocapJob


def test_heldout_mocap_frames_are_never_trained_on():
    settings = get_settings()
    spec = clip_spec(settings)
    windows = defaultdict(lambda: defaultdict(set))  # take -> split -> frames
    for job in plan_jobs(settings, spec):
        if isinstance(job, MocapJob):
            windows[job.bvh_path][job.split] |= set(range(job.start, job.start + spec.frames))
    assert len(windows) == 2  # both takes are in the plan
    for take, split in windows.items():
        assert split["eval"], f"{take}: no held-out window"
        assert not split["eval"] & split["train"], f"{take}: held-out frames in training"
    # the long take still trains (the short one is held out whole)
    assert any(split["train"] for split in windows.values())
