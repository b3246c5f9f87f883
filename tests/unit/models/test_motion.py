"""Motion extraction on real footage, retargeting, face expression codes and pose maps."""

from __future__ import annotations

import numpy as np
import pytest

from models import keypoints as K
from models.assets import sample_data
from models.motion import (
    HolisticExtractor,
    NoPersonFound,
    apply_expression,
    canonicalize_face,
    draw_overlay,
    render_pose_map,
    render_pose_maps,
    retarget,
)
from models.motion.face import STABLE
from models.motion.retarget import BODY_TREE, HAND_TREES
from models.video import read_image, read_video

BI = K.BODY_INDEX

# ---------------------------------------------------------------- extraction on real footage


@pytest.fixture(scope="module")
def extractor():
    with HolisticExtractor() as ex:
        yield ex


@pytest.fixture(scope="module")
def basketball(extractor):
    return {name: extractor.extract_image(read_image(sample_data(f"opencv-doc/{name}.png")))
            for name in ("basketball1", "basketball2")}


@pytest.fixture(scope="module")
def astronaut_kps(extractor):
    from skimage.data import astronaut

    return extractor.extract_image(astronaut())


@pytest.fixture(scope="module")
def vtest(extractor):
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=6).frames
    return clip, extractor.extract(clip)


def _confident(kps, names, threshold=0.5):
    return all(kps[BI[n], K.CONF] > threshold for n in names)


MAIN_JOINTS = ("nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip",
               "left_knee", "right_knee", "left_ankle", "right_ankle")


@pytest.mark.parametrize("name", ["basketball1", "basketball2"])
def test_basketball_body_on_the_player(basketball, name):
    kps = basketball[name]
    assert kps.shape == (133, 4) and kps.dtype == np.float32
    K.validate(kps[None])
    assert _confident(kps, MAIN_JOINTS)
    body = kps[: K.FEET.stop]
    seen = body[body[:, K.CONF] > 0.5]
    # The player on the left of the photo stands in x 0.05-0.33, y 0.15-1 (640x480 frame).
    assert (seen[:, 0] > 0.03).all() and (seen[:, 0] < 0.40).all()
    assert (seen[:, 1] > 0.10).all() and (seen[:, 1] <= 1.0).all()
    y = {n: kps[BI[n], K.Y] for n in BI}
    for side in ("left", "right"):  # standing: head, shoulders, hips, knees, ankles downwards
        assert y["nose"] < y[f"{side}_shoulder"] < y[f"{side}_hip"] < y[f"{side}_knee"] \
            < y[f"{side}_ankle"]
    # He faces the camera: his right side is on the image's left.
    assert kps[BI["right_shoulder"], K.X] < kps[BI["left_shoulder"], K.X]
    # Depth from the world landmarks: within a body's size of the hip centre, not all zero.
    z = body[body[:, K.CONF] > 0.5, K.Z]
    assert np.abs(z).max() < 0.3 and np.abs(z).max() > 1e-3


def test_hands_follow_the_persons_sides(basketball):
    """Holistic's left hand is the person's left (and so the contract's): each detected hand's
    wrist lies on the body wrist of the same side, and a hand MediaPipe put twice on the same
    real hand is kept once."""
    found = 0
    for kps in basketball.values():
        for side in ("left", "right"):
            hand = kps[K.PARTS[f"{side}_hand"]]
            if hand[0, K.CONF] == 0:
                continue
            found += 1
            own = np.linalg.norm(hand[0, :2] - kps[BI[f"{side}_wrist"], :2])
            other = np.linalg.norm(hand[0, :2] - kps[BI[f"{_other(side)}_wrist"], :2])
            assert own < other
        both = [kps[p][:, :2] for p in (K.LEFT_HAND, K.RIGHT_HAND) if kps[p][0, K.CONF] > 0]
        if len(both) == 2:
            assert np.linalg.norm(both[0] - both[1], axis=1).mean() > 0.01
    assert found >= 2


def _other(side):
    return "right" if side == "left" else "left"


