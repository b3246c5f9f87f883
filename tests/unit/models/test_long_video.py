"""Window math of long driving videos, and one long generation on a tiny random model (the
weights are untrained: the windowing, anchoring and joining are under test, not quality)."""

import numpy as np
import pytest
import torch

from flows.profiles import profile_config
from models.dit import MotionDiT
from models.errors import InvalidInput
from models.extraction import DrivingMotion, ReferenceIdentity
from models.long_video import (
    WindowJoiner,
    generate_long,
    join_windows,
    plan_windows,
    stream_long,
    windows_of,
)
from models.pipeline import MotionControlPipeline
from models.sampling import GuidanceConfig
from models.text import TextEncoder
from models.vae import VideoVAE

DEBUG = profile_config("debug")


def test_windows_cover_the_clip_and_share_their_boundaries():
    plan = plan_windows(20, window=9, overlap=1)
    assert plan.starts == (0, 8, 16) and plan.padded_frames == 25
    assert plan.keyframes == (0, 8, 16, 24)
    assert plan.anchor_keyframes() == [(0, 1), (1, 2), (2, 3)]
    wide = plan_windows(29, window=17, overlap=5)
    assert wide.stride == 12 and wide.starts == (0, 12)
    assert all(s % 4 == 0 for s in wide.starts)  # on latent-frame boundaries


def test_short_clips_are_one_window_without_keyframes():
    for frames in (1, 5, 9):
        plan = plan_windows(frames, window=9)
        assert plan.starts == (0,) and plan.keyframes == () and plan.anchor_keyframes() == []


@pytest.mark.parametrize("frames, window, overlap", [(0, 9, 1), (10, 8, 1), (10, 9, 2),
                                                     (10, 9, 9)])
def test_bad_plans_say_what_is_wrong(frames, window, overlap):
    with pytest.raises(InvalidInput):
        plan_windows(frames, window, overlap)


@pytest.mark.parametrize("overlap", [1, 5])
def test_join_gives_back_a_clip_cut_into_windows(overlap):
    """Windows cut from one clip join back into exactly that clip (the cross-fade of equal
    frames is the frame), tail padding trimmed."""
    clip = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    plan = plan_windows(30, window=9, overlap=overlap)
    assert np.array_equal(join_windows(windows_of(clip, plan), plan), clip)


def test_join_cross_fades_the_overlap():
    plan = plan_windows(13, window=9, overlap=5)
    clips = np.stack([np.zeros((9, 1, 1, 3), np.uint8), np.full((9, 1, 1, 3), 240, np.uint8)])
    joined = join_windows(clips, plan)[:, 0, 0, 0]
    assert list(joined[:4]) == [0] * 4 and list(joined[-4:]) == [240] * 4
    assert list(joined[4:9]) == [40, 80, 120, 160, 200]  # a linear ramp, no jump


def test_the_joiner_gives_back_each_frame_once_no_later_window_changes_it():
    """Window by window: the frames before the next window's start are final (its overlap
    waits for it), the last window gives back the rest, trimmed; the same frames as a join
    of all windows at once would be if each frame were computed from the windows it is in."""
    rng = np.random.default_rng(1)
    plan = plan_windows(30, window=9, overlap=5)  # starts 0, 4, ..., 24 (stride 4)
    clips = rng.integers(0, 256, (len(plan.starts), 9, 2, 2, 3), dtype=np.uint8)
    joiner = WindowJoiner(plan)
    given = [len(joiner.add(clip)) for clip in clips]
    assert given == [4] * (len(plan.starts) - 1) + [30 - plan.starts[-1]]
    # frame 5 lies in window 0 (its frame 5, ramping down: 4/6) and 1 (frame 1, up: 2/6)
    joined = join_windows(clips, plan)
    expected = (4 * clips[0, 5].astype(float) + 2 * clips[1, 1].astype(float)) / 6
    assert np.array_equal(joined[5], np.round(expected).astype(np.uint8))
    with pytest.raises(InvalidInput, match="expected window"):
        joiner.add(clips[0])  # one window too many


def _tiny_long_generation():
    torch.manual_seed(0)
    pipe = MotionControlPipeline(MotionDiT(DEBUG.dit, stage=3), VideoVAE(DEBUG.vae),
                                 TextEncoder(), size=64, frames=9, steps=2,
                                 guidance=GuidanceConfig(1.0, 1.0))
    rng = np.random.default_rng(0)
    pose = rng.uniform(0.3, 0.7, (20, 133, 4)).astype(np.float32)
    pose[..., 3] = 1
    motion = DrivingMotion(pose, pose.copy(), 0.01, "walking")
    identity = ReferenceIdentity(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                                 np.zeros((0, 64, 64, 3), np.uint8), None)
    return pipe, identity, motion


def test_a_long_motion_streams_its_frames_as_its_windows_finish():
    """20 frames, windows of 9 one per call: 4 keyframe calls (no frames yet), then 8, 8 and
    the last 4 frames; the parts make up the whole generation."""
    pipe, identity, motion = _tiny_long_generation()
    parts = list(stream_long(pipe, identity, motion, "a person walking", seed=3,
                             window_batch=1))
    assert [(p.done, p.total) for p in parts] == [(i, 7) for i in range(8)]
    assert [len(p.frames) for p in parts] == [0, 0, 0, 0, 0, 8, 8, 4]
    assert all(p.frames.shape[1:] == (64, 64, 3) and p.frames.dtype == np.uint8 for p in parts)
    whole = generate_long(pipe, identity, motion, "a person walking", seed=3, window_batch=1)
    assert np.array_equal(np.concatenate([p.frames for p in parts]), whole)


def test_a_long_motion_generates_every_frame_with_anchored_windows():
    pipe, identity, motion = _tiny_long_generation()
    calls = []
    sample = pipe.sample
    pipe.sample = lambda cond, seed, **kw: calls.append((cond.batch_size, kw)) or \
        sample(cond, seed, **kw)
    out = generate_long(pipe, identity, motion, "a person walking", seed=3)
    assert out.shape == (20, 64, 64, 3) and out.dtype == np.uint8
    keyframes, windows = calls
    assert keyframes[0] == 4 and keyframes[1]["frames"] == 5  # frames 0, 8, 16, 24 at once
    assert windows[0] == 3  # three windows in one batch
    latents, mask = windows[1]["anchor"]
    assert mask.tolist() == [[True, False, True]] * 3
    assert torch.equal(latents[0, :, -1], latents[1, :, 0])  # neighbours share a keyframe
    again = generate_long(pipe, identity, motion, "a person walking", seed=3)
    assert np.array_equal(out, again)

