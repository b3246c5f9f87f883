"""Long driving videos: overlapping windows anchored by keyframes, generated in parallel.

The DiT generates `window` frames at a time (its training length, 1 + 4k for the causal VAE).
A longer driving clip is cut into windows that overlap by `overlap` frames (1 + 4j, so every
window starts on a latent-frame boundary) and generated Kling-Avatar style:

    1. keyframes: the frames where windows start and end are generated first, all in one
       batch of short still clips that share their noise (one look for the whole video);
    2. sub-clips: every window is generated in one batch (in parallel), with its first and
       last latent frames anchored to the keyframe latents of its start and end
       (`FlowMatchSampler.sample(anchor=...)` and the DiT's anchor embedding), so
       neighbouring windows agree where they meet;
    3. join: the overlapping frames are cross-faded linearly, which hides what differences
       remain (with `overlap` = 1, the one shared frame is the mean of both).

A clip no longer than one window is generated as one window, without keyframes. A clip
shorter than a window is padded by holding its last pose, and the result trimmed back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.errors import InvalidInput

if TYPE_CHECKING:
    from models.extraction import DrivingMotion, ReferenceIdentity
    from models.pipeline import MotionControlPipeline


@dataclass(frozen=True)
class WindowPlan:
    """Where each window of a `frames`-frame clip starts, in driving frames."""

    frames: int  # frames of the driving clip, and of the result
    window: int  # frames per window (the model's clip length)
    overlap: int  # frames shared by neighbouring windows
    starts: tuple[int, ...]

    @property
    def stride(self) -> int:
        return self.window - self.overlap

    @property
    def padded_frames(self) -> int:
        """Frames the windows cover (>= frames: the tail holds the last pose)."""
        return self.starts[-1] + self.window

    @property
    def keyframes(self) -> tuple[int, ...]:
        """Driving frames generated first as anchors: every window's first and last frame
        (none for a single window)."""
        if len(self.starts) == 1:
            return ()
        return tuple(sorted({s for s in self.starts} | {s + self.window - 1
                                                         for s in self.starts}))

    def anchor_keyframes(self) -> list[tuple[int, int]]:
        """Per window, the indices into `keyframes` of its first and last frame (none for
        a single window)."""
        if not self.keyframes:
            return []
        index = {frame: i for i, frame in enumerate(self.keyframes)}
        return [(index[s], index[s + self.window - 1]) for s in self.starts]


def plan_windows(frames: int, window: int, overlap: int = 1, temporal_factor: int = 4
                 ) -> WindowPlan:
    """Windows of `window` frames over a `frames`-frame clip, `overlap` frames shared."""
    if frames < 1:
        raise InvalidInput(f"the driving clip has no frames (got {frames})")
    if window < 1 or (window - 1) % temporal_factor:
        raise InvalidInput(f"window must be 1 + {temporal_factor}k frames, got {window}")
    if overlap < 1 or (overlap - 1) % temporal_factor or overlap >= window:
        raise InvalidInput(f"overlap must be 1 + {temporal_factor}j frames and below the "
                           f"window ({window}), got {overlap}")
    stride = window - overlap
    count = 1 if frames <= window else 1 + -(-(frames - window) // stride)  # ceil
    return WindowPlan(frames, window, overlap, tuple(i * stride for i in range(count)))


def hold_last(array: np.ndarray, length: int) -> np.ndarray:
    """`array` along axis 0 extended to `length` by repeating its last item."""
    if len(array) >= length:
        return array[:length]
    return np.concatenate([array, np.repeat(array[-1:], length - len(array), 0)])


def windows_of(array: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """(frames, ...) -> (windows, window, ...), the tail padded by holding the last item."""
    padded = hold_last(array, plan.padded_frames)
    return np.stack([padded[s:s + plan.window] for s in plan.starts])


def join_windows(clips: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """(windows, window, H, W, 3) uint8 -> (frames, H, W, 3): overlaps cross-faded linearly
    from the earlier window to the later one, then trimmed to the clip's length."""
    if clips.shape[:2] != (len(plan.starts), plan.window):
        raise InvalidInput(f"expected {len(plan.starts)} windows of {plan.window} frames, got "
                           f"{clips.shape[:2]}")
    total = np.zeros((plan.padded_frames, *clips.shape[2:]), np.float64)
    weight = np.zeros(plan.padded_frames, np.float64)
    # Each window weighs 1 inside, and ramps up over the overlap it shares with the previous
    # window and down over the one it shares with the next: weights sum to 1 everywhere.
    ramp = np.arange(1, plan.overlap + 1) / (plan.overlap + 1)
    for i, (start, clip) in enumerate(zip(plan.starts, clips, strict=True)):
        w = np.ones(plan.window)
        if i > 0:
            w[:plan.overlap] = ramp
        if i < len(plan.starts) - 1:
            w[-plan.overlap:] = ramp[::-1]
        total[start:start + plan.window] += w[:, None, None, None] * clip
        weight[start:start + plan.window] += w
    joined = total / weight[:, None, None, None]
    return np.clip(np.round(joined), 0, 255).astype(np.uint8)[:plan.frames]


