"""Curation filters and annotations on small synthetic clips (numpy/cv2) and real images.

Each filter gets inputs that must pass and inputs that must fail. The second real face for
the identity test is matplotlib's sample portrait of Grace Hopper (matplotlib ships with the
venv); the astronaut is skimage's."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import skimage.data

from models import keypoints as kp
from models.assets import sample_data
from models.curation import (
    CurationThresholds,
    action_phrase_from_keypoints,
    annotate,
    appearance_filter,
    camera_motion,
    classify_camera,
    clip_flow,
    exposure_filter,
    face_embedding,
    fluency_filter,
    identity_filter,
    intensity_label,
    intensity_level,
    kept,
    keypoint_coverage_filter,
    motion_amplitude_filter,
    motion_intensity,
    resolution_filter,
    run_filters,
    sharpness_filter,
    static_filter,
)
from models.curation.identity import subject_box
from models.errors import InvalidInput

TH = CurationThresholds()
SIZE = 128


# --- synthetic clips -----------------------------------------------------------------------


def texture(height: int, width: int, seed: int, sigma: float = 1.0) -> np.ndarray:
    """Smoothed colour noise around mid grey: sharp, textured, well exposed."""
    img = np.random.default_rng(seed).uniform(0, 1, (height, width, 3)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = (img - img.mean()) / img.std() * 0.15 + 0.5
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def moving_square(speed: float = 2.0, frames: int = 24, seed: int = 0) -> np.ndarray:
    """A textured 32 px square sliding right at `speed` px/frame over a static textured
    background (dimmer, so the two differ in colour statistics)."""
    background = (texture(SIZE, SIZE, seed + 7, sigma=2.0) * 0.5 + 40).astype(np.uint8)
    square = texture(32, 32, seed + 1)
    clip = []
    for t in range(frames):
        frame = background.copy()
        shift = np.float32([[1, 0, 8 + speed * t], [0, 1, (SIZE - 32) / 2]])
        cv2.warpAffine(square, shift, (SIZE, SIZE), dst=frame,
                       borderMode=cv2.BORDER_TRANSPARENT)
        clip.append(frame)
    return np.stack(clip)


def camera_clip(dx: float = 0.0, dy: float = 0.0, zoom: float = 1.0,
                frames: int = 16) -> np.ndarray:
    """A 128² window on the astronaut photo moving by (dx, dy) px/frame (the camera pans
    right for dx > 0 and tilts down for dy > 0) and scaling by `zoom` per frame."""
    photo = skimage.data.astronaut()
    clip = []
    for t in range(frames):
        m = cv2.getRotationMatrix2D((256 + dx * t, 256 + dy * t), 0, zoom ** t)
        m[:, 2] -= [256 + dx * t - SIZE / 2, 256 + dy * t - SIZE / 2]
        clip.append(cv2.warpAffine(photo, m, (SIZE, SIZE), flags=cv2.INTER_AREA))
    return np.stack(clip)


def stutter(clip: np.ndarray) -> np.ndarray:
    """Every other frame duplicated (a 2:1 frame-rate conversion gone wrong)."""
    out = clip.copy()
    out[1::2] = out[0::2][: len(out[1::2])]
    return out


def hard_cut(frames: int = 24) -> np.ndarray:
    half = frames // 2
    return np.concatenate([moving_square(frames=half), camera_clip(dx=1, frames=half)])


# --- synthetic keypoints -------------------------------------------------------------------

# A person facing the camera (their left is the image's right), x and y in [0, 1].
_POSE = {
    "nose": (0.50, 0.18), "left_eye": (0.52, 0.16), "right_eye": (0.48, 0.16),
    "left_ear": (0.54, 0.17), "right_ear": (0.46, 0.17),
    "left_shoulder": (0.58, 0.30), "right_shoulder": (0.42, 0.30),
    "left_elbow": (0.61, 0.42), "right_elbow": (0.39, 0.42),
    "left_wrist": (0.62, 0.52), "right_wrist": (0.38, 0.52),
    "left_hip": (0.55, 0.55), "right_hip": (0.45, 0.55),
    "left_knee": (0.55, 0.70), "right_knee": (0.45, 0.70),
    "left_ankle": (0.55, 0.85), "right_ankle": (0.45, 0.85),
}


def person(frames: int = 24, action: str = "still") -> np.ndarray:
    """(T, 133, 4) keypoints of a stick figure: standing still, waving its right hand,
    or walking to the right. Face and hands hang off the nose and wrists."""
    t = np.arange(frames, dtype=np.float32)
    swing = np.sin(2 * np.pi * t / 12)
    body = np.repeat(np.array([_POSE[n] for n in kp.BODY_NAMES], np.float32)[None],
                     frames, 0)
    if action == "wave":
        right = kp.BODY_INDEX
        body[:, right["right_elbow"]] = (0.36, 0.24)
        body[:, right["right_wrist"], 0] = 0.34 + 0.06 * swing
        body[:, right["right_wrist"], 1] = 0.14
    elif action == "walk":
        body[..., 0] += 0.006 * t[:, None]
        for name, sign in (("left_knee", 1), ("left_ankle", 1), ("right_knee", -1),
                           ("right_ankle", -1)):
            body[:, kp.BODY_INDEX[name], 0] += sign * 0.05 * swing
    out = kp.empty(frames)
    out[:, kp.BODY, :2] = body
    out[:, kp.FEET, :2] = body[:, [15, 15, 15, 16, 16, 16]] + [0, 0.02]
    out[:, kp.FACE, :2] = body[:, :1] + np.linspace(-0.03, 0.03, 68)[:, None]
    out[:, kp.LEFT_HAND, :2] = body[:, 9:10] + np.linspace(0, 0.03, 21)[:, None]
    out[:, kp.RIGHT_HAND, :2] = body[:, 10:11] + np.linspace(0, 0.03, 21)[:, None]
    out[..., kp.CONF] = 1.0
    return out


# --- thresholds and input checks -----------------------------------------------------------


def test_thresholds_reject_unknown_choices():
    with pytest.raises(ValueError, match="flow_preset"):
        CurationThresholds(flow_preset="slow")
    with pytest.raises(ValueError, match="no_face"):
        CurationThresholds(no_face="ignore")
    with pytest.raises(ValueError, match="increasing"):
        CurationThresholds(intensity_levels=(0.1, 0.01))


def test_frames_must_be_uint8_rgb_clips():
    with pytest.raises(InvalidInput, match="uint8"):
        exposure_filter(np.zeros((2, 8, 8, 3), np.float32), TH)
    with pytest.raises(InvalidInput, match="RGB"):
        exposure_filter(np.zeros((2, 8, 8), np.uint8), TH)


# --- technical quality ---------------------------------------------------------------------


def test_resolution():
    assert resolution_filter(moving_square(frames=2), TH).passed
    small = resolution_filter(np.zeros((2, 96, 160, 3), np.uint8), TH)
    assert not small.passed and "short side 96 px < 128 px" in small.reason


def test_sharpness_passes_sharp_and_dim_clips_and_fails_blurred_ones():
    sharp = camera_clip(dx=1)
    assert sharpness_filter(sharp, TH).passed
    # contrast and a plain background do not read as blur (the score is normalised)
    assert sharpness_filter((sharp * 0.25).astype(np.uint8), TH).passed
    assert sharpness_filter(moving_square(), TH).passed
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in sharp])
    res = sharpness_filter(blurred, TH)
    assert not res.passed and res.reason.startswith("too blurry")
    assert res.scores["sharpness"] < sharpness_filter(sharp, TH).scores["sharpness"] / 4


def test_exposure():
    clip = camera_clip(dx=1)
    assert exposure_filter(clip, TH).passed
    dark = exposure_filter((clip * 0.15).astype(np.uint8), TH)
    assert not dark.passed and dark.reason.startswith("too dark: mean luma 0.05 < 0.15")
    bright = exposure_filter(np.clip(clip.astype(int) + 150, 0, 255).astype(np.uint8), TH)
    assert not bright.passed and "blown highlights" in bright.reason


def test_static_frames():
    moving = moving_square()
    assert static_filter(moving, TH).passed
    frozen = np.repeat(moving[:1], 12, axis=0)
    res = static_filter(frozen, TH)
    assert not res.passed and "fully static" in res.reason
    assert static_filter(frozen, dataclasses.replace(TH, allow_static=True)).passed
    res = static_filter(stutter(moving), TH)
    assert not res.passed and res.reason.startswith("frozen frames: 52%")
    assert static_filter(clip_flow(stutter(moving), TH), TH) == res  # same from the flow's luma
    # codec-like noise on a static scene is still static
    noisy = np.clip(frozen + np.random.default_rng(0).normal(0, 1.5, frozen.shape), 0, 255)
    assert static_filter(noisy.astype(np.uint8), TH).scores["static_fraction"] == 1.0


# --- motion --------------------------------------------------------------------------------


def test_motion_amplitude():
    assert motion_amplitude_filter(moving_square(), TH).passed
    still = motion_amplitude_filter(np.repeat(moving_square(frames=1), 8, 0), TH)
    assert not still.passed and "too little motion" in still.reason
    fast = motion_amplitude_filter(camera_clip(dx=14, frames=8), TH)
    assert not fast.passed and "too much motion" in fast.reason


def test_fluency_passes_smooth_motion_and_fails_cuts_and_stutter():
    for clip in (moving_square(), camera_clip(dx=2), camera_clip(zoom=1.02)):
        res = fluency_filter(clip, TH)
        assert res.passed, res.reason
    cut = fluency_filter(hard_cut(), TH)
    assert not cut.passed and "cut or jump between frames 11→12" in cut.reason
    assert cut.scores["cuts"] == 1
    jerky = fluency_filter(stutter(moving_square()), TH)
    assert not jerky.passed and "jerky motion" in jerky.reason


def test_motion_intensity_grows_with_speed_and_is_zero_when_static():
    speeds = (0.5, 1.0, 2.0, 3.0)
    values = [motion_intensity(moving_square(speed=s), TH) for s in speeds]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    assert motion_intensity(np.repeat(moving_square(frames=1), 6, 0), TH) == 0.0
    # only the moving region counts: the square's own speed, not diluted by the background
    assert values[-1] > 0.5 * 3.0 / SIZE
    assert intensity_level(0.0, TH) == 0 and intensity_label(0.0, TH) == "almost no"
    assert intensity_level(0.007, TH) == 2 and intensity_label(0.007, TH) == "moderate"
    assert intensity_level(1.0, TH) == len(TH.intensity_levels)


@pytest.mark.parametrize(("clip_args", "expected"), [
    ({"dx": -2}, "pan_left"), ({"dx": 2}, "pan_right"),
    ({"dy": -2}, "tilt_up"), ({"dy": 2}, "tilt_down"),
    ({"zoom": 1.02}, "zoom_in"), ({"zoom": 1 / 1.02}, "zoom_out"),
    ({}, "static"),
])
def test_camera_moves(clip_args, expected):
    clip = camera_clip(**clip_args) if clip_args else moving_square()
    assert classify_camera(camera_motion(clip, TH), TH) == expected


def test_camera_ignores_a_moving_subject_on_a_static_background():
    motion = camera_motion(moving_square(speed=3), TH)
    assert abs(motion["tx"]) < TH.camera_translation / 2


# --- subject consistency -------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut_clip() -> np.ndarray:
    """The astronaut at 256², slightly shifted and scaled from frame to frame."""
    photo = skimage.data.astronaut()
    frames = []
    for t in range(4):
        m = cv2.getRotationMatrix2D((256, 256), 0, 0.5 * (1 + 0.03 * t))
        m[:, 2] += [3 * t - 128, 2 * t - 128]
        frames.append(cv2.warpAffine(photo, m, (256, 256), flags=cv2.INTER_AREA))
    return np.stack(frames)


def test_identity_same_face_passes(astronaut_clip):
    res = identity_filter(astronaut_clip, skimage.data.astronaut(), TH)
    assert res.passed, res.reason
    assert res.scores["faces_found"] == 4 and res.scores["max_distance"] < 0.4
    # a precomputed reference embedding gives the same decision
    embedding = face_embedding(skimage.data.astronaut(), TH)
    assert identity_filter(astronaut_clip, embedding, TH).scores == res.scores


def test_identity_different_face_fails(astronaut_clip):
    cbook = pytest.importorskip("matplotlib.cbook")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    hopper = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    res = identity_filter(astronaut_clip, hopper, TH)
    assert not res.passed and res.reason.startswith("different identity")
    assert res.scores["max_distance"] >= 0.6


def test_identity_without_a_face_is_skipped_or_failed_as_configured():
    faceless = moving_square(frames=4)
    skipped = identity_filter(faceless, skimage.data.astronaut(), TH)
    assert skipped.passed and skipped.skipped
    assert "no face found in 4 sampled frames" in skipped.reason
    failed = identity_filter(faceless, skimage.data.astronaut(),
                             dataclasses.replace(TH, no_face="fail"))
    assert not failed.passed and failed.reason.startswith("no face")
    assert identity_filter(faceless, None, TH).skipped


def test_appearance_stability():
    assert appearance_filter(moving_square(), TH).passed
    assert appearance_filter(camera_clip(dx=2), TH).passed
    res = appearance_filter(hard_cut(), TH)
    assert not res.passed and "colour histogram correlation" in res.reason


def test_subject_box_follows_the_body_keypoints():
    kps = person(1)[0]
    y0, y1, x0, x1 = subject_box(kps, 100, 200, TH)
    assert 0 < x0 < 0.42 * 200 and 0.62 * 200 < x1 < 200
    assert subject_box(None, 100, 200, TH) == (25, 75, 50, 150)


# --- keypoint coverage ---------------------------------------------------------------------


def test_keypoint_coverage():
    res = keypoint_coverage_filter(person(), TH)
    assert res.passed and res.scores["body_coverage"] == 1.0
    missing = person()
    missing[:, kp.FACE, kp.CONF] = 0.1
    missing[:, kp.LEFT_HAND, kp.CONF] = 0
    missing[:, kp.RIGHT_HAND, kp.CONF] = 0
    res = keypoint_coverage_filter(missing, TH)
    assert not res.passed
    assert "face detected in 0% of frames < 50%" in res.reason and "hands detected" in res.reason
    cropped = person()
    cropped[:, kp.BODY, kp.Y] += 0.5  # hips, legs and a wrist below the frame
    res = keypoint_coverage_filter(cropped, TH)
    assert not res.passed and "body out of frame" in res.reason
    assert keypoint_coverage_filter(None, TH).skipped


# --- annotations ---------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "phrase"), [
    ("still", "standing still"), ("wave", "waving the right hand"), ("walk", "walking"),
])
def test_action_phrase_from_keypoints(action, phrase):
    assert action_phrase_from_keypoints(person(action=action), TH) == phrase


def test_annotate_builds_the_caption_and_passes_known_phrases_through():
    clip = camera_clip(dx=-2)
    flow = clip_flow(clip, TH)
    ann = annotate(clip, person(len(clip), "wave"), TH, flow=flow)
    assert ann["camera"] == "pan_left" and ann["action_phrase"] == "waving the right hand"
    assert ann["caption"] == "a person waving the right hand, strong motion, camera panning left"
    assert ann["motion_intensity"] == pytest.approx(2 / SIZE, rel=0.1)
    known = annotate(clip, None, TH, action_phrase="clapping", flow=flow)
    assert known["caption"].startswith("a person clapping,")


def test_run_filters_on_a_good_and_a_bad_clip():
    clip = moving_square()
    timings: dict[str, float] = {}
    results = run_filters(clip, person(len(clip)), None, TH, timings=timings)
    assert kept(results), [r.reason for r in results if not r.passed]
    assert {r.name for r in results} | {"optical_flow"} == set(timings)
    dark = run_filters((clip * 0.1).astype(np.uint8), None, None, TH)
    assert not kept(dark)
    assert [r.name for r in dark if not r.passed] == ["exposure"]


def test_real_footage_passes_and_reads_as_a_static_camera():
    try:
        path = sample_data("opencv-doc/vtest.avi")
    except FileNotFoundError:
        pytest.skip("vtest.avi not unpacked (make setup)")
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < 24:
        ok, frame = capture.read()
        assert ok
        frames.append(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (171, 128),
                                 interpolation=cv2.INTER_AREA))
    clip = np.stack(frames)
    results = run_filters(clip, None, None, TH)
    assert kept(results), [r.reason for r in results if not r.passed]
    assert annotate(clip, None, TH)["camera"] == "static"
