"""A 68-point iBUG face on the front of an ellipsoid head, driven by expression channels.

The template lives in face coordinates (u, v) in [-1, 1] of the head's half-width and
half-height (u to the character's left, v up; iBUG index 0 is on the character's right).
Expressions move template points in (u, v); `face_points` then lifts them onto the head
surface, in the head joint's frame (metres), so head rotations carry the face with them.
"""

from __future__ import annotations

import numpy as np

from models.errors import InvalidInput

# One value per frame and channel; 0 everywhere is the neutral face.
EXPRESSION_CHANNELS = ("blink", "brow_raise", "brow_furrow", "jaw_open", "smile", "mouth_wide")
NUM_EXPRESSION = len(EXPRESSION_CHANNELS)
EXPR = {name: i for i, name in enumerate(EXPRESSION_CHANNELS)}

# Named expressions and mouth shapes (visemes), as channel values.
EXPRESSIONS = {
    "neutral": {},
    "smile": {"smile": 1.0, "jaw_open": 0.1, "brow_raise": 0.2},
    "laugh": {"smile": 1.0, "jaw_open": 0.7, "blink": 0.4},
    "surprise": {"brow_raise": 1.0, "jaw_open": 0.8, "mouth_wide": -0.5, "blink": -0.4},
    "frown": {"brow_furrow": 1.0, "smile": -0.6},
    "eyes_closed": {"blink": 1.0},
}
VISEMES = {
    "A": {"jaw_open": 0.8, "mouth_wide": 0.1}, "E": {"jaw_open": 0.35, "mouth_wide": 0.8},
    "I": {"jaw_open": 0.2, "mouth_wide": 0.6}, "O": {"jaw_open": 0.6, "mouth_wide": -0.6},
    "U": {"jaw_open": 0.2, "mouth_wide": -0.9}, "M": {"jaw_open": 0.0, "mouth_wide": 0.0},
}


def expression(name_or_values: str | dict) -> np.ndarray:
    """A (NUM_EXPRESSION,) vector from a preset name, a viseme letter or {channel: value}."""
    values = name_or_values
    if isinstance(values, str):
        values = EXPRESSIONS.get(values, VISEMES.get(values))
        if values is None:
            raise InvalidInput(f"unknown expression {name_or_values!r}; choose one of "
                               f"{sorted(EXPRESSIONS) + sorted(VISEMES)}")
    out = np.zeros(NUM_EXPRESSION)
    for key, val in values.items():
        if key not in EXPR:
            raise InvalidInput(f"unknown expression channel {key!r}; channels: "
                               f"{EXPRESSION_CHANNELS}")
        out[EXPR[key]] = val
    return out


def _template() -> np.ndarray:
    """The neutral 68 (u, v) points."""
    pts = np.zeros((68, 2))
    phi = np.deg2rad(172 + np.arange(17) * 196 / 16)  # jaw: right ear, chin (8), left ear
    pts[0:17] = np.stack([0.97 * np.cos(phi), 0.05 + np.sin(phi)], -1)
    k = np.arange(5) / 4
    brow_v = 0.30 + 0.06 * np.sin(np.pi * k)
    pts[17:22] = np.stack([-0.66 + 0.52 * k, brow_v], -1)  # right brow, outer -> inner
    pts[22:27] = np.stack([0.14 + 0.52 * k, brow_v], -1)  # left brow, inner -> outer
    pts[27:31] = np.stack([np.zeros(4), np.linspace(0.12, -0.28, 4)], -1)  # bridge -> tip
    nostrils_v = [-0.33, -0.36, -0.37, -0.36, -0.33]
    pts[31:36] = np.stack([np.linspace(-0.16, 0.16, 5), nostrils_v], -1)
    # Eyes: corner, two upper-lid points, corner, two lower-lid points (iBUG goes from the
    # image-left corner in both eyes: outer for the right eye, inner for the left one).
    eye = np.array([[-3, 0], [-1, 3], [1, 3], [3, 0], [1, -3], [-1, -3]]) / 6
    pts[36:42] = eye * [0.30, 0.14] + [-0.36, 0.06]
    pts[42:48] = eye * [0.30, 0.14] + [0.36, 0.06]
    outer = [(-1, 0), (-0.6, 0.07), (-0.25, 0.09), (0, 0.07), (0.25, 0.09), (0.6, 0.07),
             (1, 0), (0.6, -0.08), (0.25, -0.1), (0, -0.105), (-0.25, -0.1), (-0.6, -0.08)]
    inner = [(-0.8, 0), (-0.3, 0.02), (0, 0.02), (0.3, 0.02),
             (0.8, 0), (0.3, -0.02), (0, -0.02), (-0.3, -0.02)]
    pts[48:68] = np.array(outer + inner) * [0.24, 1.0] + [0, -0.58]
    return pts


