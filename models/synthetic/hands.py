"""A 21-point hand (MediaPipe order) driven by one curl per finger and a spread.

Gesture vector per hand: (thumb, index, middle, ring, little) curl in [0, 1] (0 straight,
1 fully bent) and spread in [0, 1]. Points come out in the wrist joint's frame (metres) of
the LEFT hand: at rest the fingers point down (-y), the palm faces the body (-x) and the
thumb is in front (+z); the right hand is its mirror image (x -> -x).
"""

from __future__ import annotations

import numpy as np

from models.errors import InvalidInput

GESTURE_CHANNELS = ("thumb", "index", "middle", "ring", "little", "spread")
NUM_GESTURE = len(GESTURE_CHANNELS)

GESTURES = {
    "relaxed": (0.25, 0.2, 0.25, 0.3, 0.35, 0.3),
    "open": (0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    "flat": (0.1, 0.0, 0.0, 0.0, 0.0, 0.0),  # clapping, facepalm
    "fist": (0.8, 1.0, 1.0, 1.0, 1.0, 0.0),
    "point": (0.8, 0.0, 1.0, 1.0, 1.0, 0.2),
    "peace": (0.8, 0.0, 0.0, 1.0, 1.0, 0.9),
    "thumbs_up": (0.0, 1.0, 1.0, 1.0, 1.0, 0.0),
}

# Finger geometry as fractions of the hand length: knuckle across the palm (+z is the thumb
# side), knuckle height along the palm, and the three segment lengths.
_ACROSS = np.array([0.13, 0.045, -0.045, -0.13])
_KNUCKLE = np.array([0.46, 0.47, 0.45, 0.41])
_SEGMENTS = np.array([[0.22, 0.13, 0.11], [0.24, 0.15, 0.12], [0.22, 0.14, 0.11],
                      [0.17, 0.10, 0.10]])
_THUMB_SEGMENTS = np.array([0.16, 0.13, 0.12])  # CMC->MCP->IP->tip
_BEND = np.deg2rad([80.0, 100.0, 70.0])  # full curl per finger joint
_DOWN, _PALM, _THUMB_SIDE = np.array([0, -1.0, 0]), np.array([-1.0, 0, 0]), np.array([0, 0, 1.0])


def gesture(name: str) -> np.ndarray:
    if name not in GESTURES:
        raise InvalidInput(f"unknown gesture {name!r}; choose one of {sorted(GESTURES)}")
    return np.array(GESTURES[name], dtype=np.float64)


def _chain(base: np.ndarray, direction: np.ndarray, towards: np.ndarray,
           lengths: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(T, n, 3) joints of a finger from `base`: each joint turns the running direction
    further towards `towards` (the palm side) by its angle (T, n). direction is (T, 3)."""
    bend = towards - (towards * direction).sum(-1, keepdims=True) * direction
    bend = _unit(bend)  # the part of `towards` perpendicular to the finger
    pts, pos, total = [], base, 0.0
    for i, length in enumerate(lengths):
        total = total + angles[:, i, None]
        pos = pos + length * (np.cos(total) * direction + np.sin(total) * bend)
        pts.append(pos)
    return np.stack(pts, 1)


def hand_points(gestures: np.ndarray, length: float) -> np.ndarray:
    """(T, NUM_GESTURE) -> (T, 21, 3) left-hand points in the wrist frame (metres)."""
    g = np.clip(np.asarray(gestures, dtype=np.float64), 0.0, 1.0)
    out = np.zeros((g.shape[0], 21, 3))
    for f in range(4):
        fan = np.deg2rad(9.0) * (1.5 - f) * g[:, 5, None]  # spread fans out from the middle
        direction = np.cos(fan) * _DOWN + np.sin(fan) * _THUMB_SIDE
        base = length * (_KNUCKLE[f] * _DOWN + _ACROSS[f] * _THUMB_SIDE)
        out[:, 5 + 4 * f] = base
        out[:, 6 + 4 * f:9 + 4 * f] = _chain(base, direction, _PALM, length * _SEGMENTS[f],
                                             g[:, 1 + f, None] * _BEND)
    # Thumb: from the base of the palm on the thumb side, pointing down and out; curling
    # folds it across the palm (towards the little finger and the palm side).
    base = length * (0.08 * _DOWN + 0.09 * _THUMB_SIDE + 0.03 * _PALM)
    out[:, 1] = base
    curl = g[:, 0, None]
    rest_dir = _unit(0.55 * _DOWN + 0.75 * _THUMB_SIDE + 0.2 * _PALM)
    folded_dir = _unit(0.5 * _DOWN - 0.35 * _THUMB_SIDE + 0.8 * _PALM)
    direction = _unit((1 - curl) * rest_dir + curl * folded_dir)
    out[:, 2:5] = _chain(base, direction, _PALM, length * _THUMB_SEGMENTS,
                         curl * np.deg2rad([10.0, 40.0, 40.0]))
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)
