"""Identity-agnostic retargeting: the driver's motion on the reference character's proportions.

The conditioning skeleton must not leak the driver's build (limb lengths, head and hand size)
into the generated character, so before rendering pose maps the driver's keypoints are rebuilt
bone by bone: each bone keeps the driver's direction (the joint angles) and takes the
reference's length. Lengths are 3D (x, y, z in frame-width units; with z = 0 they are 2D).

The body tree hangs off two virtual joints, the hip centre (root) and the shoulder centre
(neck), so that the pelvis and the shoulders are each one straight bone split at its middle:

    root -> hips -> knees -> ankles -> feet          root -> neck -> shoulders -> elbows -> wrists
                                                                 neck -> nose -> eyes -> ears

Exact (reference length): every bone of that tree, i.e. every edge of `models.keypoints.
BODY_EDGES` except the four that close loops (hip-shoulder torso sides and shoulder-nose), which
follow from the spine, pelvis, shoulder and neck lengths; and every hand bone. The 68 face
points are the driver's, scaled about the nose to the reference's head size.
"""

from __future__ import annotations

import numpy as np

from models import keypoints as K
from models.errors import InvalidInput
from models.motion.geometry import EPS, from_metric, to_metric, unit

CONF_THRESHOLD = 0.3  # points below this do not count when measuring bone lengths
ROOT, NECK = K.NUM_KEYPOINTS, K.NUM_KEYPOINTS + 1  # virtual joints appended after the 133

BODY_TREE = (
    (ROOT, 11), (ROOT, 12),  # pelvis halves
    (11, 13), (13, 15), (12, 14), (14, 16),  # legs
    (15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22),  # feet
    (ROOT, NECK),  # spine
    (NECK, 5), (NECK, 6),  # shoulder halves
    (5, 7), (7, 9), (6, 8), (8, 10),  # arms
    (NECK, 0), (0, 1), (0, 2), (1, 3), (2, 4),  # neck and head
)
HAND_TREES = {"left": K.LEFT_HAND_EDGES, "right": K.RIGHT_HAND_EDGES}
LEGS = ((11, 13), (13, 15), (12, 14), (14, 16))
HEAD_BONES = ((0, 1), (0, 2), (1, 3), (2, 4))
# Face points whose spread measures head size whatever the expression: eye corners and nose.
STABLE_FACE = np.array([36, 39, 42, 45, 27, 28, 29, 30, 31, 35]) + K.FACE.start

_LR = {"left": "right", "right": "left"}


def _mirror_index(i: int) -> int:
    """The same point on the other side of the body (itself on the midline)."""
    if K.LEFT_HAND.start <= i < K.LEFT_HAND.stop:
        return i - K.LEFT_HAND.start + K.RIGHT_HAND.start
    if K.RIGHT_HAND.start <= i < K.RIGHT_HAND.stop:
        return i - K.RIGHT_HAND.start + K.LEFT_HAND.start
    if i >= K.FEET.stop:  # face points and the virtual root and neck: not mirrored here
        return i
    names = K.BODY_NAMES + K.FEET_NAMES
    name = names[i]
    for side, other in _LR.items():
        if name.startswith(side):
            return K.BODY_INDEX[other + name[len(side):]]
    return i


def _clip(kps: np.ndarray, what: str) -> np.ndarray:
    """(T, 133, 4) or (133, 4) -> (T, 133, 4) float64; non-finite points become undetected."""
    kps = np.array(kps, dtype=np.float64)
    if kps.ndim == 2:
        kps = kps[None]
    if kps.ndim != 3 or kps.shape[1:] != (K.NUM_KEYPOINTS, 4) or len(kps) == 0:
        raise InvalidInput(f"{what} keypoints must be (T, 133, 4) or (133, 4), got {kps.shape}")
    bad = ~np.isfinite(kps).all(axis=-1)
    kps[bad] = 0.0
    kps[..., K.CONF] = np.clip(kps[..., K.CONF], 0, 1)
    return kps