def test_astronaut_face_on_the_face(astronaut_kps):
    """Half-body portrait: the face is found, its 68 points lie in the head (x 0.3-0.62,
    y 0.1-0.5 of the 512x512 image) in iBUG order; the legs are out of the frame."""
    kps = astronaut_kps
    face = kps[K.FACE]
    assert (face[:, K.CONF] == 1).all()
    assert (face[:, 0] > 0.30).all() and (face[:, 0] < 0.62).all()
    assert (face[:, 1] > 0.10).all() and (face[:, 1] < 0.50).all()
    g = {name: face[list(idx)] for name, idx in K.FACE_GROUPS.items()}
    eyes_y = (g["right_eye"][:, 1].mean() + g["left_eye"][:, 1].mean()) / 2
    assert g["right_brow"][:, 1].mean() < eyes_y < g["nose"][-5:, 1].mean() \
        < g["outer_lips"][:, 1].mean() < face[8, 1]  # brows, eyes, nostrils, lips, chin
    assert g["right_eye"][:, 0].mean() < g["left_eye"][:, 0].mean()  # she faces the camera
    assert face[0, 0] < face[8, 0] < face[16, 0]  # jaw from her right ear to her left
    nose_tip = face[30, :2]
    assert np.linalg.norm(nose_tip - kps[BI["nose"], :2]) < 0.03  # mesh and pose agree
    assert _confident(kps, ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"))
    assert kps[[BI["left_ankle"], BI["right_ankle"]], K.CONF].max() == 0  # outside the frame


def test_vtest_clip_tracks_a_walker(vtest):
    clip, kps = vtest
    assert kps.shape == (len(clip), 133, 4)
    assert (kps[:, [BI["left_hip"], BI["right_hip"], BI["nose"]], K.CONF] > 0.5).all()
    root = (kps[:, BI["left_hip"], :2] + kps[:, BI["right_hip"], :2]) / 2
    height = np.abs(kps[:, BI["nose"], 1] - kps[:, [BI["left_ankle"], BI["right_ankle"]], 1]
                    .mean(axis=1))
    # A pedestrian of ~15% of the frame's height, walking steadily: small, same-signed steps.
    assert (height > 0.08).all() and (height < 0.3).all()
    assert np.ptp(height) < 0.3 * height.mean()
    steps = np.diff(root, axis=0)
    assert (np.linalg.norm(steps, axis=1) < 0.03).all()
    assert (np.sign(steps[:, 0]) == np.sign(steps[:, 0].sum())).sum() >= len(steps) - 1
    # The whole skeleton moves with its root: no point jumps across the frame.
    body = kps[:, : K.FEET.stop, :2] - root[:, None]
    assert np.abs(np.diff(body, axis=0)).max() < 0.05


def test_no_person_raises(extractor):
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    sky = np.empty((240, 320, 3), np.uint8)
    sky[:] = (120, 170, 230)
    for image in (noise, sky):
        with pytest.raises(NoPersonFound, match="no person"):
            extractor.extract_image(image)
    with pytest.raises(NoPersonFound, match="frames"):
        extractor.extract(np.stack([noise, sky]))


def test_a_reused_extractor_gives_what_a_fresh_one_gives(extractor, vtest):
    """A server keeps one extractor for all requests and restarts its tracking graph in the
    background after each clip: no state of one clip (smoothing, visibility and world-landmark
    filters, the tracked ROI) may reach the next. The shared extractor has run other clips
    and images; its answers must be bitwise a new extractor's (a frame without a person in
    between is not enough: the visibility filters would differ by up to 0.8)."""
    from skimage.data import astronaut

    walker = vtest[0][:4]
    still = np.stack([np.roll(astronaut(), 4 * i, axis=1) for i in range(3)])
    used = [extractor.extract(clip) for clip in (walker, still, walker)]
    with HolisticExtractor() as fresh:
        first = fresh.extract(walker)
    assert np.array_equal(used[0], first) and np.array_equal(used[2], first)


def test_pose_only_search_sees_the_pose_holistic_sees(extractor, vtest):
    """The search for a person runs MediaPipe's pose-only graph (~0.6x Holistic's time) and
    keypoints come from Holistic afterwards: the same person is found only if both graphs
    give the same pose. On every search tile of a vtest.avi frame (people in some, none in
    others) they agree exactly."""
    from models.motion.extract import TILE_FRACTIONS, _Box, _tiles

    frame = vtest[0][0]
    h, w = frame.shape[:2]
    boxes = [_Box(0, 0, max(h, w))] + [b for f in TILE_FRACTIONS for b in _tiles(w, h, f)]
    seen = 0
    for box in boxes:
        found = extractor._detect(frame, box)
        _, pose = extractor._holistic(frame, box)
        assert (found is None) == (pose is None)
        if found is not None:
            seen += 1
            assert found.crop == _Box.around(pose, w, h)
    assert 0 < seen < len(boxes)


def test_bad_frames_are_invalid_input(extractor):
    from models.errors import InvalidInput

    with pytest.raises(InvalidInput, match="uint8"):
        extractor.extract(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(InvalidInput, match="RGB"):
        extractor.extract_image(np.zeros((32, 32), np.uint8))


# ---------------------------------------------------------------- synthetic skeletons

# A standing person facing the camera, in frame-width units (x right, y down, z away).
_BODY = {
    "nose": (0.50, 0.20, -0.04), "left_eye": (0.52, 0.18, -0.03),
    "right_eye": (0.48, 0.18, -0.03), "left_ear": (0.55, 0.19, 0.0),
    "right_ear": (0.45, 0.19, 0.0), "left_shoulder": (0.60, 0.30, 0.0),
    "right_shoulder": (0.40, 0.30, 0.0), "left_elbow": (0.65, 0.42, 0.01),
    "right_elbow": (0.35, 0.42, 0.01), "left_wrist": (0.67, 0.53, -0.02),
    "right_wrist": (0.33, 0.53, -0.02), "left_hip": (0.56, 0.55, 0.0),
    "right_hip": (0.44, 0.55, 0.0), "left_knee": (0.57, 0.72, -0.01),
    "right_knee": (0.43, 0.72, -0.01), "left_ankle": (0.57, 0.88, 0.01),
    "right_ankle": (0.43, 0.88, 0.01), "left_big_toe": (0.58, 0.91, -0.03),
    "left_small_toe": (0.60, 0.91, -0.02), "left_heel": (0.57, 0.90, 0.02),
    "right_big_toe": (0.42, 0.91, -0.03), "right_small_toe": (0.40, 0.91, -0.02),
    "right_heel": (0.43, 0.90, 0.02),
}


def _face_template() -> np.ndarray:
    """68 iBUG-like points (x, y, z), face ~0.1 wide, nose tip at the origin. Upright in the
    canonical sense: eye line along x, nose base straight below the eyes (same z)."""
    def arc(n, cx, cy, rx, ry, a0, a1, z, closed=False):
        a = np.linspace(a0, a1, n, endpoint=not closed)
        return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a), np.full(n, z)], axis=1)

    def line(n, x0, x1, y0, y1, z0, z1):
        return np.stack([np.linspace(x0, x1, n), np.linspace(y0, y1, n),
                         np.linspace(z0, z1, n)], axis=1)

    return np.concatenate([
        arc(17, 0, -0.02, 0.05, 0.07, np.pi, 0, 0.02),  # jaw, from the right ear (image left)
        arc(5, -0.025, -0.035, 0.015, 0.006, np.pi, 2 * np.pi, 0.0),  # right brow
        arc(5, 0.025, -0.035, 0.015, 0.006, np.pi, 2 * np.pi, 0.0),  # left brow
        line(4, 0, 0, -0.025, 0, 0.0, -0.02),  # nose bridge down to the tip
        line(5, -0.012, 0.012, 0.005, 0.005, 0.01, 0.01),  # nostrils
        arc(6, -0.025, -0.02, 0.012, 0.005, np.pi, 3 * np.pi, 0.01, closed=True),  # right eye
        arc(6, 0.025, -0.02, 0.012, 0.005, np.pi, 3 * np.pi, 0.01, closed=True),  # left eye
        arc(12, 0, 0.03, 0.02, 0.008, np.pi, 3 * np.pi, 0.0, closed=True),  # outer lips
        arc(8, 0, 0.03, 0.014, 0.004, np.pi, 3 * np.pi, 0.0, closed=True),  # inner lips
    ])


