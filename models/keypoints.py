"""The one whole-body keypoint format used everywhere (COCO-WholeBody order, 133 points).

Per frame an array of shape (133, 4): `(x, y, z, confidence)`, x and y normalised to [0, 1]
of the frame (x right, y down), z relative depth (same units as x, larger = farther from the
camera), confidence in [0, 1] (0 = not detected; such points carry no meaning).
Points outside the frame keep their coordinates with confidence 0.
A clip is (T, 133, 4) float32. Extractors (MediaPipe for real footage, ground truth for
synthetic renders) all map into it.
"""

from __future__ import annotations

import numpy as np

NUM_KEYPOINTS = 133
X, Y, Z, CONF = 0, 1, 2, 3

BODY = slice(0, 17)  # COCO 17
FEET = slice(17, 23)  # 6 foot points
FACE = slice(23, 91)  # 68 iBUG face landmarks
LEFT_HAND = slice(91, 112)  # 21 hand points (the person's left)
RIGHT_HAND = slice(112, 133)

PARTS = {"body": BODY, "feet": FEET, "face": FACE, "left_hand": LEFT_HAND,
         "right_hand": RIGHT_HAND}

BODY_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
FEET_NAMES = ("left_big_toe", "left_small_toe", "left_heel",
              "right_big_toe", "right_small_toe", "right_heel")
BODY_INDEX = {name: i for i, name in enumerate(BODY_NAMES + FEET_NAMES)}

# Bones as (a, b) in whole-body indices, for drawing and bone lengths. Not a tree: the torso
# sides (5, 11), (6, 12) and the nose hanging off both shoulders close loops; retargeting walks
# its own tree from virtual hip and shoulder centres (models/motion/retarget.py).
BODY_EDGES = (
    (11, 13), (13, 15), (12, 14), (14, 16),  # legs
    (11, 12), (5, 11), (6, 12),  # pelvis and torso sides
    (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),  # shoulders and arms
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 0), (6, 0),  # head
    (15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22),  # feet
)

# MediaPipe/OpenPose hand order: 0 wrist, then thumb 1-4, index 5-8, middle 9-12,
# ring 13-16, little 17-20 (each from the knuckle to the tip).
HAND_EDGES_LOCAL = tuple(
    (0 if j == 0 else 1 + 4 * finger + j - 1, 1 + 4 * finger + j)
    for finger in range(5) for j in range(4)
)
LEFT_HAND_EDGES = tuple((LEFT_HAND.start + a, LEFT_HAND.start + b) for a, b in HAND_EDGES_LOCAL)
RIGHT_HAND_EDGES = tuple((RIGHT_HAND.start + a, RIGHT_HAND.start + b)
                         for a, b in HAND_EDGES_LOCAL)

# iBUG 68 groups (local indices within FACE).
FACE_GROUPS = {
    "jaw": range(0, 17), "right_brow": range(17, 22), "left_brow": range(22, 27),
    "nose": range(27, 36), "right_eye": range(36, 42), "left_eye": range(42, 48),
    "outer_lips": range(48, 60), "inner_lips": range(60, 68),
}


def empty(frames: int) -> np.ndarray:
    """An all-undetected clip of `frames` frames."""
    return np.zeros((frames, NUM_KEYPOINTS, 4), dtype=np.float32)


def validate(kps: np.ndarray) -> np.ndarray:
    """Check the shape and ranges of a (T, 133, 4) clip; returns it as float32."""
    kps = np.asarray(kps, dtype=np.float32)
    if kps.ndim != 3 or kps.shape[1:] != (NUM_KEYPOINTS, 4):
        raise ValueError(f"keypoints must be (T, {NUM_KEYPOINTS}, 4), got {kps.shape}")
    if not np.isfinite(kps).all():
        raise ValueError("keypoints contain NaN or inf")
    conf = kps[..., CONF]
    if conf.min(initial=0) < 0 or conf.max(initial=0) > 1:
        raise ValueError("keypoint confidence must lie in [0, 1]")
    return kps
