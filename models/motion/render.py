"""Pose maps: the skeleton drawn as an image, the teacher's body / hand / face conditions.

Body bones get a fixed colour each (hues evenly spaced over the bones, as OpenPose's maps do),
hand bones one hue per finger (the right hand's hues shifted by half a step, so the two hands
differ), face landmarks white dots. Everything drawn is sorted by depth, farthest first, and
darkened with depth, so a nearer limb covers a farther one where they cross and the map keeps
the 3D order that 2D keypoints lose.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from models import keypoints as K
from models.errors import InvalidInput

CONF_THRESHOLD = 0.3  # points below this are not drawn
# Brightness = clip(DEPTH_MID - DEPTH_GAIN * depth, DEPTH_MIN, 1), depth in units of the body's
# spread around its own centre: a hand reaching half a body-size towards the camera is at full
# brightness, one a body-size behind at 40%.
DEPTH_MID, DEPTH_GAIN, DEPTH_MIN = 0.8, 0.4, 0.3
SUBPIXEL_BITS = 4  # cv2 fixed-point drawing, so thin lines do not jitter by a pixel
PARTS = ("body", "hands", "face")


def _rgb(hue: float, value: float = 1.0) -> tuple[float, float, float]:
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb(hue % 1.0, 1.0, value))


BODY_BONE_COLORS = [_rgb(i / len(K.BODY_EDGES)) for i in range(len(K.BODY_EDGES))]
BODY_JOINT_COLORS = [_rgb(i / 23) for i in range(23)]  # body 17 + feet 6
FINGER_HUES = np.arange(5) / 5  # thumb, index, middle, ring, little
HAND_HUE_SHIFT = {"left": 0.0, "right": 0.1}
FACE_COLOR = (255.0, 255.0, 255.0)
WRIST_COLOR = (255.0, 255.0, 255.0)
_CLOSED_GROUPS = ("right_eye", "left_eye", "outer_lips", "inner_lips")
# The iBUG contours as bones (jaw, brows, nose bridge and base, closed eyes and lips).
FACE_EDGES = tuple(
    (K.FACE.start + a, K.FACE.start + b)
    for name, group in K.FACE_GROUPS.items()
    for a, b in zip(group, [*group[1:], group[0]] if name in _CLOSED_GROUPS else group[1:],
                    strict=False)
)


@dataclass(frozen=True)
class _Prim:
    """One thing to draw: a bone (two keypoint indices) or a dot (one), at its mean depth."""

    z: float
    points: tuple[int, ...]
    color: tuple[float, float, float]
    width: int


def _size_ok(size) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise InvalidInput(f"size must be (height, width) in pixels, got {size}")
    return int(size[0]), int(size[1])


def _as_clip(kps) -> tuple[np.ndarray, bool]:
    kps = np.asarray(kps, dtype=np.float32)
    single = kps.ndim == 2
    try:
        return K.validate(kps[None] if single else kps), single
    except ValueError as err:
        raise InvalidInput(f"keypoints: {err}") from err


def _depth_frame(kps: np.ndarray, aspect: float,
                 conf_threshold: float) -> tuple[np.ndarray, float]:
    """Per frame the depth centre of the confident body points, and one body size for the
    clip (median spread of the body in width units), so brightness does not flicker."""
    body = kps[:, : K.FEET.stop]
    ok = body[..., K.CONF] >= conf_threshold
    centre = np.zeros(len(kps))
    spreads = []
    for t in range(len(kps)):
        if ok[t].sum() >= 2:
            pts = body[t, ok[t], :3].astype(np.float64)
            pts[:, 1] /= aspect
            centre[t] = np.median(pts[:, 2])
            spreads.append(np.sqrt(pts[:, :2].var(axis=0).sum()))
    return centre, float(np.median(spreads)) if spreads else 1.0


def _brightness(z: float, centre: float, spread: float) -> float:
    return min(1.0, max(DEPTH_MIN, DEPTH_MID - DEPTH_GAIN * (z - centre) / max(spread, 1e-6)))


def _primitives(kp: np.ndarray, parts: Sequence[str], width: int, conf_threshold: float,
                face_lines: bool) -> list[_Prim]:
    ok = (kp[:, K.CONF] >= conf_threshold).tolist()
    z = kp[:, K.Z].tolist()
    prims: list[_Prim] = []

    def bones(edges, colors, w):
        for (a, b), color in zip(edges, colors, strict=True):
            if ok[a] and ok[b]:
                prims.append(_Prim((z[a] + z[b]) / 2, (a, b), color, w))

    def dots(indices, colors, w):
        for i, color in zip(indices, colors, strict=True):
            if ok[i]:
                prims.append(_Prim(z[i], (i,), color, w))

    if "body" in parts:
        bones(K.BODY_EDGES, BODY_BONE_COLORS, width)
        dots(range(K.FEET.stop), BODY_JOINT_COLORS, width)
    if "hands" in parts:
        hand_w = max(1, width // 2)
        for side, edges in (("left", K.LEFT_HAND_EDGES), ("right", K.RIGHT_HAND_EDGES)):
            colors = [_rgb(FINGER_HUES[i // 4] + HAND_HUE_SHIFT[side]) for i in range(20)]
            bones(edges, colors, hand_w)
            start = K.PARTS[f"{side}_hand"].start
            dots(range(start, start + 21), [WRIST_COLOR] + colors, hand_w)
    if "face" in parts:
        face_w = max(1, width // 3)
        if face_lines:
            bones(FACE_EDGES, [FACE_COLOR] * len(FACE_EDGES), face_w)
        dots(range(K.FACE.start, K.FACE.stop), [FACE_COLOR] * 68, face_w)
    return prims


def _draw(canvas: np.ndarray, kp: np.ndarray, parts: Sequence[str], width: int,
          conf_threshold: float, depth: tuple[float, float] | None,
          face_lines: bool = False) -> np.ndarray:
    """Draw one frame's primitives on `canvas` (H, W, 3) RGB in place, farthest first."""
    h, w = canvas.shape[:2]
    # cv2's fixed-point coordinates of every keypoint at once (a per-point conversion was
    # most of the cost). Clipped far out, so a wild point cannot overflow them.
    scale = np.array([w, h]) * (1 << SUBPIXEL_BITS)
    xy = np.round(np.clip(kp[:, :2], -8, 9) * scale).astype(int).tolist()
    prims = _primitives(kp, parts, width, conf_threshold, face_lines)
    for prim in sorted(prims, key=lambda p: -p.z):
        gain = _brightness(prim.z, *depth) if depth is not None else 1.0
        color = tuple(c * gain for c in prim.color)
        if len(prim.points) == 2:
            cv2.line(canvas, xy[prim.points[0]], xy[prim.points[1]], color, prim.width,
                     cv2.LINE_AA, SUBPIXEL_BITS)
        else:
            radius = max(1, prim.width) << SUBPIXEL_BITS
            cv2.circle(canvas, xy[prim.points[0]], radius, color, -1, cv2.LINE_AA,
                       SUBPIXEL_BITS)
    return canvas