def _hand(wrist, direction) -> np.ndarray:
    """21 points: five fanned fingers of four joints from the wrist."""
    pts = [wrist]
    for finger in range(5):
        angle = np.deg2rad(-40 + 20 * finger)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        d = rot @ direction
        pts += [wrist + np.append(d * 0.012 * (j + 1), 0.002 * j) for j in range(4)]
    return np.array(pts)


def _person(rng, scale=1.0, jitter=0.0) -> np.ndarray:
    """(133, 4) a whole-body skeleton, all confident, randomly posed by `jitter`."""
    kps = np.zeros((133, 4))
    for name, xyz in _BODY.items():
        kps[BI[name], :3] = xyz
    kps[: K.FEET.stop, :3] += rng.normal(0, jitter, (23, 3))
    kps[K.FACE, :3] = kps[BI["nose"], :3] + _face_template() + rng.normal(0, jitter / 10,
                                                                          (68, 3))
    for side, sign in (("left", 1), ("right", -1)):
        wrist = kps[BI[f"{side}_wrist"], :3]
        kps[K.PARTS[f"{side}_hand"], :3] = _hand(wrist, np.array([0.3 * sign, 1.0])) \
            + rng.normal(0, jitter / 10, (21, 3))
    kps[:, :3] = 0.5 + (kps[:, :3] - 0.5) * scale
    kps[:, K.CONF] = 1.0
    return kps


