"""Procedural backgrounds, drawn once per clip on a canvas larger than the frame and then
warped with the camera (so pans and zooms move the scene as well as the character)."""

from __future__ import annotations

import cv2
import numpy as np

from models.synthetic.character import Background

MARGIN = 2.0  # the canvas spans this many frames, centred on the frame at zoom 1
HORIZON = 0.38  # 'floor': the wall meets the floor this far below the frame centre


def canvas(bg: Background, size: int) -> np.ndarray:
    """(n, n, 3) uint8 RGB canvas, n = MARGIN * size, for the background spec."""
    n = int(round(MARGIN * size))
    a, b = (np.array(c, dtype=np.float32) for c in bg.colors)
    u = np.linspace(0, MARGIN, n, dtype=np.float32)  # canvas position, in frames
    rows, cols = u[:, None, None], u[None, :, None]
    period = max(bg.scale, 1e-3)
    if bg.kind == "solid":
        weight = np.zeros((n, n, 1), np.float32)
    elif bg.kind == "vertical_gradient":
        weight = np.broadcast_to(rows / MARGIN, (n, n, 1))
    elif bg.kind == "horizontal_gradient":
        weight = np.broadcast_to(cols / MARGIN, (n, n, 1))
    elif bg.kind == "floor":
        weight = np.broadcast_to(rows > MARGIN / 2 + HORIZON, (n, n, 1))
    elif bg.kind == "stripes":  # diagonal bands
        weight = (cols + 0.5 * rows) // period % 2
    elif bg.kind == "checker":
        weight = (cols // period + rows // period) % 2
    elif bg.kind == "dots":
        img = np.zeros((n, n), np.uint8)
        rng = np.random.default_rng(bg.seed)
        count = int((MARGIN / period) ** 2)
        for x, y, r in zip(rng.uniform(0, n, count), rng.uniform(0, n, count),
                           rng.uniform(0.1, 0.3, count) * period * size, strict=True):
            cv2.circle(img, (int(x), int(y)), max(1, int(r)), 1, -1)
        weight = img[..., None].astype(np.float32)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    return (a + (b - a) * weight).astype(np.uint8)


def view(canvas_img: np.ndarray, size: int, pan_x: float, pan_y: float,
         zoom: float) -> np.ndarray:
    """The (size, size, 3) frame the camera sees of a canvas (same mapping as
    `camera.project`: canvas pixel c lands on size * (0.5 + zoom * (c/size - MARGIN/2 - pan)))."""
    if zoom == 1.0 and pan_x == 0.0 and pan_y == 0.0:
        o = (canvas_img.shape[0] - size) // 2
        return canvas_img[o:o + size, o:o + size].copy()
    tx = size * (0.5 - zoom * (MARGIN / 2 + pan_x))
    ty = size * (0.5 - zoom * (MARGIN / 2 - pan_y))
    m = np.array([[zoom, 0, tx], [0, zoom, ty]], dtype=np.float32)
    return cv2.warpAffine(canvas_img, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