def _with_virtual(kps: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Metric xyz (T, 135, 3) and confidence (T, 135) with the root and neck appended."""
    xyz = to_metric(kps[..., :3], aspect)
    conf = kps[..., K.CONF]
    mids = [(11, 12), (5, 6)]  # root, neck
    xyz = np.concatenate([xyz] + [(xyz[:, [a]] + xyz[:, [b]]) / 2 for a, b in mids], axis=1)
    conf = np.concatenate([conf] + [np.minimum(conf[:, [a]], conf[:, [b]]) for a, b in mids],
                          axis=1)
    return xyz, conf


def _lengths(xyz: np.ndarray, conf: np.ndarray, bones, threshold: float) -> np.ndarray:
    """Median length of each bone over the frames where both ends are confident (NaN if
    none), weighted by those frames' confidence."""
    out = np.full(len(bones), np.nan)
    for k, (a, b) in enumerate(bones):
        w = np.minimum(conf[:, a], conf[:, b])
        ok = w >= threshold
        if ok.any():
            lengths = np.linalg.norm(xyz[ok, b] - xyz[ok, a], axis=-1)
            order = np.argsort(lengths)
            cum = np.cumsum(w[ok][order])
            out[k] = lengths[order][np.searchsorted(cum, cum[-1] / 2)]
    return out


def _fill_from_mirror(lengths: np.ndarray, bones) -> np.ndarray:
    """Bones the reference does not show take their mirror bone's length (a hidden left hand
    is as big as the visible right one)."""
    index = {bone: k for k, bone in enumerate(bones)}
    out = lengths.copy()
    for k, (a, b) in enumerate(bones):
        mirror = index.get((_mirror_index(a), _mirror_index(b)))
        if np.isnan(out[k]) and mirror is not None:
            out[k] = lengths[mirror]
    return out


def _ratio(ref: np.ndarray, drv: np.ndarray) -> float:
    """Median reference / driver length over the bones both show (NaN if none)."""
    ok = ~np.isnan(ref) & ~np.isnan(drv) & (drv > EPS)
    return float(np.median(ref[ok] / drv[ok])) if ok.any() else np.nan


def _quotient(num: float, den: float) -> float:
    """num / den, NaN where either is unknown (NaN) or den is zero."""
    return num / den if np.isfinite(num) and np.isfinite(den) and den > EPS else np.nan


def _or(value: float, fallback: float) -> float:
    """`value` unless it is NaN or infinite (a length one side does not show)."""
    return float(value) if np.isfinite(value) else float(fallback)


def _face_size(xyz: np.ndarray, conf: np.ndarray, threshold: float) -> float:
    """Median RMS spread of the stable face points over the frames that show them."""
    ok = (conf[:, STABLE_FACE] >= threshold).all(axis=1)
    if not ok.any():
        return np.nan
    pts = xyz[ok][:, STABLE_FACE]
    spread = np.sqrt(((pts - pts.mean(axis=1, keepdims=True)) ** 2).sum(axis=-1).mean(axis=1))
    return float(np.median(spread))


def _yaw(v: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate (..., 3) vectors about the vertical (y) axis: x' = x cos + z sin."""
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return v @ rot.T


def retarget(driver: np.ndarray, reference: np.ndarray, *, rotate_yaw_deg: float = 0.0,
             keep_root_motion: bool = True, driver_aspect: float = 1.0,
             reference_aspect: float = 1.0,
             conf_threshold: float = CONF_THRESHOLD) -> np.ndarray:
    """The driver's motion on the reference's proportions.

    driver: (T, 133, 4) clip. reference: (133, 4), or (K, 133, 4) views/frames of the character
    (a subject library: each bone length is their confidence-weighted median). Aspects are the
    frames' width / height (the contract's x and y are fractions of different lengths).
    Returns (T, 133, 4) float32 in the reference's frame, with the driver's confidences.

    - Bone lengths the reference does not show (a half-body portrait has no legs) are taken
      from the mirror bone, else the driver's scaled by the median reference/driver ratio of
      the bones both show (the hands' own ratio for hand bones, when both show hands).
    - The root (hip centre) follows the driver's trajectory scaled by the ratio of leg lengths
      (keep_root_motion), else stays put. The first frame's torso (hip and shoulder centres)
      is placed on the first reference's, weighted by the reference's confidence in each.
    - rotate_yaw_deg turns the skeleton about the vertical axis through the root (x' = x cos +
      z sin: positive turns a camera-facing character's front towards the image's left). The
      root trajectory itself is not turned.
    - Frames where the driver shows nothing stay all zero.
    """
    drv_kps, ref_kps = _clip(driver, "driver"), _clip(reference, "reference")
    drv, drv_conf = _with_virtual(drv_kps, driver_aspect)
    ref, ref_conf = _with_virtual(ref_kps, reference_aspect)
    thr = conf_threshold

    hand_bones = HAND_TREES["left"] + HAND_TREES["right"]
    ref_body = _fill_from_mirror(_lengths(ref, ref_conf, BODY_TREE, thr), BODY_TREE)
    ref_hand = _fill_from_mirror(_lengths(ref, ref_conf, hand_bones, thr), hand_bones)
    drv_body = _lengths(drv, drv_conf, BODY_TREE, thr)
    drv_hand = _lengths(drv, drv_conf, hand_bones, thr)
    body_scale = _ratio(ref_body, drv_body)
    if np.isnan(body_scale):
        raise InvalidInput("the reference and the driver show no body bone in common (both "
                           "ends confident); use a reference image where the person's upper "
                           "body is visible")
    hand_scale = _or(_ratio(ref_hand, drv_hand), body_scale)
    legs = [BODY_TREE.index(bone) for bone in LEGS]
    leg_scale = _or(_quotient(ref_body[legs].sum(), drv_body[legs].sum()), body_scale)
    head = [BODY_TREE.index(bone) for bone in HEAD_BONES]
    head_scale = _or(_quotient(_face_size(ref, ref_conf, thr), _face_size(drv, drv_conf, thr)),
                     _or(_ratio(ref_body[head], drv_body[head]), body_scale))

    out = np.zeros_like(drv)
    # The root path relative to the first frame; the whole skeleton is placed at the end.
    start = _first_confident(drv_conf[:, ROOT], thr)
    if keep_root_motion:
        out[:, ROOT] = (drv[:, ROOT] - drv[start, ROOT]) * leg_scale
    _walk(out, drv, BODY_TREE, ref_body, body_scale, _rest_directions(ref, BODY_TREE))
    nose = K.BODY_INDEX["nose"]
    out[:, K.FACE] = out[:, [nose]] + (drv[:, K.FACE] - drv[:, [nose]]) * head_scale
    for side, bones in HAND_TREES.items():
        wrist, hand_root = K.BODY_INDEX[f"{side}_wrist"], K.PARTS[f"{side}_hand"].start
        out[:, hand_root] = out[:, wrist] + (drv[:, hand_root] - drv[:, wrist]) * body_scale
        lengths = ref_hand[[hand_bones.index(bone) for bone in bones]]
        _walk(out, drv, bones, lengths, hand_scale, _rest_directions(ref, bones))

    first = _first_confident(drv_conf[:, NECK] + drv_conf[:, ROOT], thr)
    out += _anchor_shift(out[first], ref[0], ref_conf[0])
    if rotate_yaw_deg:
        out = out[:, [ROOT]] + _yaw(out - out[:, [ROOT]], rotate_yaw_deg)
    result = np.concatenate([from_metric(out[:, : K.NUM_KEYPOINTS], reference_aspect),
                             drv_kps[..., K.CONF:]], axis=-1)
    result[~(drv_kps[..., K.CONF] > 0).any(axis=1)] = 0.0  # nothing to follow in those frames
    return result.astype(np.float32)


def _walk(out: np.ndarray, drv: np.ndarray, bones, lengths: np.ndarray, scale: float,
          rest: np.ndarray) -> None:
    """Place each bone's child from its (already placed) parent: the driver's direction, the
    given length (NaN: the driver's own length times `scale`). In place, all frames at once."""
    for k, (a, b) in enumerate(bones):
        vec = drv[:, b] - drv[:, a]
        length = lengths[k] if not np.isnan(lengths[k]) else np.linalg.norm(vec, axis=-1,
                                                                              keepdims=True) * scale
        out[:, b] = out[:, a] + unit(vec, fallback=rest[k]) * length


def _rest_directions(ref: np.ndarray, bones) -> np.ndarray:
    """Each bone's direction in the reference's first frame (straight down if degenerate):
    used where the driver's bone has no direction (both ends at the same place)."""
    down = np.array([0.0, 1.0, 0.0])
    return unit(np.array([ref[0, b] - ref[0, a] for a, b in bones]), fallback=down)


def _first_confident(conf: np.ndarray, threshold: float) -> int:
    ok = conf >= threshold
    return int(np.argmax(ok)) if ok.any() else 0


def _anchor_shift(first: np.ndarray, ref: np.ndarray, ref_conf: np.ndarray) -> np.ndarray:
    """The translation putting one frame's torso (hip and shoulder centres) on the reference
    image's, each weighted by how surely the reference shows it: a half-body portrait has a
    sure neck and guessed hips."""
    joints = [ROOT, NECK]
    if ref_conf[joints].sum() <= 0:  # no torso: the body's confident points instead
        joints = list(range(K.FEET.stop))
    weights = ref_conf[joints]
    if weights.sum() <= 0:
        raise InvalidInput("the first reference image shows no body point; put the image that "
                           "shows the character's body first")
    return weights @ (ref[joints] - first[joints]) / weights.sum()