def default_width(size: tuple[int, int]) -> int:
    """Bone thickness in pixels: 4 at 512 px (OpenPose's stick width), at least 2."""
    return max(2, round(4 * min(size) / 512))


def render_pose_map(kps: np.ndarray, size: tuple[int, int], *, parts: Sequence[str] = PARTS,
                    conf_threshold: float = CONF_THRESHOLD, width: int | None = None,
                    depth_shading: bool = True, face_lines: bool = False) -> np.ndarray:
    """Draw keypoints on black: (133, 4) -> (H, W, 3) uint8 RGB, (T, 133, 4) -> (T, H, W, 3).

    parts: any of "body" (body 17 + feet), "hands", "face". width: bone thickness in pixels
    (default `default_width(size)`; hands half, face a third). face_lines: draw the iBUG
    contours, not only the 68 dots.
    """
    clip, single = _as_clip(kps)
    h, w = _size_ok(size)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise InvalidInput(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    width = width or default_width((h, w))
    centre, spread = _depth_frame(clip, w / h, conf_threshold)
    out = np.zeros((len(clip), h, w, 3), dtype=np.uint8)
    for t, kp in enumerate(clip):
        depth = (centre[t], spread) if depth_shading else None
        _draw(out[t], kp, parts, width, conf_threshold, depth, face_lines)
    return out[0] if single else out


def render_pose_maps(kps: np.ndarray, size: tuple[int, int], **kwargs) -> dict[str, np.ndarray]:
    """Separate condition maps {"body", "hands", "face"}, one `render_pose_map` per part."""
    return {part: render_pose_map(kps, size, parts=(part,), **kwargs) for part in PARTS}


def draw_overlay(frame: np.ndarray, kps: np.ndarray, *, parts: Sequence[str] = PARTS,
                 conf_threshold: float = CONF_THRESHOLD, width: int | None = None) -> np.ndarray:
    """A copy of `frame` (H, W, 3) uint8 RGB with the (133, 4) skeleton drawn over it (face
    as contours, for inspection)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidInput(f"frame must be (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}")
    clip, _ = _as_clip(kps)
    if len(clip) != 1:
        raise InvalidInput("draw_overlay takes one frame's (133, 4) keypoints")
    h, w = frame.shape[:2]
    width = width or max(1, default_width((h, w)) // 2)
    centre, spread = _depth_frame(clip, w / h, conf_threshold)
    return _draw(frame.copy(), clip[0], parts, width, conf_threshold, (centre[0], spread),
                 face_lines=True)
