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

from collections.abc import Iterator
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


class WindowJoiner:
    """Joins generated windows as they come, giving back each frame once it is final.

    Each window weighs 1 inside and ramps up over the overlap it shares with the previous
    window and down over the one it shares with the next; each frame is its windows' weighted
    mean, so the overlaps cross-fade linearly from the earlier window to the later one. A window's
    last `overlap` frames wait for the next window; the last window gives back the rest,
    trimmed to the clip's length."""

    def __init__(self, plan: WindowPlan):
        self.plan = plan
        self.added = 0  # windows joined so far
        self.given = 0  # frames given back so far
        # the overlap frames waiting for the next window: their weighted sum and weights
        self._tail: tuple[np.ndarray, np.ndarray] | None = None
        self._ramp = np.arange(1, plan.overlap + 1) / (plan.overlap + 1)

    def add(self, clip: np.ndarray) -> np.ndarray:
        """One window (window, H, W, 3) uint8 -> the frames that became final (uint8)."""
        plan, i = self.plan, self.added
        if i >= len(plan.starts) or clip.shape[0] != plan.window:
            raise InvalidInput(f"expected window {i + 1} of {len(plan.starts)} with "
                               f"{plan.window} frames, got {clip.shape[0]} frames")
        last = i == len(plan.starts) - 1
        w = np.ones(plan.window)
        if i > 0:
            w[:plan.overlap] = self._ramp
        if not last:
            w[-plan.overlap:] = self._ramp[::-1]
        weighted = w[:, None, None, None] * clip
        if self._tail is not None:
            weighted[:plan.overlap] += self._tail[0]
            w[:plan.overlap] += self._tail[1]
        keep = plan.window if last else plan.stride  # the rest waits for the next window
        self._tail = None if last else (weighted[keep:], w[keep:])
        self.added += 1
        joined = weighted[:keep] / w[:keep, None, None, None]
        final = np.clip(np.round(joined), 0, 255).astype(np.uint8)
        final = final[:max(0, plan.frames - self.given)]  # trim the padded tail
        self.given += len(final)
        return final


def join_windows(clips: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """(windows, window, H, W, 3) uint8 -> (frames, H, W, 3): the windows joined at once."""
    if clips.shape[:2] != (len(plan.starts), plan.window):
        raise InvalidInput(f"expected {len(plan.starts)} windows of {plan.window} frames, got "
                           f"{clips.shape[:2]}")
    joiner = WindowJoiner(plan)
    return np.concatenate([joiner.add(clip) for clip in clips])


@dataclass(frozen=True)
class LongVideoProgress:
    """One step of `stream_long`: sampler calls done of the total, and the frames that
    became final with it (none while keyframes are generated)."""

    done: int
    total: int
    frames: np.ndarray  # (n, H, W, 3) uint8, n >= 0


def stream_long(pipeline: MotionControlPipeline, identity: ReferenceIdentity,
                motion: DrivingMotion, caption: str, *, camera: np.ndarray | None = None,
                seed: int | None = None, overlap: int = 1, window_batch: int = 8
                ) -> Iterator[LongVideoProgress]:
    """A driving motion of any length generated step by step: first (0, total, no frames)
    once the plan is known, then one item per sampler call: keyframes, then `window_batch`
    windows at a time, each anchored on its keyframes, with the frames they finish.
    camera: (frames, 3) per-frame pan, tilt, zoom (None: static)."""
    frames = len(motion.pose)
    plan = plan_windows(frames, pipeline.frames, overlap, pipeline.vae.temporal_factor)
    camera = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (frames, 1)) \
        if camera is None else np.asarray(camera, np.float32)
    if camera.shape != (frames, 3):
        raise InvalidInput(f"camera must be ({frames}, 3), got {camera.shape}")

    def conditions(pose, driver, cam):
        return pipeline.conditions(identity, pose, driver, caption, motion.action_phrase,
                                   motion.intensity, camera=cam,
                                   reference_pose=motion.reference)

    kf = list(plan.keyframes)
    keyframe_calls = range(0, len(kf), window_batch)
    window_calls = range(0, len(plan.starts), window_batch)
    total = len(keyframe_calls) + len(window_calls)
    none = np.zeros((0, pipeline.size, pipeline.size, 3), np.uint8)
    yield LongVideoProgress(0, total, none)

    keyframe_latents = None
    if kf:
        # Each keyframe is generated as the shortest clip the DiT takes (1 + temporal_factor
        # frames, its pose held) and its first latent frame kept: the causal VAE's latent
        # frame 0 stands for exactly one pixel frame.
        held = 1 + pipeline.vae.temporal_factor
        padded = [hold_last(a, plan.padded_frames) for a in (motion.pose, motion.driver, camera)]
        parts = []
        for done, i in enumerate(keyframe_calls, 1):
            cond = conditions(*(np.repeat(a[kf[i:i + window_batch], None], held, 1)
                                for a in padded))
            parts.append(pipeline.sample(cond, seed, frames=held)[:, :, :1])
            yield LongVideoProgress(done, total, none)
        keyframe_latents = torch.cat(parts)  # (K, C, 1, h, w)

    pose, driver, cam = (windows_of(a, plan) for a in (motion.pose, motion.driver, camera))
    anchors = plan.anchor_keyframes()
    joiner = WindowJoiner(plan)
    for done, i in enumerate(window_calls, len(keyframe_calls) + 1):
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
        clips = pipeline.decode(pipeline.sample(cond, seed, anchor=anchor), cond)
        yield LongVideoProgress(done, total, np.concatenate([joiner.add(c) for c in clips]))


def generate_long(pipeline: MotionControlPipeline, identity: ReferenceIdentity,
                  motion: DrivingMotion, caption: str, **options) -> np.ndarray:
    """(frames, size, size, 3) uint8: `stream_long`'s frames, all at once."""
    return np.concatenate([step.frames for step in stream_long(
        pipeline, identity, motion, caption, **options)])
