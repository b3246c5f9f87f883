"""Synthetic characters with exact whole-body ground truth.

    character = sample_character(seed=3)                   # or character_preset("child")
    motion = make_motion("wave", frames=48, fps=24, intensity=0.8)
    clip = render_clip(character, motion, size=128, camera="zoom_in")
    clip.frames, clip.keypoints, clip.reference_image, clip.camera, clip.annotations()

Motions come from the procedural action library (`ACTIONS`) or from BVH motion capture
(`motion_from_bvh`); `render_cross_identity` renders one motion on several characters.

Modules: rotations (Euler helpers), face (68 iBUG landmarks + expressions), hands (21-point
hands + gestures), character (CharacterSpec presets and sampling), skeleton (joints and
forward kinematics to the 133 keypoints), animation (Motion tracks), actions (the library),
bvh (parser and retargeting), camera (pan/tilt/zoom paths and projection), background,
render (depth-ordered OpenCV drawing), clip (render_clip and friends).
"""

from models.synthetic.actions import ACTIONS, make_motion
from models.synthetic.animation import Motion, still
from models.synthetic.bvh import load_bvh, motion_from_bvh, parse_bvh
from models.synthetic.camera import MOVES, CameraPath
from models.synthetic.character import (
    BODIES,
    CharacterSpec,
    character_preset,
    sample_character,
    with_background,
)
from models.synthetic.clip import (
    SyntheticClip,
    contact_sheet,
    render_clip,
    render_cross_identity,
)
from models.synthetic.face import EXPRESSION_CHANNELS, EXPRESSIONS, VISEMES
from models.synthetic.hands import GESTURE_CHANNELS, GESTURES
from models.synthetic.skeleton import JOINTS, forward_kinematics

__all__ = [
    "ACTIONS", "BODIES", "EXPRESSIONS", "EXPRESSION_CHANNELS", "GESTURES", "GESTURE_CHANNELS",
    "JOINTS", "MOVES", "VISEMES", "CameraPath", "CharacterSpec", "Motion", "SyntheticClip",
    "character_preset", "contact_sheet", "forward_kinematics", "load_bvh", "make_motion",
    "motion_from_bvh", "parse_bvh", "render_clip", "render_cross_identity", "sample_character", "still",
    "with_background",
]
