"""Rotation helpers, vectorised over any leading shape.

Convention: intrinsic Euler 'XYZ' in radians, R = Rx(a) @ Ry(b) @ Rz(c), column vectors
(v_parent = R @ v_local). In the character frame x points to the character's left, y up and
z forward, so for a bone hanging down: z swings it sideways, x pitches it forward/back, y twists.
"""

from __future__ import annotations

import numpy as np


def axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices about x (0), y (1) or z (2); shape angle.shape + (3, 3)."""
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    if axis == 0:
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == 1:
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """(..., 3) intrinsic XYZ angles -> (..., 3, 3)."""
    euler = np.asarray(euler, dtype=np.float64)
    return (axis_rotation(0, euler[..., 0]) @ axis_rotation(1, euler[..., 1])
            @ axis_rotation(2, euler[..., 2]))


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) intrinsic XYZ angles (inverse of `euler_to_matrix`)."""
    b = np.arcsin(np.clip(rot[..., 0, 2], -1.0, 1.0))
    a = np.arctan2(-rot[..., 1, 2], rot[..., 2, 2])
    c = np.arctan2(-rot[..., 0, 1], rot[..., 0, 0])
    return np.stack([a, b, c], axis=-1)


def channel_rotation(axes: str, angles_deg: np.ndarray) -> np.ndarray:
    """BVH-style rotation: `axes` like 'ZXY', applied in the listed order (R = R1 @ R2 @ R3);
    angles_deg is (..., len(axes))."""
    rad = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rot = np.broadcast_to(np.eye(3), rad.shape[:-1] + (3, 3)).copy()
    for i, axis in enumerate(axes):
        rot = rot @ axis_rotation("XYZ".index(axis), rad[..., i])
    return rot


def align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction `src` onto direction `dst` (both (3,))."""
    a = src / np.linalg.norm(src)
    b = dst / np.linalg.norm(dst)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # opposite: any perpendicular axis, half a turn
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def mirror_euler(euler: np.ndarray) -> np.ndarray:
    """Angles of the left/right mirrored joint (reflection x -> -x keeps x, negates y and z)."""
    return np.asarray(euler) * np.array([1.0, -1.0, -1.0])
