"""Clip annotations: action phrase, motion intensity, camera move, and a caption from them."""

from __future__ import annotations

import numpy as np

from models import keypoints as kp
from models.curation.base import CurationThresholds, check_frames
from models.curation.optical_flow import (
    ClipFlow,
    as_flow,
    camera_motion,
    classify_camera,
    intensity_label,
    intensity_level,
    motion_intensity,
)

CAMERA_PHRASES = {
    "static": "static camera",
    "pan_left": "camera panning left",
    "pan_right": "camera panning right",
    "tilt_up": "camera tilting up",
    "tilt_down": "camera tilting down",
    "zoom_in": "camera zooming in",
    "zoom_out": "camera zooming out",
}

# (limb, the person's own side) -> (middle, end) joints; phrases name the person's sides.
_LIMBS = {
    ("arm", "left"): (7, 9), ("arm", "right"): (8, 10),
    ("leg", "left"): (13, 15), ("leg", "right"): (14, 16),
}
_NOSE, _SHOULDERS, _HIPS = 0, [5, 6], [11, 12]
_WRIST = {"left": 9, "right": 10}
_SHOULDER = {"left": 5, "right": 6}


def _mean_of(points: np.ndarray, seen: np.ndarray, joints) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame centre of some joints, and whether all of them were seen."""
    return points[:, joints].mean(axis=1), seen[:, joints].all(axis=1)


def _speed(path: np.ndarray, valid: np.ndarray) -> float:
    """Mean per-frame displacement over consecutive frames where the point was seen."""
    both = valid[1:] & valid[:-1]
    if not both.any():
        return 0.0
    return float(np.linalg.norm(np.diff(path, axis=0)[both], axis=1).mean())


def action_phrase_from_keypoints(keypoints: np.ndarray, th: CurationThresholds,
                                 aspect: float = 1.0) -> str | None:
    """A simple phrase from which body parts move most: "walking", "waving the right hand",
    "moving the left leg", "moving the head", "standing still"...

    Speeds are relative to the hip centre (so swaying is not waving) and in torso lengths
    per frame; `aspect` (width / height of the frame) makes x and y commensurable. None when
    the torso is never seen (nothing to measure against)."""
    kps = kp.validate(keypoints)
    points = kps[..., :2] * np.array([aspect, 1.0], np.float32)
    seen = kps[..., kp.CONF] >= th.keypoint_confidence
    hip, hip_seen = _mean_of(points, seen, _HIPS)
    shoulder, shoulder_seen = _mean_of(points, seen, _SHOULDERS)
    torso_seen = hip_seen & shoulder_seen
    if not torso_seen.any():
        return None
    torso = float(np.median(np.linalg.norm(shoulder - hip, axis=1)[torso_seen]))
    torso = max(torso, 1e-3)

    first, last = np.flatnonzero(hip_seen)[[0, -1]]
    travel = np.linalg.norm(hip[last] - hip[first]) / max(last - first, 1) / torso
    speeds = {}
    for (limb, side), joints in _LIMBS.items():
        speeds[limb, side] = max(_speed(points[:, j] - hip, seen[:, j] & hip_seen) / torso
                                 for j in joints)
    head = _speed(points[:, _NOSE] - shoulder, seen[:, _NOSE] & shoulder_seen) / torso

    legs_move = max(speeds["leg", "left"], speeds["leg", "right"]) > th.action_speed
    if travel > th.action_speed and legs_move:
        return "walking"
    (limb, side), fastest = max(speeds.items(), key=lambda item: item[1])
    if max(fastest, head) <= th.action_speed:
        return "standing still"
    if head > fastest:
        return "moving the head"
    other = speeds[limb, _other(side)]
    if limb == "leg":
        return "moving both legs" if other > th.action_speed else f"moving the {side} leg"
    raised = _raised(points, seen, side)
    if other <= th.action_speed:
        return f"waving the {side} hand" if raised else f"moving the {side} arm"
    both_raised = raised and _raised(points, seen, _other(side))
    return "waving both hands" if both_raised else "moving both arms"


def _other(side: str) -> str:
    return "left" if side == "right" else "right"


def _raised(points: np.ndarray, seen: np.ndarray, side: str) -> bool:
    """Whether the wrist is above the shoulder in most frames where both are seen."""
    wrist, shoulder = _WRIST[side], _SHOULDER[side]
    both = seen[:, wrist] & seen[:, shoulder]
    return bool(both.any() and (points[both, wrist, 1] < points[both, shoulder, 1]).mean() > 0.5)


def caption(action_phrase: str, intensity_words: str, camera: str) -> str:
    """"a person waving the right hand, moderate motion, camera panning left"."""
    return f"a person {action_phrase}, {intensity_words} motion, {CAMERA_PHRASES[camera]}"


def annotate(frames: np.ndarray, keypoints: np.ndarray | None, th: CurationThresholds,
             action_phrase: str | None = None, flow: ClipFlow | None = None) -> dict:
    """Annotations of one clip: `action_phrase` (passed through when known, e.g. from the
    synthetic generator, else from the keypoints), `motion_intensity` (short sides/frame,
    see `motion_intensity`), `motion_level` (its bucket), `camera` (move class),
    `camera_motion` (the fitted global motion) and `caption`."""
    frames = check_frames(frames, min_frames=2)
    flow = flow if flow is not None else as_flow(frames, th)
    intensity = motion_intensity(flow, th)
    global_motion = camera_motion(flow, th)
    camera = classify_camera(global_motion, th)
    if action_phrase is None and keypoints is not None:
        action_phrase = action_phrase_from_keypoints(keypoints, th,
                                                     aspect=frames.shape[2] / frames.shape[1])
    if action_phrase is None:  # no body to tell the limbs apart: say only whether it moves
        action_phrase = "moving" if intensity_level(intensity, th) > 0 else "standing still"
    words = intensity_label(intensity, th)
    return {
        "action_phrase": action_phrase,
        "motion_intensity": intensity,
        "motion_level": intensity_level(intensity, th),
        "camera": camera,
        "camera_motion": global_motion,
        "caption": caption(action_phrase, words, camera),
    }