@pytest.fixture
def driver_and_reference():
    rng = np.random.default_rng(7)
    driver = np.stack([_person(rng, 1.0, 0.03) for _ in range(5)])
    driver[:, :, :2] += np.linspace(0, 0.1, 5)[:, None, None]  # walking right and down
    reference = _person(rng, 1.3, 0.02)
    reference[[BI["left_elbow"], BI["left_wrist"]], 0] += 0.05  # longer left arm
    return driver, reference


def _metric_bones(kps, bones):
    """(T, n, 3) bone vectors, with the virtual root and neck appended."""
    xyz = kps[..., :3].astype(np.float64)
    virtual = [(xyz[:, 11] + xyz[:, 12]) / 2, (xyz[:, 5] + xyz[:, 6]) / 2]
    xyz = np.concatenate([xyz, np.stack(virtual, axis=1)], axis=1)
    return np.stack([xyz[:, b] - xyz[:, a] for a, b in bones], axis=1)


LOOP_BONES = {(5, 11), (6, 12), (5, 0), (6, 0)}  # close loops: not exact
EXACT_BONES = BODY_TREE + tuple(e for e in K.BODY_EDGES if e not in LOOP_BONES) \
    + HAND_TREES["left"] + HAND_TREES["right"]


def test_retarget_takes_reference_lengths_and_driver_directions(driver_and_reference):
    driver, reference = driver_and_reference
    out = retarget(driver, reference)
    assert out.shape == driver.shape and out.dtype == np.float32
    got = _metric_bones(out, EXACT_BONES)
    want_len = np.linalg.norm(_metric_bones(reference[None], EXACT_BONES), axis=-1)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.broadcast_to(want_len, got.shape[:2]),
                               atol=1e-5)
    drv = _metric_bones(driver, EXACT_BONES)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(unit(got), unit(drv), atol=1e-5)
    np.testing.assert_array_equal(out[..., K.CONF], driver[..., K.CONF])
    assert set(K.BODY_EDGES) > LOOP_BONES


def test_retarget_head_scaled_and_root_motion_scaled(driver_and_reference):
    driver, reference = driver_and_reference
    out = retarget(driver, reference)
    nose = BI["nose"]
    face_out = out[:, K.FACE, :3] - out[:, [nose], :3]
    face_drv = driver[:, K.FACE, :3] - driver[:, [nose], :3]
    ratio = np.linalg.norm(face_out, axis=-1) / np.linalg.norm(face_drv, axis=-1)
    assert np.ptp(ratio) < 1e-4 and ratio.mean() == pytest.approx(1.3, rel=0.05)

    def root(k):
        return (k[:, 11, :3] + k[:, 12, :3]) / 2

    def torso(k):  # the hip and shoulder centres' midpoint
        return (root(k) + (k[:, 5, :3] + k[:, 6, :3]) / 2) / 2

    legs = ((11, 13), (13, 15), (12, 14), (14, 16))
    leg = lambda k: sum(np.linalg.norm(k[b, :3] - k[a, :3]) for a, b in legs)  # noqa: E731
    scale = leg(reference) / sum(np.median(np.linalg.norm(driver[:, b, :3] - driver[:, a, :3],
                                                          axis=-1)) for a, b in legs)
    np.testing.assert_allclose(torso(out)[0], torso(reference[None])[0], atol=1e-5)
    np.testing.assert_allclose(root(out) - root(out)[0], (root(driver) - root(driver)[0]) * scale,
                               atol=1e-5)
    still = retarget(driver, reference, keep_root_motion=False)
    np.testing.assert_allclose(root(still), np.broadcast_to(root(still)[:1], (5, 3)), atol=1e-5)
    np.testing.assert_allclose(torso(still)[0], torso(reference[None])[0], atol=1e-5)


