"""Synthetic characters: exact keypoints, drawing, motions (procedural and BVH), camera."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models import keypoints as K
from models.assets import bvh_files
from models.errors import InvalidInput
from models.synthetic import (
    ACTIONS,
    CameraPath,
    character_preset,
    contact_sheet,
    make_motion,
    motion_from_bvh,
    parse_bvh,
    render_clip,
    render_cross_identity,
    sample_character,
    still,
    with_background,
)
from models.synthetic.bvh import _mapping, load_bvh
from models.synthetic.character import Outfit, Palette
from models.synthetic.skeleton import J, forward_kinematics

BG = (20, 200, 20)  # a colour no character uses


def plain(preset: str = "adult", **palette) -> object:
    """A character on a solid background with known colours."""
    c = with_background(character_preset(preset), "solid", colors=(BG, BG))
    colors = dict(skin=(241, 194, 155), hair=(60, 40, 25), eyes=(60, 40, 25),
                  shirt=(40, 90, 200), pants=(30, 30, 40), shoes=(50, 40, 35))
    colors.update(palette)
    return replace(c, palette=Palette(**colors), outfit=Outfit(sleeves="short"))


def body_motion(kps: np.ndarray) -> float:
    """Mean displacement from frame 0 of the body, feet and hand keypoints (frame units)."""
    cols = list(range(0, 23)) + list(range(K.LEFT_HAND.start, K.NUM_KEYPOINTS))
    return float(np.abs(kps[:, cols, :2] - kps[:1, cols, :2]).mean())


@pytest.fixture(scope="module")
def wave_clip():
    return render_clip(plain(), make_motion("wave", frames=12, fps=12, intensity=1.0), size=64)


def test_clip_outputs_follow_the_contract(wave_clip):
    clip = wave_clip
    assert clip.frames.shape == (12, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.reference_image.shape == (64, 64, 3)
    kps = K.validate(clip.keypoints)
    assert kps.shape == (12, K.NUM_KEYPOINTS, 4) and kps.dtype == np.float32
    visible = kps[..., K.CONF] == 1
    assert visible.mean() > 0.95
    assert (kps[visible][:, :2] >= 0).all() and (kps[visible][:, :2] <= 1).all()
    assert clip.camera.frames == 12 and clip.fps == 12
    notes = clip.annotations()
    assert notes["action_phrase"] == "waving the right hand" and "waving" in notes["caption"]
    assert notes["identity_id"] == clip.identity_id and notes["camera"]["move"] == "static"
    sheet = contact_sheet([clip, clip], columns=3, keypoints=True)
    assert sheet.shape == (128, 4 * 64, 3)


def test_keypoints_are_anatomically_placed(wave_clip):
    k = wave_clip.keypoints[0]
    face = k[K.FACE]
    assert k[5, 0] > k[6, 0]  # facing the camera: the left shoulder is on the image right
    assert k[0, 1] < k[5, 1] < k[11, 1] < k[13, 1] < k[15, 1]  # nose, shoulder, hip, knee, ankle
    assert face[36, 0] < face[45, 0] and face[8, 1] == face[:, 1].max()  # iBUG: chin lowest
    assert face[30, 1] > face[36:48, 1].mean()  # nose tip under the eyes
    np.testing.assert_array_equal(k[9], k[K.LEFT_HAND.start])  # wrist = hand root
    np.testing.assert_array_equal(k[10], k[K.RIGHT_HAND.start])


def test_keypoints_land_on_drawn_pixels(wave_clip):
    for t in range(wave_clip.frames.shape[0]):
        img, k = wave_clip.frames[t], wave_clip.keypoints[t]
        for index in (0, 5, 6, 9, 10, 11, 12, 15, 16, K.FACE.start + 8,
                      K.RIGHT_HAND.start + 9, K.LEFT_HAND.start + 9):
            x, y = (k[index, :2] * 64).astype(int)
            assert tuple(img[y, x]) != BG, (t, index)


def test_depth_order_draws_near_parts_over_far_ones():
    """A forearm across the chest shows skin there when in front, shirt when behind."""
    character = plain()
    poses = {"front": ((-0.6, 0.0, -0.3), (-1.7, 0.0, 0.0)),
             "back": ((0.5, 0.0, -0.3), (0.0, 0.0, -1.6))}
    colours = {}
    for name, (shoulder, elbow) in poses.items():
        m = still(1)
        angles = m.angles.copy()
        angles[0, J["l_shoulder"]], angles[0, J["l_elbow"]] = shoulder, elbow
        pose = forward_kinematics(character.body, angles, m.root, m.face, m.hands)
        mid = (pose.joints[0, J["l_elbow"]] + pose.joints[0, J["l_wrist"]]) / 2
        assert abs(mid[0]) < 0.15 and abs(mid[2]) > 0.1  # over the chest, off its plane
        clip = render_clip(character, replace(m, angles=angles), size=128)
        x, y = ((clip.keypoints[0, 7, :2] + clip.keypoints[0, 9, :2]) / 2 * 128).astype(int)
        colours[name] = tuple(int(c) for c in clip.frames[0, y, x])
    assert colours == {"front": character.palette.skin, "back": character.palette.shirt}


def test_rendering_is_deterministic_and_seeded():
    m = make_motion("talk", frames=6, fps=12, intensity=0.8, seed=3)
    a = render_clip(sample_character(11), m, size=48, camera="random", seed=5)
    b = render_clip(sample_character(11), m, size=48, camera="random", seed=5)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert sample_character(11) == sample_character(11)


def test_different_seeds_give_different_characters():
    specs = [sample_character(s) for s in range(8)]
    assert len({s.identity_id for s in specs}) == 8
    assert len({(s.body, s.palette, s.outfit, s.background) for s in specs}) == 8
    refs = [render_clip(s, still(1), size=32).reference_image for s in specs[:3]]
    assert not np.array_equal(refs[0], refs[1]) and not np.array_equal(refs[1], refs[2])


def test_cross_identity_same_angles_own_bones():
    motion = make_motion("dance", frames=8, fps=12, intensity=1.0)
    chars = [character_preset("adult"), character_preset("child"), character_preset("cartoon")]
    clips = render_cross_identity(motion, chars, size=32)
    for clip in clips[1:]:
        np.testing.assert_array_equal(clip.joint_angles, clips[0].joint_angles)
    ratios = []
    for clip in clips:
        k = clip.keypoints[..., :3]
        forearm = np.linalg.norm(k[:, 7] - k[:, 9], axis=-1)
        shin = np.linalg.norm(k[:, 14] - k[:, 16], axis=-1)
        np.testing.assert_allclose(forearm, forearm[0], rtol=1e-4)  # rigid bones
        ratios.append(forearm[0] / shin[0])
    body_ratios = [c.body.forearm / c.body.shin for c in chars]
    np.testing.assert_allclose(ratios, body_ratios, rtol=1e-4)
    assert len({round(r, 3) for r in ratios}) == 3
    with pytest.raises(InvalidInput, match="distinct identity_id"):
        render_cross_identity(motion, [chars[0], chars[0]])


def test_intensity_scales_motion():
    for name in ("wave", "jump", "walk", "talk"):
        moves = {i: body_motion(render_clip(character_preset("adult"),
                                            make_motion(name, frames=16, fps=12, intensity=i),
                                            size=32).keypoints) for i in (0.0, 0.3, 1.0)}
        assert moves[0.0] < 1e-6, name
        assert moves[1.0] > moves[0.3] > moves[0.0], name


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_renders(action):
    motion = make_motion(action, frames=10, fps=10, intensity=1.0)
    clip = render_clip(sample_character(3), motion, size=32)
    assert clip.action == action and clip.action_phrase == ACTIONS[action].phrase
    K.validate(clip.keypoints)
    if action == "static":
        np.testing.assert_array_equal(clip.frames[-1], clip.reference_image)
    else:
        assert np.abs(clip.keypoints[..., :2] - clip.keypoints[:1, :, :2]).max() > 0.01


def test_face_and_hand_channels_move_their_landmarks():
    c = character_preset("adult")
    m = still(2)
    face = m.face.copy()
    face[1] = (1.0, 0, 0, 1.0, 0, 0)  # blink, jaw open
    hands = m.hands.copy()
    hands[1, 0] = (1, 1, 1, 1, 1, 0)  # left fist
    k = forward_kinematics(c.body, m.angles, m.root, face, hands).keypoints
    f = k[:, K.FACE]
    eye_open = np.abs(f[:, 37, 1] - f[:, 41, 1])
    assert eye_open[1] < 0.1 * eye_open[0]
    assert f[1, 57, 1] < f[0, 57, 1] - 0.01  # the lower lip drops (y up, metres)
    tips = np.linalg.norm(k[:, K.LEFT_HAND.start + 12] - k[:, K.LEFT_HAND.start], axis=-1)
    assert tips[1] < 0.6 * tips[0]


@pytest.fixture(scope="module")
def mocap():
    return {f.name: motion_from_bvh(f, fps=15) for f in bvh_files()}


def test_bvh_parses_and_retargets_exactly(mocap):
    assert len(mocap) == 2
    for path in bvh_files():
        bvh = load_bvh(path)
        assert bvh.fps == pytest.approx(30, abs=0.01) and len(bvh.motion) > 30
        pos, _ = bvh.forward_kinematics()
        m = motion_from_bvh(path)
        assert m.frames == len(bvh.motion)
        p = forward_kinematics(character_preset("child").body, m.angles, m.root, m.face, m.hands)
        names = _mapping(bvh)
        # Each bone points where the mocap bone points, whatever the bone lengths.
        for a, b in (("l_shoulder", "l_elbow"), ("r_elbow", "r_wrist"), ("l_hip", "l_knee"),
                     ("r_knee", "r_ankle")):
            mine = p.joints[:, J[b]] - p.joints[:, J[a]]
            theirs = pos[:, names[b]] - pos[:, names[a]]
            mine_y = mine[:, 1] / np.linalg.norm(mine, axis=-1)  # heading-free component
            np.testing.assert_allclose(mine_y, theirs[:, 1] / np.linalg.norm(theirs, axis=-1),
                                       atol=1e-6)


def test_bvh_motion_renders_plausibly(mocap):
    for name, motion in mocap.items():
        assert motion.fps == 15
        clip = render_clip(character_preset("adult"), motion, size=48)
        k = clip.keypoints
        hips_y = k[:, 11:13, 1].mean(1)
        assert (k[:, 15, 1] > hips_y).all() and (k[:, 16, 1] > hips_y).all(), name
        assert (k[:, 0, 1] < k[:, 15:17, 1].min(1)).all(), name  # head above the feet
        assert body_motion(k) > 0.01, name
        assert np.abs(np.diff(k[..., :2], axis=0)).max() < 0.2, name  # no jumps between frames


def test_resample_keeps_timing():
    m = make_motion("nod", frames=30, fps=30, intensity=1.0)
    half = m.resample(15)
    assert half.frames == 15 and half.fps == 15
    np.testing.assert_allclose(half.angles[5], m.angles[10], atol=1e-6)


def test_camera_zoom_changes_character_size():
    c = plain()
    clip = render_clip(c, still(6), size=64, camera="zoom_in")
    assert clip.camera.zoom[-1] > 1.5 and clip.camera.zoom[0] == 1.0
    k = clip.keypoints
    height = k[:, 0, 1] - k[:, 15, 1]
    assert abs(height[-1] / height[0] - clip.camera.zoom[-1]) < 1e-4
    drawn = (clip.frames != np.array(BG, np.uint8)).any(-1).sum((1, 2))
    assert drawn[-1] > 1.5 * drawn[0]
    # Out of the frame means confidence 0.
    out = render_clip(c, still(1), size=32, camera=CameraPath.static(1, pan_x=0.7))
    assert (out.keypoints[0, :, K.CONF] == 0).all()


def test_bad_arguments_raise_clear_errors():
    c, m = character_preset("adult"), still(4)
    cases = [
        (lambda: render_clip(c, m, size=8), "size must be"),
        (lambda: render_clip(c, m, frames=9), "cannot take 9"),
        (lambda: render_clip(c, m, camera=CameraPath.static(3)), "camera path has 3"),
        (lambda: render_clip(c, m, camera="spin"), "unknown camera move"),
        (lambda: render_clip(c, m, camera=3), "camera must be"),
        (lambda: render_clip("adult", m), "CharacterSpec"),
        (lambda: make_motion("moonwalk"), "unknown action"),
        (lambda: make_motion("wave", intensity=1.5), "intensity must lie in"),
        (lambda: make_motion("wave", frames=0), "frames must be"),
        (lambda: character_preset("giant"), "unknown character preset"),
        (lambda: sample_character(-1), "non-negative"),
        (lambda: parse_bvh("HIERARCHY\nROOT Hips {\n OFFSET 0 0\n"), "malformed BVH"),
        (lambda: motion_from_bvh("/nonexistent.bvh"), "not found"),
        (lambda: CameraPath.static(2, zoom=0), "zoom must be positive"),
        (lambda: with_background(c, "lava"), "unknown background"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidInput, match=message):
            call()
