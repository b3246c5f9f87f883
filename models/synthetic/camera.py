"""Per-frame camera: pan, tilt and zoom of an orthographic camera facing the character.

pan_x and pan_y move the view centre (in frames at zoom 1: pan_x = 0.1 moves the view a
tenth of a frame to the right, so the character slides left; pan_y > 0 tilts up); zoom
scales about the view centre. These three numbers per frame are the camera annotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import InvalidInput

# Named moves (the vocabulary the prompt enhancer extracts) as (pan_x, pan_y, zoom) at the
# end of the clip for amount = 1; they start from the neutral framing. zoom_in also tilts up
# so that it closes in on the upper body and face.
MOVES = {
    "static": (0.0, 0.0, 1.0), "pan_left": (-0.25, 0.0, 1.0), "pan_right": (0.25, 0.0, 1.0),
    "tilt_up": (0.0, 0.2, 1.0), "tilt_down": (0.0, -0.2, 1.0), "zoom_in": (0.0, 0.25, 1.8),
    "zoom_out": (0.0, 0.0, 0.6),
}


@dataclass(frozen=True, eq=False)
class CameraPath:
    pan_x: np.ndarray  # (T,)
    pan_y: np.ndarray
    zoom: np.ndarray
    move: str = "custom"

    def __post_init__(self) -> None:
        arrays = [np.asarray(a, dtype=np.float64) for a in (self.pan_x, self.pan_y, self.zoom)]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
            raise InvalidInput("camera pan_x, pan_y and zoom must be 1-D arrays of equal length")
        if not all(np.isfinite(a).all() for a in arrays):
            raise InvalidInput("camera parameters contain NaN or inf")
        if arrays[2].min(initial=1.0) <= 0:
            raise InvalidInput("camera zoom must be positive")
        for name, value in zip(("pan_x", "pan_y", "zoom"), arrays, strict=True):
            object.__setattr__(self, name, value)

    @property
    def frames(self) -> int:
        return len(self.zoom)

    @classmethod
    def static(cls, frames: int, pan_x: float = 0.0, pan_y: float = 0.0,
               zoom: float = 1.0) -> CameraPath:
        return cls.linear(frames, (pan_x, pan_y, zoom), (pan_x, pan_y, zoom), move="static")

    @classmethod
    def linear(cls, frames: int, start: tuple[float, float, float],
               end: tuple[float, float, float], move: str = "custom") -> CameraPath:
        """From (pan_x, pan_y, zoom) `start` to `end`, eased in and out; zoom is geometric."""
        if frames < 1:
            raise InvalidInput(f"frames must be >= 1, got {frames}")
        s = np.linspace(0.0, 1.0, frames)
        s = s * s * (3 - 2 * s)
        (x0, y0, z0), (x1, y1, z1) = start, end
        if min(z0, z1) <= 0:
            raise InvalidInput(f"camera zoom must be positive, got {z0} and {z1}")
        return cls(x0 + (x1 - x0) * s, y0 + (y1 - y0) * s, z0 * (z1 / z0) ** s, move=move)

    @classmethod
    def named(cls, move: str, frames: int, amount: float = 1.0) -> CameraPath:
        """A named move from `MOVES`, scaled by `amount` in [0, 1]."""
        if move not in MOVES:
            raise InvalidInput(f"unknown camera move {move!r}; choose one of {sorted(MOVES)}")
        px, py, zoom = MOVES[move]
        return cls.linear(frames, (0.0, 0.0, 1.0), (amount * px, amount * py, zoom ** amount),
                          move=move)

    @classmethod
    def random(cls, frames: int, seed: int, strength: float = 1.0) -> CameraPath:
        """A named move picked and scaled by `seed` (strength 0 gives a static camera)."""
        rng = np.random.default_rng(seed)
        move = str(rng.choice(list(MOVES)))
        return cls.named(move, frames, amount=strength * float(rng.uniform(0.4, 1.0)))

    def as_dict(self) -> dict:
        return {"move": self.move, "pan_x": self.pan_x.tolist(), "pan_y": self.pan_y.tolist(),
                "zoom": self.zoom.tolist()}


@dataclass(frozen=True)
class Framing:
    """Maps the character frame (metres) to frame units at zoom 1: the neutral pose's
    centre goes to the frame centre and `extent` metres span the frame height."""

    center: tuple[float, float, float]
    extent: float

    @classmethod
    def fit(cls, points: np.ndarray, fill: float = 0.85) -> Framing:
        """Frame (N, 3) character-frame points so they fill `fill` of the frame."""
        lo, hi = points.min(0), points.max(0)
        size = max(hi[1] - lo[1], hi[0] - lo[0])
        return cls(center=tuple(float(c) for c in (lo + hi) / 2), extent=float(size / fill))


def project(points: np.ndarray, framing: Framing, camera: CameraPath) -> np.ndarray:
    """(T, N, 3) character-frame points -> (T, N, 3) (x, y, z) in frame units: x right,
    y down in [0, 1] when inside the frame, z depth (larger = farther) in the same units.
    The camera looks at the character's front, so its left (+x) is the image's right."""
    zoom = camera.zoom[:, None]
    rel = (points - np.asarray(framing.center)) / framing.extent
    x = 0.5 + zoom * (rel[..., 0] - camera.pan_x[:, None])
    y = 0.5 - zoom * (rel[..., 1] - camera.pan_y[:, None])
    z = -zoom * rel[..., 2]
    return np.stack([x, y, z], -1)