def test_retarget_yaw_turns_about_the_root(driver_and_reference):
    driver, reference = driver_and_reference
    base = retarget(driver, reference)
    np.testing.assert_array_equal(retarget(driver, reference, rotate_yaw_deg=0.0), base)
    turned = retarget(driver, reference, rotate_yaw_deg=90.0)
    root = (base[:, [11]] + base[:, [12]]) / 2
    v = base[..., :3] - root[..., :3]
    expected = np.stack([v[..., 2], v[..., 1], -v[..., 0]], axis=-1) + root[..., :3]
    np.testing.assert_allclose(turned[..., :3], expected, atol=1e-5)
    # Lengths are unchanged; the shoulders, across the image at 0 degrees, now point in depth.
    np.testing.assert_allclose(np.linalg.norm(_metric_bones(turned, EXACT_BONES), axis=-1),
                               np.linalg.norm(_metric_bones(base, EXACT_BONES), axis=-1), atol=1e-5)
    shoulders = turned[:, BI["left_shoulder"], :3] - turned[:, BI["right_shoulder"], :3]
    assert (np.abs(shoulders[:, 2]) > 2 * np.abs(shoulders[:, 0])).all()


def test_retarget_low_confidence_and_missing_parts(driver_and_reference):
    driver, reference = driver_and_reference
    driver = driver.copy()
    driver[2, BI["left_elbow"]] = [np.nan, np.nan, np.nan, 0.0]  # lost in one frame
    driver[:, K.LEFT_HAND, K.CONF] = 0.0  # never seen
    driver[4] = 0.0  # a frame without the person
    ref = reference.copy()
    ref[[BI[n] for n in ("left_knee", "left_ankle", "right_knee", "right_ankle")], K.CONF] = 0
    ref[K.RIGHT_HAND, K.CONF] = 0.0  # takes the left hand's lengths
    out = retarget(driver, np.stack([ref, ref]))
    assert np.isfinite(out).all()
    assert out[2, BI["left_elbow"], K.CONF] == 0 and (out[:, K.LEFT_HAND, K.CONF] == 0).all()
    assert (out[4] == 0).all()
    bones = HAND_TREES["right"]
    left_len = np.linalg.norm(_metric_bones(reference[None], HAND_TREES["left"]), axis=-1)
    np.testing.assert_allclose(np.linalg.norm(_metric_bones(out[:4], bones), axis=-1),
                               np.broadcast_to(left_len, (4, 20)), atol=1e-5)
    # Legs the reference does not show: the driver's, scaled like the rest of the body.
    thigh = np.linalg.norm(out[:4, 13, :3] - out[:4, 11, :3], axis=-1)
    drv_thigh = np.linalg.norm(driver[:4, 13, :3] - driver[:4, 11, :3], axis=-1)
    assert 1.1 < np.median(thigh / drv_thigh) < 1.5


def test_retarget_rejects_a_reference_without_a_body(driver_and_reference):
    from models.errors import InvalidInput

    driver, reference = driver_and_reference
    with pytest.raises(InvalidInput, match="reference"):
        retarget(driver, np.zeros_like(reference))
    with pytest.raises(InvalidInput, match="133"):
        retarget(driver[:, :50], reference)


def test_retarget_real_walker_onto_astronaut(vtest, astronaut_kps):
    """A full-body driver onto a half-body portrait: her shoulder width, on her torso."""
    _, kps = vtest
    out = retarget(kps, astronaut_kps, driver_aspect=768 / 576, reference_aspect=1.0)
    assert np.isfinite(out).all()
    neck = lambda k: (k[..., 5, :2] + k[..., 6, :2]) / 2  # noqa: E731
    assert np.linalg.norm(neck(out[0]) - neck(astronaut_kps)) < 0.1  # on her torso
    shoulder = lambda k: np.linalg.norm(k[..., 5, :3] - k[..., 6, :3], axis=-1)  # noqa: E731
    np.testing.assert_allclose(shoulder(out), shoulder(astronaut_kps), rtol=1e-4)


# ---------------------------------------------------------------- face expression codes

_MOVING = np.setdiff1d(np.arange(68), STABLE)


