"""Identity-agnostic facial expression codes from the 68 iBUG landmarks.

A face's landmarks mix three things: where the head is (position, size, rotation), whose face
it is (the neutral shape: eye spacing, jaw width, lip thickness) and the expression. The
code keeps only the last: each frame is aligned by a similarity transform onto the driver's
neutral face in a canonical frame, using points that expressions barely move (the nose and the
eye corners), and the neutral is subtracted. The code is measured in units of the face's size
(the RMS spread of those stable points), so the same smile on a small and a large face, or on
a narrow and a wide one, gives the same code; `apply_expression` puts it on another face.

The canonical frame of a face: the stable points' centroid at the origin, their RMS spread 1,
x along the eye line (from the person's right eye to the left: image right on a face looking
at the camera), y down the face (eyes to nose), z (3D only) = x cross y, into the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import keypoints as K
from models.errors import InvalidInput
from models.motion.geometry import EPS, from_metric, similarity_fit, to_metric, unit

CONF_THRESHOLD = 0.3
STABLE = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])  # nose, eye corners
MIN_STABLE = 4  # a frame needs this many confident stable points to be aligned
NEUTRAL_ROUNDS = 3  # alignment / median rounds when estimating the neutral face
RIGHT_EYE, LEFT_EYE = K.FACE_GROUPS["right_eye"], K.FACE_GROUPS["left_eye"]
NOSE_BASE = 33


@dataclass(frozen=True)
class FaceExpression:
    """Expression codes of a clip.

    codes: (T, 68, D) float32, the aligned face minus the neutral, in canonical face units
    (zero in frames without a face). neutral: (68, D) the driver's neutral, canonical.
    valid: (T,) bool, frames with a face. target: (T, 68, C) the target's neutral face wearing
    the expression, when `canonicalize_face` was given `target_neutral`, else None.
    """

    codes: np.ndarray
    neutral: np.ndarray
    valid: np.ndarray
    target: np.ndarray | None = None


def _faces(seq: np.ndarray, what: str, aspect: float, dims: int | None = None):
    """(T, 68, C), (T, 133, 4) or one frame of either -> metric (T, 68, D), conf (T, 68), C.

    C = 2 (x, y), 3 (x, y, z) or 4 (contract: with confidence; else every point counts).
    D = 3 when z is given and not all zero, else 2 (or `dims`)."""
    seq = np.array(seq, dtype=np.float64)
    if seq.ndim == 2:
        seq = seq[None]
    if seq.ndim == 3 and seq.shape[1] == K.NUM_KEYPOINTS:
        seq = seq[:, K.FACE]
    if seq.ndim != 3 or seq.shape[1] != 68 or seq.shape[2] not in (2, 3, 4) or not len(seq):
        raise InvalidInput(f"{what} must be (T, 68, 2|3|4) landmarks or (T, 133, 4) keypoints "
                           f"(or one frame of either), got {seq.shape}")
    channels = seq.shape[2]
    conf = np.clip(seq[..., 3], 0, 1) if channels == 4 else np.ones(seq.shape[:2])
    bad = ~np.isfinite(seq).all(axis=-1)
    seq[bad], conf[bad] = 0.0, 0.0
    xyz = np.zeros(seq.shape[:2] + (3,))
    xyz[..., : min(channels, 3)] = seq[..., :3]
    xyz = to_metric(xyz, aspect)
    if dims is None:
        dims = 3 if channels >= 3 and np.abs(xyz[..., 2]).max() > 0 else 2
    return xyz[..., :dims], conf, channels


def _canonical(face: np.ndarray, weights: np.ndarray):
    """Similarity (scale, rotation, translation) taking one face (68, D) to its canonical frame."""
    w = weights[STABLE]
    if (w > 0).sum() < MIN_STABLE:
        raise InvalidInput("a neutral face must show its eye corners and nose (confidence > 0); "
                           "use a frame where the face is visible")
    centre = w @ face[STABLE] / w.sum()
    spread = np.sqrt(w @ ((face[STABLE] - centre) ** 2).sum(axis=1) / w.sum())
    x = unit(face[list(LEFT_EYE)].mean(axis=0) - face[list(RIGHT_EYE)].mean(axis=0))
    if face.shape[1] == 2:
        rot = np.array([x, [-x[1], x[0]]])  # y: x turned +90 degrees, down in image axes
    else:
        down = face[NOSE_BASE] - (face[list(LEFT_EYE)].mean(axis=0)
                                  + face[list(RIGHT_EYE)].mean(axis=0)) / 2
        y = unit(down - (down @ x) * x)
        rot = np.array([x, y, np.cross(x, y)])
    scale = 1.0 / max(spread, EPS)
    return scale, rot, -scale * rot @ centre


def _apply(sim, pts: np.ndarray) -> np.ndarray:
    scale, rot, shift = sim
    return scale * pts @ rot.T + shift


def _invert(sim):
    scale, rot, shift = sim
    return 1.0 / scale, rot.T, -(rot.T @ shift) / scale


def _align(faces: np.ndarray, conf: np.ndarray, onto: np.ndarray,
           threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Each frame similarity-aligned on its stable points onto `onto` (68, D); frames with
    too few confident stable points are left zero and not valid."""
    aligned = np.zeros_like(faces)
    weights = np.where(conf[:, STABLE] >= threshold, conf[:, STABLE], 0.0)
    valid = (weights > 0).sum(axis=1) >= MIN_STABLE
    for t in np.flatnonzero(valid):
        sim = similarity_fit(faces[t, STABLE], onto[STABLE], weights[t])
        aligned[t] = _apply(sim, faces[t])
    return aligned, valid


