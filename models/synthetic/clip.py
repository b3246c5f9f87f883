"""Render a Motion on a character: frames, exact keypoints, a reference image, the camera."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from models import keypoints as K
from models.errors import InvalidInput
from models.synthetic import background
from models.synthetic.animation import Motion, still
from models.synthetic.camera import CameraPath, Framing
from models.synthetic.character import CharacterSpec
from models.synthetic.render import FACE_HIDDEN_BELOW, render
from models.synthetic.skeleton import J, Pose, forward_kinematics, head_radii

MIN_SIZE, MAX_SIZE = 16, 1024
HIDDEN_FACE_CONFIDENCE = 0.5  # face landmarks of a head turned away: known, not visible


@dataclass(eq=False)
class SyntheticClip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    keypoints: np.ndarray  # (T, 133, 4) float32, models.keypoints format
    reference_image: np.ndarray  # (H, W, 3) uint8 RGB: the character, neutral pose
    reference_keypoints: np.ndarray  # (133, 4) float32: the reference image's keypoints
    camera: CameraPath
    fps: float
    action: str
    action_phrase: str
    intensity: float
    identity_id: str
    motion_id: str
    joint_angles: np.ndarray  # (T, NUM_JOINTS, 3): the motion as rendered
    character: CharacterSpec = field(repr=False)

    @property
    def caption(self) -> str:
        return f"{self.character.describe()}, {self.action_phrase}"

    def annotations(self) -> dict:
        """The dataset-shard annotations of this clip (JSON-serialisable). The action's
        intensity knob is not the contract's flow-based `motion_intensity`, which curation
        measures on the frames."""
        return {"caption": self.caption, "action": self.action,
                "action_phrase": self.action_phrase, "action_intensity": self.intensity,
                "camera": self.camera.as_dict(), "identity_id": self.identity_id,
                "motion_id": self.motion_id, "fps": self.fps}


def framing_for(character: CharacterSpec) -> Framing:
    """Neutral-pose framing: the standing character fills 85% of the frame at zoom 1."""
    neutral = still()
    pose = forward_kinematics(character.body, neutral.angles, neutral.root, neutral.face,
                              neutral.hands)
    top = pose.head_center[0] + (0.0, 1.15 * head_radii(character.body)[1], 0.0)
    return Framing.fit(np.concatenate([pose.keypoints[0], top[None]]))


def _pose(character: CharacterSpec, motion: Motion) -> Pose:
    return forward_kinematics(character.body, motion.angles, motion.root, motion.face,
                              motion.hands)


def _confidence(proj: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """1 inside the frame, 0 outside; a turned-away face keeps its (known) landmarks at
    HIDDEN_FACE_CONFIDENCE. Occlusion by other body parts is not modelled."""
    conf = ((proj[..., 0] >= 0) & (proj[..., 0] <= 1) & (proj[..., 1] >= 0)
            & (proj[..., 1] <= 1)).astype(np.float32)
    hidden = facing < FACE_HIDDEN_BELOW
    for cols in (K.FACE, slice(0, 3)):  # landmarks and nose/eyes of a turned-away head
        conf[hidden, cols] *= HIDDEN_FACE_CONFIDENCE
    return conf


def _check_size(size: int) -> None:
    if not isinstance(size, int | np.integer) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] pixels, "
                           f"got {size!r}")


def _render_with_keypoints(pose: Pose, character: CharacterSpec, framing: Framing,
                           camera: CameraPath, size: int, canvas: np.ndarray):
    """(T, size, size, 3) frames and their (T, 133, 4) keypoints."""
    images, proj = render(pose, character, framing, camera, size, canvas)
    facing = pose.rotations[:, J["head"], 2, 2]
    return images, np.concatenate([proj, _confidence(proj, facing)[..., None]], -1)


def render_clip(character: CharacterSpec, motion: Motion, *, size: int = 128,
                frames: int | None = None, fps: float | None = None,
                camera: CameraPath | str | None = None, seed: int = 0) -> SyntheticClip:
    """Render `motion` on `character`.

    fps: resample the motion first (default: the motion's own rate). frames: keep the first
    `frames` frames (default: all). camera: a CameraPath of the clip's length, a move name
    from `camera.MOVES`, 'random' (picked by `seed`), or None (static, neutral framing).
    Deterministic: the same arguments always give the same pixels.
    """
    _check_size(size)
    if not isinstance(character, CharacterSpec):
        raise InvalidInput(f"character must be a CharacterSpec, got {type(character).__name__}")
    if not isinstance(motion, Motion):
        raise InvalidInput(f"motion must be a Motion, got {type(motion).__name__}")
    if fps is not None:
        motion = motion.resample(fps)
    if frames is not None:
        motion = motion.crop(frames)
    t = motion.frames
    if camera is None:
        camera = CameraPath.static(t)
    elif camera == "random":
        camera = CameraPath.random(t, seed)
    elif isinstance(camera, str):
        camera = CameraPath.named(camera, t)
    elif not isinstance(camera, CameraPath):
        raise InvalidInput(f"camera must be a CameraPath, a move name or None, got "
                           f"{type(camera).__name__}")
    if camera.frames != t:
        raise InvalidInput(f"camera path has {camera.frames} frames, the motion {t}")

    framing = framing_for(character)
    pose = _pose(character, motion)
    canvas = background.canvas(character.background, size)
    images, kps = _render_with_keypoints(pose, character, framing, camera, size, canvas)
    first = CameraPath(camera.pan_x[:1], camera.pan_y[:1], camera.zoom[:1], move=camera.move)
    reference, ref_kps = _render_with_keypoints(_pose(character, still()), character, framing,
                                                first, size, canvas)
    return SyntheticClip(
        frames=images, keypoints=K.validate(kps), reference_image=reference[0],
        reference_keypoints=K.validate(ref_kps)[0], camera=camera,
        fps=motion.fps, action=motion.action, action_phrase=motion.phrase,
        intensity=motion.intensity, identity_id=character.identity_id,
        motion_id=motion.motion_id, joint_angles=motion.angles.astype(np.float32),
        character=character)


def render_cross_identity(motion: Motion, characters: list[CharacterSpec],
                          **kwargs) -> list[SyntheticClip]:
    """The same motion (identical joint angles, face and hand tracks) on each character;
    keypoints follow each one's proportions. kwargs go to `render_clip`."""
    if not characters:
        raise InvalidInput("render_cross_identity needs at least one character")
    ids = [c.identity_id for c in characters]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"characters must have distinct identity_id values, got {ids}")
    return [render_clip(c, motion, **kwargs) for c in characters]


def contact_sheet(clips: list[SyntheticClip], columns: int = 5,
                  keypoints: bool = False) -> np.ndarray:
    """One row per clip: the reference image, then `columns` evenly spaced frames
    (optionally with the visible keypoints dotted on), as one RGB image."""
    rows = []
    for clip in clips:
        picks = np.linspace(0, len(clip.frames) - 1, columns).round().astype(int)
        tiles = [clip.reference_image] + [clip.frames[t].copy() for t in picks]
        if keypoints:
            size = clip.frames.shape[2]
            for tile, t in zip(tiles[1:], picks, strict=True):
                for x, y, _, conf in clip.keypoints[t]:
                    if conf > 0:
                        cv2.circle(tile, (int(x * size), int(y * size)), 1, (255, 0, 255), -1)
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)
