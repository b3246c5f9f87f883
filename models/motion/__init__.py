"""Motion representations: whole-body keypoints from real footage (MediaPipe Holistic),
identity-agnostic retargeting, facial expression codes, and pose-map rendering.

Everything works on the 133-point contract of `models.keypoints`. MediaPipe is imported only
when an extractor first runs.
"""

from models.motion.extract import HolisticExtractor, NoPersonFound
from models.motion.face import FaceExpression, apply_expression, canonicalize_face
from models.motion.render import draw_overlay, render_pose_map, render_pose_maps
from models.motion.retarget import retarget

__all__ = [
    "FaceExpression",
    "HolisticExtractor",
    "NoPersonFound",
    "apply_expression",
    "canonicalize_face",
    "draw_overlay",
    "render_pose_map",
    "render_pose_maps",
    "retarget",
]
