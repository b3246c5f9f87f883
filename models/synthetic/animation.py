"""A motion: what the character does, independent of who the character is.

Joint angles (radians, see `skeleton.py`), a root offset in leg lengths, face expression
channels and hand gestures, sampled at `fps`. Rendering the same Motion on two characters
gives identical joint angles and keypoints that follow each character's own bones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from models.errors import InvalidInput
from models.synthetic.face import NUM_EXPRESSION
from models.synthetic.hands import NUM_GESTURE, gesture
from models.synthetic.skeleton import NEUTRAL, NUM_JOINTS


@dataclass(frozen=True, eq=False)
class Motion:
    angles: np.ndarray  # (T, NUM_JOINTS, 3) local XYZ Euler angles
    root: np.ndarray  # (T, 3) pelvis offset from standing, in leg lengths (x left, y up, z fwd)
    face: np.ndarray  # (T, NUM_EXPRESSION)
    hands: np.ndarray  # (T, 2, NUM_GESTURE), (left, right)
    fps: float
    action: str
    phrase: str
    intensity: float
    motion_id: str

    def __post_init__(self) -> None:
        t = len(self.angles)
        shapes = {"angles": (t, NUM_JOINTS, 3), "root": (t, 3), "face": (t, NUM_EXPRESSION),
                  "hands": (t, 2, NUM_GESTURE)}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value.shape != shape:
                raise InvalidInput(f"Motion.{name} must have shape {shape}, got {value.shape}")
            if not np.isfinite(value).all():
                raise InvalidInput(f"Motion.{name} contains NaN or inf")
        if t < 1:
            raise InvalidInput("a Motion needs at least one frame")
        if not self.fps > 0:
            raise InvalidInput(f"Motion.fps must be positive, got {self.fps}")

    @property
    def frames(self) -> int:
        return len(self.angles)

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def resample(self, fps: float) -> Motion:
        """The same motion at another frame rate (rotations slerped, the rest linear)."""
        if not fps > 0:
            raise InvalidInput(f"fps must be positive, got {fps}")
        if fps == self.fps:
            return self
        src = np.arange(self.frames) / self.fps
        dst = np.arange(max(1, int(round(self.duration * fps)))) / fps
        dst = np.minimum(dst, src[-1])
        if self.frames == 1:
            idx = np.zeros(len(dst), dtype=int)
            return replace(self, angles=self.angles[idx], root=self.root[idx],
                           face=self.face[idx], hands=self.hands[idx], fps=float(fps))
        angles = np.empty((len(dst), NUM_JOINTS, 3))
        for j in range(NUM_JOINTS):
            rot = Rotation.from_euler("XYZ", self.angles[:, j])
            angles[:, j] = Slerp(src, rot)(dst).as_euler("XYZ")

        def lerp(x: np.ndarray) -> np.ndarray:
            flat = x.reshape(len(x), -1)
            out = np.stack([np.interp(dst, src, flat[:, k]) for k in range(flat.shape[1])], 1)
            return out.reshape((len(dst),) + x.shape[1:])

        return replace(self, angles=angles, root=lerp(self.root), face=lerp(self.face),
                       hands=lerp(self.hands), fps=float(fps))

    def crop(self, frames: int, start: int = 0) -> Motion:
        """`frames` frames from `start` (a window of a long mocap take, say); the window
        gets its own motion_id so cross-identity groups stay distinct."""
        if not (frames >= 1 and start >= 0 and start + frames <= self.frames):
            raise InvalidInput(f"motion {self.motion_id!r} has {self.frames} frames at "
                               f"{self.fps:g} fps; cannot take {frames} from frame {start}")
        window = slice(start, start + frames)
        motion_id = self.motion_id if start == 0 else f"{self.motion_id}@{start}"
        return replace(self, angles=self.angles[window], root=self.root[window],
                       face=self.face[window], hands=self.hands[window], motion_id=motion_id)


def still(frames: int = 1, fps: float = 30.0) -> Motion:
    """The neutral standing pose, relaxed hands, neutral face (also the reference pose)."""
    if frames < 1:
        raise InvalidInput(f"frames must be >= 1, got {frames}")
    hands = np.broadcast_to(gesture("relaxed"), (frames, 2, NUM_GESTURE)).copy()
    return Motion(angles=np.broadcast_to(NEUTRAL, (frames, NUM_JOINTS, 3)).copy(),
                  root=np.zeros((frames, 3)), face=np.zeros((frames, NUM_EXPRESSION)),
                  hands=hands, fps=float(fps), action="static", phrase="standing still",
                  intensity=0.0, motion_id="static")