def generate_long(pipeline: MotionControlPipeline, identity: ReferenceIdentity,
                  motion: DrivingMotion, caption: str, *, camera: np.ndarray | None = None,
                  seed: int | None = None, overlap: int = 1, window_batch: int = 8
                  ) -> np.ndarray:
    """(frames, size, size, 3) uint8 for a driving motion of any length: keyframes, then
    every window anchored on them, `window_batch` windows per sampler call.
    camera: (frames, 3) per-frame pan, tilt, zoom (None: static)."""
    frames = len(motion.pose)
    plan = plan_windows(frames, pipeline.frames, overlap, pipeline.vae.temporal_factor)
    camera = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (frames, 1)) \
        if camera is None else np.asarray(camera, np.float32)
    if camera.shape != (frames, 3):
        raise InvalidInput(f"camera must be ({frames}, 3), got {camera.shape}")

    def conditions(pose, driver, cam):
        return pipeline.conditions(identity, pose, driver, caption, motion.action_phrase,
                                   motion.intensity, camera=cam)

    keyframe_latents = None
    if plan.keyframes:
        # Each keyframe is generated as the shortest clip the DiT takes (1 + temporal_factor
        # frames, its pose held) and its first latent frame kept: the causal VAE's latent
        # frame 0 stands for exactly one pixel frame.
        kf = list(plan.keyframes)
        held = 1 + pipeline.vae.temporal_factor
        padded = [hold_last(a, plan.padded_frames) for a in (motion.pose, motion.driver, camera)]
        keyframe_latents = torch.cat([
            pipeline.sample(conditions(*(np.repeat(a[kf[i:i + window_batch], None], held, 1)
                                         for a in padded)), seed, frames=held)[:, :, :1]
            for i in range(0, len(kf), window_batch)])  # (K, C, 1, h, w)

    pose, driver, cam = (windows_of(a, plan) for a in (motion.pose, motion.driver, camera))
    anchors = plan.anchor_keyframes()
    clips = []
    for i in range(0, len(plan.starts), window_batch):
        part = slice(i, i + window_batch)
        cond = conditions(pose[part], driver[part], cam[part])
        anchor = None
        if keyframe_latents is not None:
            shape = pipeline.latent_shape(cond.batch_size)
            latents = torch.zeros(shape, device=keyframe_latents.device)
            mask = torch.zeros(shape[0], shape[2], dtype=torch.bool, device=latents.device)
            for row, (first, last) in enumerate(anchors[part]):
                latents[row, :, 0] = keyframe_latents[first, :, 0]
                latents[row, :, -1] = keyframe_latents[last, :, 0]
                mask[row, [0, -1]] = True
            anchor = (latents, mask)
            cond = cond.with_anchors(latents, mask)
        clips.append(pipeline.decode(pipeline.sample(cond, seed, anchor=anchor)))
    return join_windows(np.concatenate(clips), plan)