def _estimate_neutral(faces: np.ndarray, conf: np.ndarray, threshold: float) -> np.ndarray:
    """The clip's typical face: per-point median of the aligned frames (a face that is mostly
    at rest in the clip), refined by re-aligning onto it."""
    ok = (conf[:, STABLE] >= threshold).sum(axis=1) >= MIN_STABLE
    if not ok.any():
        raise InvalidInput("no frame shows the driver's face (eyes and nose); give "
                           "driver_neutral or a clip in which the face is visible")
    first = int(np.argmax(ok))
    neutral = _apply(_canonical(faces[first], conf[first]), faces[first])
    for _ in range(NEUTRAL_ROUNDS):
        aligned, valid = _align(faces, conf, neutral, threshold)
        median = np.median(aligned[valid], axis=0)
        neutral = _apply(_canonical(median, np.ones(68)), median)
    return neutral


def canonicalize_face(driver_face_seq: np.ndarray, *, driver_neutral: np.ndarray | None = None,
                      target_neutral: np.ndarray | None = None, aspect: float = 1.0,
                      target_aspect: float = 1.0,
                      conf_threshold: float = CONF_THRESHOLD) -> FaceExpression:
    """Expression codes of a driver's face clip.

    driver_face_seq: (T, 68, 2|3|4) landmarks or (T, 133, 4) keypoints. driver_neutral: the
    driver's face at rest (68, C) or (133, 4); default: the clip's per-point median after
    alignment, which suits clips where the face is mostly at rest (talking, glancing); give it
    for clips that grin throughout. target_neutral: the reference character's face at rest; the
    result's `target` then holds it wearing the expression (see `apply_expression`). aspect:
    the frames' width / height. Codes are 3D when the landmarks carry z, else 2D.
    """
    faces, conf, _ = _faces(driver_face_seq, "driver_face_seq", aspect)
    dims = faces.shape[2]
    if driver_neutral is None:
        neutral = _estimate_neutral(faces, conf, conf_threshold)
    else:
        face, weights, _ = _faces(driver_neutral, "driver_neutral", aspect, dims)
        neutral = _apply(_canonical(face[0], weights[0]), face[0])
    aligned, valid = _align(faces, conf, neutral, conf_threshold)
    codes = np.where(valid[:, None, None], aligned - neutral, 0.0)
    result = FaceExpression(codes.astype(np.float32), neutral.astype(np.float32), valid)
    if target_neutral is None:
        return result
    target = apply_expression(result, target_neutral, aspect=target_aspect)
    return FaceExpression(result.codes, result.neutral, valid, target)


def apply_expression(expression: FaceExpression | np.ndarray, target_neutral: np.ndarray, *,
                     aspect: float = 1.0) -> np.ndarray:
    """The target's neutral face (68, C) or (133, 4) wearing each frame's expression ->
    (T, 68, C) in the target's own frame and head pose (C as given: 2, 3, or 4 with the
    target's confidences, 0 in frames without a code). A 2D target takes the x, y part of
    3D codes (the canonical frame looks at the face from the front)."""
    if isinstance(expression, FaceExpression):
        codes, valid = np.asarray(expression.codes, np.float64), expression.valid
    else:
        codes = np.asarray(expression, np.float64)
        if codes.ndim != 3 or codes.shape[1] != 68 or codes.shape[2] not in (2, 3):
            raise InvalidInput(f"expression codes must be (T, 68, 2|3), got {codes.shape}")
        valid = np.ones(len(codes), dtype=bool)
    face, weights, channels = _faces(target_neutral, "target_neutral", aspect)
    face, weights = face[0], weights[0]
    dims = face.shape[1]
    if codes.shape[2] < dims:
        raise InvalidInput("2D expression codes cannot drive a 3D target face; give the "
                           "target's landmarks without z, or codes computed with z")
    sim = _canonical(face, weights)
    canon = _apply(sim, face)[None] + codes[..., :dims]
    moved = np.zeros(codes.shape[:2] + (3,))
    moved[..., :dims] = _apply(_invert(sim), canon)
    out = from_metric(moved, aspect)[..., : min(channels, 3)]
    if channels == 4:
        out = np.concatenate([out, (weights[None] * valid[:, None])[..., None]], axis=-1)
    return out.astype(np.float32)
