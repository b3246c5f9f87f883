"""Baselines: the still reference, the thin-plate-spline warp of the reference and the
reference's thumbnail."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import astronaut

from models import keypoints as K
from models.baselines import static_reference, thumbnail, tps_warp
from models.errors import InvalidInput
from models.extraction import square
from models.metrics import ssim
from models.synthetic import make_motion, render_clip, sample_character, still, with_background

SIZE = 64
GREEN = (20, 200, 20)


@pytest.fixture(scope="module")
def character():
    """A plain background: the comparison is about the character, not a textured backdrop
    that any warp drags along."""
    return with_background(sample_character(3), "solid", colors=(GREEN, GREEN))


@pytest.fixture(scope="module")
def reference_keypoints(character):
    """The reference image is the character in the neutral pose: a one-frame still render."""
    return render_clip(character, still(1), size=SIZE).keypoints[0]


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def test_static_reference_repeats_the_square_reference():
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    clip = static_reference(image, 5, 32)
    assert clip.shape == (5, 32, 32, 3) and clip.dtype == np.uint8
    for frame in clip:
        np.testing.assert_array_equal(frame, square(image, 32))
    with pytest.raises(InvalidInput, match="reference"):
        static_reference(image.astype(np.float32), 5, 32)


def test_thumbnail_keeps_the_photos_look_and_loses_its_detail():
    photo = astronaut()
    clip = thumbnail(photo, 3, 128)
    assert clip.shape == (3, 128, 128, 3) and clip.dtype == np.uint8
    assert (clip == clip[0]).all()  # a still
    np.testing.assert_array_equal(thumbnail(photo, 1, 32)[0], square(photo, 32))
    reference = np.repeat(square(photo, 128)[None], 2, axis=0)
    scores = [ssim(thumbnail(photo, 2, 128, side), reference) for side in (16, 32, 64)]
    assert 0.2 < scores[0] < scores[1] < scores[2] < 0.9  # more pixels, more of the photo


@pytest.mark.parametrize("action", ["jump", "walk"])
def test_tps_warp_follows_whole_body_motion_better_than_the_still(character, reference_keypoints,
                                                                 action):
    clip = render_clip(character, make_motion(action, frames=12, fps=12, intensity=1.0),
                       size=SIZE)
    warped = tps_warp(clip.reference_image, reference_keypoints, clip.keypoints, SIZE)
    still_clip = static_reference(clip.reference_image, len(clip.frames), SIZE)
    assert warped.shape == clip.frames.shape and warped.dtype == np.uint8
    assert l1(warped, clip.frames) < 0.85 * l1(still_clip, clip.frames)


def test_tps_warp_is_the_identity_on_the_reference_pose(character, reference_keypoints):
    ref = render_clip(character, still(1), size=SIZE).reference_image
    warped = tps_warp(ref, reference_keypoints, reference_keypoints[None], SIZE)
    assert l1(warped[0], ref) < 0.5


def test_tps_warp_falls_back_to_the_reference_without_keypoints(character, reference_keypoints):
    clip = render_clip(character, make_motion("jump", frames=3, fps=12), size=SIZE)
    target = clip.keypoints.copy()
    target[1] = K.empty(1)[0]  # nothing detected in frame 1
    target[2, :, K.CONF] = 0
    target[2, :3, K.CONF] = 1  # only 3 confident points: too few to warp
    warped = tps_warp(clip.reference_image, reference_keypoints, target, SIZE)
    np.testing.assert_array_equal(warped[1], clip.reference_image)
    np.testing.assert_array_equal(warped[2], clip.reference_image)
    with pytest.raises(InvalidInput, match="reference_keypoints"):
        tps_warp(clip.reference_image, reference_keypoints[:17], target, SIZE)