def _rotation(rng, degrees):
    angles = np.deg2rad(rng.uniform(-degrees, degrees, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _face_size(face, dims=3):
    pts = face[STABLE, :dims]
    return np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1).mean())


def _expressive_clip(neutral, offsets, rng, dims=3):
    """The face wearing `offsets` (canonical units), moved about the image frame by frame."""
    frames = []
    for off in offsets:
        face = neutral + _face_size(neutral, dims) * off
        if dims == 3:
            rot = _rotation(rng, 25)
        else:  # in the image plane only
            a = rng.uniform(-0.4, 0.4)
            rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        moved = rng.uniform(0.5, 2.0) * face @ rot.T + rng.uniform(0.2, 0.8, 3)
        frames.append(moved[:, :dims])
    return np.array(frames)


@pytest.fixture
def faces():
    rng = np.random.default_rng(3)
    template = _face_template()
    a = template * [1.0, 1.0, 1.0]
    b = template * [1.3, 0.85, 1.1]  # a wider, shorter face
    b[K.FACE_GROUPS["outer_lips"]] *= [1.2, 1.4, 1]  # fuller lips
    b[list(K.FACE_GROUPS["right_eye"]) + list(K.FACE_GROUPS["left_eye"]), 0] *= 1.1
    offsets = np.zeros((6, 68, 3))
    offsets[:, _MOVING] = rng.normal(0, 0.05, (6, len(_MOVING), 3))
    return a, b, offsets, rng


@pytest.mark.parametrize("dims", [3, 2])
def test_same_expression_on_different_faces_gives_same_code(faces, dims):
    a, b, offsets, rng = faces
    code_a = canonicalize_face(_expressive_clip(a, offsets, rng, dims), driver_neutral=a[:, :dims])
    code_b = canonicalize_face(_expressive_clip(b, offsets, rng, dims), driver_neutral=b[:, :dims])
    assert code_a.codes.shape == (6, 68, dims) and code_a.valid.all()
    np.testing.assert_allclose(code_a.codes, code_b.codes, atol=1e-6)
    np.testing.assert_allclose(code_a.codes, offsets[..., :dims], atol=1e-6)


def test_neutral_clip_gives_zero_code_and_neutral_is_estimated(faces):
    a, _, offsets, rng = faces
    still = _expressive_clip(a, np.zeros((8, 68, 3)), rng) + rng.normal(0, 2e-5, (8, 68, 3))
    code = canonicalize_face(still)  # neutral estimated from the clip
    assert np.abs(code.codes).max() < 0.02
    # A clip mostly at rest with a few expressive frames: the estimate stays neutral.
    offs = np.concatenate([np.zeros((7, 68, 3)), offsets[:3]])
    code = canonicalize_face(_expressive_clip(a, offs, rng))
    assert np.abs(code.codes[:7]).max() < 1e-6
    np.testing.assert_allclose(code.codes[7:], offsets[:3], atol=1e-6)


def test_expression_moves_to_the_target_face(faces):
    a, b, offsets, rng = faces
    clip = _expressive_clip(a, offsets, rng)
    conf = np.ones((6, 68, 1))
    conf[2] = 0.0  # a frame without the face
    driver = np.concatenate([clip, conf], axis=-1)
    target_neutral = np.concatenate([0.3 * b + 0.5, np.ones((68, 1))], axis=-1)
    result = canonicalize_face(driver, driver_neutral=a, target_neutral=target_neutral)
    assert result.target.shape == (6, 68, 4)
    assert not result.valid[2] and (result.target[2, :, 3] == 0).all()
    expected = target_neutral[None, :, :3] + _face_size(target_neutral) * offsets
    ok = result.valid
    np.testing.assert_allclose(result.target[ok, :, :3], expected[ok], atol=1e-5)
    np.testing.assert_allclose(apply_expression(result, target_neutral), result.target)
    # The same from (133, 4) whole-body keypoints.
    whole = np.zeros((6, 133, 4))
    whole[:, K.FACE] = driver
    again = canonicalize_face(whole, driver_neutral=a)
    np.testing.assert_allclose(again.codes, result.codes, atol=1e-6)


# ---------------------------------------------------------------- pose maps


def _bright(image, x, y):
    return int(image[int(round(y)), int(round(x))].max())


