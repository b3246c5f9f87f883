"""The articulated character: 17 joints whose forward kinematics gives the 133 keypoints.

Character frame: x to the character's left, y up, z forward, metres, ground at y = 0.
Rest pose (all angles 0): standing straight, arms hanging down, palms towards the body.
Joint angles are local intrinsic XYZ Euler angles (see `rotations.py`); the pelvis angles
orient the whole body and `root` moves it, in units of the character's leg length, so one
motion means the same thing on a toddler and on a tall adult.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import keypoints as K
from models.synthetic.character import Body
from models.synthetic.face import face_points
from models.synthetic.hands import hand_points
from models.synthetic.rotations import euler_to_matrix

JOINTS = ("pelvis", "spine", "chest", "neck", "head",
          "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
          "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle")
J = {name: i for i, name in enumerate(JOINTS)}
NUM_JOINTS = len(JOINTS)
PARENTS = (-1, 0, 1, 2, 3, 2, 5, 6, 2, 8, 9, 0, 11, 12, 0, 14, 15)
MIRROR = tuple(J[n.replace("l_", "#").replace("r_", "l_").replace("#", "r_")] for n in JOINTS)

# The relaxed standing pose every motion starts from: arms a little out, elbows soft.
NEUTRAL = np.zeros((NUM_JOINTS, 3))
NEUTRAL[J["l_shoulder"]] = (0.0, 0.0, 0.12)
NEUTRAL[J["r_shoulder"]] = (0.0, 0.0, -0.12)
NEUTRAL[J["l_elbow"]] = NEUTRAL[J["r_elbow"]] = (-0.15, 0.0, 0.0)

# Where the body joints sit in the COCO part of the whole-body keypoints.
_COCO_JOINTS = {5: "l_shoulder", 6: "r_shoulder", 7: "l_elbow", 8: "r_elbow", 9: "l_wrist",
                10: "r_wrist", 11: "l_hip", 12: "r_hip", 13: "l_knee", 14: "r_knee",
                15: "l_ankle", 16: "r_ankle"}


def offsets(b: Body) -> np.ndarray:
    """(NUM_JOINTS, 3) rest offset of each joint from its parent, in the parent's frame."""
    t = b.torso
    off = {
        "pelvis": (0, b.leg, 0), "spine": (0, 0.12 * t, 0), "chest": (0, 0.40 * t, 0),
        "neck": (0, 0.48 * t, 0), "head": (0, b.neck, 0),
        "l_shoulder": (b.shoulder_width / 2, 0.44 * t, 0), "l_elbow": (0, -b.upper_arm, 0),
        "l_wrist": (0, -b.forearm, 0), "l_hip": (b.hip_width / 2, 0, 0),
        "l_knee": (0, -b.thigh, 0), "l_ankle": (0, -b.shin, 0),
    }
    out = np.zeros((NUM_JOINTS, 3))
    for name, vec in off.items():
        out[J[name]] = vec
        if name.startswith("l_"):
            out[MIRROR[J[name]]] = (-vec[0], vec[1], vec[2])
    return out


def head_radii(b: Body) -> tuple[float, float, float]:
    return b.head_radius, 1.18 * b.head_radius, 1.05 * b.head_radius


def head_center(b: Body) -> tuple[float, float, float]:
    """Centre of the head ellipsoid in the head joint's frame (the joint is the neck top)."""
    return 0.0, 0.78 * head_radii(b)[1], 0.06 * b.head_radius


def foot_points(b: Body) -> np.ndarray:
    """Big toe, small toe, heel of the LEFT foot in the ankle frame."""
    return np.array([[-0.10 * b.foot, -b.ankle, 0.72 * b.foot],
                     [0.13 * b.foot, -b.ankle, 0.58 * b.foot],
                     [0.0, -b.ankle, -0.22 * b.foot]])


@dataclass
class Pose:
    """Forward kinematics of a clip, character frame (metres)."""

    joints: np.ndarray  # (T, NUM_JOINTS, 3)
    rotations: np.ndarray  # (T, NUM_JOINTS, 3, 3) global joint orientations
    keypoints: np.ndarray  # (T, 133, 3) the whole-body keypoints
    head_center: np.ndarray  # (T, 3)
    body: Body


def _place(rot: np.ndarray, pos: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Local points (T, N, 3) or (N, 3) -> global with frames rot (T, 3, 3), pos (T, 3)."""
    return np.einsum("tij,t...j->t...i", rot, np.broadcast_to(local, pos.shape[:1] +
                                                                  local.shape[-2:])) + pos[:, None]


def forward_kinematics(b: Body, angles: np.ndarray, root: np.ndarray,
                       face: np.ndarray, hands: np.ndarray) -> Pose:
    """angles (T, NUM_JOINTS, 3), root (T, 3) in leg lengths, face (T, NUM_EXPRESSION),
    hands (T, 2, NUM_GESTURE) for (left, right) -> Pose."""
    local = euler_to_matrix(angles)
    off = offsets(b)
    t = angles.shape[0]
    rot = np.empty((t, NUM_JOINTS, 3, 3))
    pos = np.empty((t, NUM_JOINTS, 3))
    rot[:, 0] = local[:, 0]
    pos[:, 0] = off[0] + np.asarray(root, dtype=np.float64) * b.leg
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        rot[:, j] = rot[:, p] @ local[:, j]
        pos[:, j] = pos[:, p] + rot[:, p] @ off[j]

    kps = np.zeros((t, K.NUM_KEYPOINTS, 3))
    for index, name in _COCO_JOINTS.items():
        kps[:, index] = pos[:, J[name]]
    head_rot, head_pos = rot[:, J["head"]], pos[:, J["head"]]
    radii, center = head_radii(b), head_center(b)
    face_local = face_points(face, radii, center)
    kps[:, K.FACE] = _place(head_rot, head_pos, face_local)
    kps[:, 0] = kps[:, K.FACE.start + 30]  # nose tip
    kps[:, 1] = kps[:, K.FACE.start + 42:K.FACE.start + 48].mean(1)  # left eye
    kps[:, 2] = kps[:, K.FACE.start + 36:K.FACE.start + 42].mean(1)
    ears = np.array([[radii[0], -0.05 * radii[1], -0.1 * radii[2]],
                     [-radii[0], -0.05 * radii[1], -0.1 * radii[2]]]) + center
    kps[:, 3:5] = _place(head_rot, head_pos, ears)

    feet = foot_points(b)
    mirror = np.array([-1.0, 1.0, 1.0])
    kps[:, 17:20] = _place(rot[:, J["l_ankle"]], pos[:, J["l_ankle"]], feet)
    kps[:, 20:23] = _place(rot[:, J["r_ankle"]], pos[:, J["r_ankle"]], feet * mirror)
    left = hand_points(hands[:, 0], b.hand)
    right = hand_points(hands[:, 1], b.hand) * mirror
    kps[:, K.LEFT_HAND] = _place(rot[:, J["l_wrist"]], pos[:, J["l_wrist"]], left)
    kps[:, K.RIGHT_HAND] = _place(rot[:, J["r_wrist"]], pos[:, J["r_wrist"]], right)
    centre = _place(head_rot, head_pos, np.asarray(center)[None])[:, 0]
    return Pose(joints=pos, rotations=rot, keypoints=kps, head_center=centre, body=b)
