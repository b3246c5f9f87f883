"""A tiny, randomly initialised student registered like the distill flow registers one, for
tests and benchmarks of the registry and serving paths. Its weights are untrained: what is
under test is the path a model takes, not the quality of what it generates."""

from __future__ import annotations

import torch

from flows import tracking
from flows.bundle import publish_version, save_weights, weights_key
from flows.settings import STUDENT_MODEL
from flows.store import open_store
from models.dit import DIT_PRESETS, MotionDiT
from models.vae import VideoVAE


def publish_tiny_student(settings, *, frames: int = 9, steps: int = 2, alias: str = "champion",
                         tags: dict[str, str] | None = None) -> tuple[int, MotionDiT]:
    """Register a random tiny MotionDiT (+ its VideoVAE) as a student version at `alias`."""
    torch.manual_seed(0)
    vae, dit = VideoVAE("tiny"), MotionDiT(DIT_PRESETS["tiny"], stage=3)
    with tracking.start_run(settings, "distillation", run_name="tiny-student") as run:
        vae_key = weights_key("vae-run")
        save_weights(open_store(settings), vae_key, vae,
                     {"kind": "vae", "stage": 0, "preset": "tiny", "resolution": 64})
        meta = {"kind": "student", "stage": 3, "preset": "tiny", "resolution": 64,
                "frames": frames, "sampler_steps": steps}
        version = publish_version(settings, STUDENT_MODEL, run.info.run_id, dit, meta, vae_key,
                                  tags=tags)
    tracking.set_alias(settings, STUDENT_MODEL, alias, version)
    return version, dit