def test_pose_map_shapes_and_parts():
    rng = np.random.default_rng(0)
    clip = np.stack([_person(rng, 1.0, 0.01) for _ in range(3)]).astype(np.float32)
    maps = render_pose_map(clip, (128, 96))
    assert maps.shape == (3, 128, 96, 3) and maps.dtype == np.uint8
    single = render_pose_map(clip[0], (128, 96))
    assert single.shape == (128, 96, 3)
    np.testing.assert_array_equal(single, maps[0])

    h, w = 512, 512
    split = render_pose_maps(clip[0], (h, w))
    assert set(split) == {"body", "hands", "face"}
    mid = lambda a, b: ((clip[0, a, 0] + clip[0, b, 0]) / 2 * w,  # noqa: E731
                        (clip[0, a, 1] + clip[0, b, 1]) / 2 * h)
    thigh = mid(BI["left_hip"], BI["left_knee"])
    assert _bright(split["body"], *thigh) > 100 and _bright(split["hands"], *thigh) == 0
    finger = mid(K.LEFT_HAND.start + 9, K.LEFT_HAND.start + 10)  # middle finger
    assert _bright(split["hands"], *finger) > 100
    assert split["face"].any() and not split["face"][h // 2 + 20:].any()  # face near the top
    assert not split["body"][:, :5].any()  # nothing far from the skeleton

    dim = clip[0].copy()
    dim[BI["left_knee"], K.CONF] = 0.1  # under the threshold: its bones are not drawn
    assert _bright(render_pose_map(dim, (h, w), parts=("body",)), *thigh) == 0


def _crossing(z_left, z_right):
    """Two forearms crossing in an X at (0.5, 0.5) at the given depths."""
    kps = np.zeros((133, 4), np.float32)
    kps[BI["left_elbow"]] = (0.3, 0.3, z_left, 1)
    kps[BI["left_wrist"]] = (0.7, 0.7, z_left, 1)
    kps[BI["right_elbow"]] = (0.7, 0.3, z_right, 1)
    kps[BI["right_wrist"]] = (0.3, 0.7, z_right, 1)
    return kps


def test_nearer_bone_drawn_over_farther_and_brighter():
    from models.motion.render import BODY_BONE_COLORS

    hue = {side: np.array(BODY_BONE_COLORS[K.BODY_EDGES.index(bone)])
           for side, bone in (("left", (7, 9)), ("right", (8, 10)))}

    def colour_at_cross(image):
        c = image[64, 64].astype(float)
        return max(hue, key=lambda s: c @ hue[s] / (np.linalg.norm(c) * np.linalg.norm(hue[s])))

    for near, z in (("left", (-0.1, 0.1)), ("right", (0.1, -0.1))):
        image = render_pose_map(_crossing(*z), (128, 128))
        assert colour_at_cross(image) == near
    # Depth shading: the nearer forearm is brighter away from the crossing.
    image = render_pose_map(_crossing(-0.1, 0.1), (128, 128))
    assert _bright(image, 0.35 * 128, 0.35 * 128) > _bright(image, 0.65 * 128, 0.35 * 128)


def test_overlay_draws_on_a_copy():
    rng = np.random.default_rng(1)
    frame = np.full((120, 160, 3), 40, np.uint8)
    kps = _person(rng).astype(np.float32)
    out = draw_overlay(frame, kps)
    assert out.shape == frame.shape and (frame == 40).all()
    changed = (out != frame).any(axis=-1)
    assert 0.005 < changed.mean() < 0.5


def test_bad_inputs_say_what_is_wrong(faces):
    from models.errors import InvalidInput

    a = faces[0]
    with pytest.raises(InvalidInput, match="parts"):
        render_pose_map(np.zeros((133, 4)), (64, 64), parts=("tail",))
    with pytest.raises(InvalidInput, match="keypoints"):
        render_pose_map(np.full((133, 4), np.nan), (64, 64))
    with pytest.raises(InvalidInput, match="68"):
        canonicalize_face(np.zeros((3, 50, 2)))
    blank = np.zeros((68, 4))
    with pytest.raises(InvalidInput, match="eye corners and nose"):
        apply_expression(np.zeros((2, 68, 3)), blank)
    with pytest.raises(InvalidInput, match="visible"):
        canonicalize_face(np.zeros((3, 68, 4)))  # no face in any frame
    assert canonicalize_face(a[None, :, :2]).codes.shape == (1, 68, 2)