TEMPLATE = _template()
_UPPER_LID = np.array([37, 38, 43, 44])
_LOWER_LID = np.array([40, 41, 46, 47])
_LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
_CORNERS = np.array([48, 54, 60, 64])
_INNER_BROW = np.array([20, 21, 22, 23])


def face_uv(expr: np.ndarray) -> np.ndarray:
    """(T, NUM_EXPRESSION) -> (T, 68, 2) face coordinates."""
    expr = np.asarray(expr, dtype=np.float64)
    t = expr.shape[0]
    pts = np.broadcast_to(TEMPLATE, (t, 68, 2)).copy()
    blink, raise_, furrow, jaw, smile, wide = (expr[:, i, None] for i in range(NUM_EXPRESSION))
    # Eyes: lids meet at the eye's mid-line when blink = 1; brow raise widens them a little.
    open_ = np.clip(1 - blink + 0.25 * raise_, 0.0, 1.6)
    mid = TEMPLATE[36:48, 1].mean()
    for lids in (_UPPER_LID, _LOWER_LID):
        pts[:, lids, 1] = mid + (TEMPLATE[lids, 1] - mid) * open_
    # Brows: raise lifts all, furrow pulls the inner ends down and together.
    pts[:, 17:27, 1] += 0.10 * raise_
    pts[:, _INNER_BROW, 1] -= 0.07 * furrow
    pts[:, _INNER_BROW, 0] -= 0.05 * furrow * np.sign(TEMPLATE[_INNER_BROW, 0])
    # Mouth width (visemes 'E' wide, 'U' pucker), then the jaw drops the lower lip and chin.
    pts[:, 48:68, 0] *= 1 + 0.3 * wide
    drop = 0.28 * np.clip(jaw, 0, 1)
    pts[:, _LOWER_LIP, 1] -= drop
    pts[:, 61:64, 1] += 0.2 * drop  # the upper inner lip lifts off the lower one
    below_ear = np.clip((0.1 - TEMPLATE[0:17, 1]) / 1.1, 0, 1)
    pts[:, 0:17, 1] -= drop * below_ear
    # Smile: corners up and out (negative = frown).
    pts[:, _CORNERS, 1] += 0.10 * smile
    pts[:, _CORNERS, 0] += 0.04 * smile * np.sign(TEMPLATE[_CORNERS, 0])
    pts[:, _CORNERS, 1] -= 0.5 * drop
    return pts


def face_points(expr: np.ndarray, radii: tuple[float, float, float],
                center: tuple[float, float, float]) -> np.ndarray:
    """(T, 68, 3) landmarks in the head frame: the (u, v) points on the ellipsoid with
    half-axes `radii` (x, y, z) around `center`; the nose tip stands out of the surface."""
    uv = face_uv(expr)
    rx, ry, rz = radii
    depth = np.sqrt(np.clip(1 - 0.85 * (uv ** 2).sum(-1), 0.02, 1))
    xyz = np.stack([uv[..., 0] * rx, uv[..., 1] * ry, depth * rz], -1)
    xyz[:, 27:31, 2] += np.linspace(0.05, 0.28, 4) * rz  # nose bridge -> tip
    xyz[:, 31:36, 2] += 0.12 * rz
    return xyz + np.asarray(center)
