"""Draw posed characters with OpenCV, far parts first (painter's algorithm on depth).

Everything per clip is vectorised up front (projection of every point the drawing needs,
part depths and their order); the per-frame loop only issues a few dozen cv2 calls on
fixed-point (sub-pixel) coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from models import keypoints as K
from models.synthetic import background
from models.synthetic.camera import CameraPath, Framing, project
from models.synthetic.character import CharacterSpec
from models.synthetic.skeleton import JOINTS, J, Pose, head_center, head_radii

SHIFT = 4  # cv2 fixed-point bits: coordinates carry 1/16 pixel
ONE = 1 << SHIFT
LINE = cv2.LINE_AA
FACE_HIDDEN_BELOW = -0.1  # head facing (cosine to the camera) under which no face is drawn
F = K.FACE.start

# Points the drawing needs beyond the keypoints: joints, then the shapes of `_extra_points`.
EXTRA = ("l_shoulder_top", "r_shoulder_top", "l_waist", "r_waist", "l_hip_out", "r_hip_out",
         "crotch", "hip_centre", "l_skirt", "r_skirt", "chest_top", "waist", "neck_base",
         "neck_top",
         "torso_anchor", "pelvis_anchor", "skirt_anchor", "head_center", "head_x", "head_y",
         "head_z", "hair_volume", "hair_cap", "hair_back", "hair_long", "bun")
COL = {f"joint:{n}": K.NUM_KEYPOINTS + j for j, n in enumerate(JOINTS)}
COL.update({n: K.NUM_KEYPOINTS + len(JOINTS) + i for i, n in enumerate(EXTRA)})


def shade(color, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in color)


def mix(a, b, w: float) -> tuple[int, int, int]:
    return tuple(int(x + (y - x) * w) for x, y in zip(a, b, strict=True))


def cols(*names) -> np.ndarray:
    """Scene columns of point names (str) or keypoint indices (int)."""
    return np.array([n if isinstance(n, int | np.integer) else COL[n] for n in names])


@dataclass
class Scene:
    """Projected geometry of a clip: fixed-point pixel coordinates and depth of every
    point (columns: COL), pixels per metre, and the head's orientation in the image."""

    px: np.ndarray  # (T, N, 2) int32, 1/ONE pixel units
    depth: np.ndarray  # (T, N), larger is farther
    ppm: np.ndarray  # (T,) pixels per metre
    roll: np.ndarray  # (T,) head roll in the image, degrees
    head_axes: np.ndarray  # (T, 2) foreshortening of the head's x and y axes in the image
    facing: np.ndarray  # (T,) cosine between the face direction and the view direction
    turn_side: np.ndarray  # (T,) +1 when the face turns towards the image's right

    def p(self, t: int, col: int) -> tuple[int, int]:
        return int(self.px[t, col, 0]), int(self.px[t, col, 1])

    def width(self, t: int, metres: float) -> int:
        return max(1, int(round(metres * self.ppm[t])))


def _extra_points(pose: Pose) -> dict[str, np.ndarray]:
    """Character-frame points that shape the drawing (outlines, hair, depth anchors)."""
    b, rot, pos = pose.body, pose.rotations, pose.joints
    rx, ry, rz = head_radii(b)
    cx, cy, cz = head_center(b)

    def at(joint: str, x: float, y: float, z: float) -> np.ndarray:
        return pos[:, J[joint]] + rot[:, J[joint]] @ np.array([x, y, z])

    sh = b.shoulder_width / 2 + 0.3 * b.arm_width
    top = 0.44 * b.torso + 0.35 * b.arm_width
    waist = 0.5 * max(b.hip_width + b.leg_width, 0.8 * b.shoulder_width)
    hips = b.hip_width / 2 + 0.55 * b.leg_width
    skirt = hips + 0.25 * b.thigh
    return {
        "l_shoulder_top": at("chest", sh, top, 0), "r_shoulder_top": at("chest", -sh, top, 0),
        "l_waist": at("spine", waist, 0.1 * b.torso, 0),
        "r_waist": at("spine", -waist, 0.1 * b.torso, 0),
        "l_hip_out": at("pelvis", hips, -0.05 * b.leg_width, 0),
        "r_hip_out": at("pelvis", -hips, -0.05 * b.leg_width, 0),
        "crotch": at("pelvis", 0, -0.6 * b.leg_width, 0),
        "hip_centre": pos[:, J["pelvis"]],
        "l_skirt": at("pelvis", skirt, -0.75 * b.thigh, 0.1 * b.thigh),
        "r_skirt": at("pelvis", -skirt, -0.75 * b.thigh, 0.1 * b.thigh),
        "chest_top": at("chest", 0, 0.3 * b.torso, 0),
        "waist": at("spine", 0, 0.1 * b.torso, 0),
        "neck_base": at("neck", 0, 0.3 * b.neck, 0),
        "neck_top": at("head", 0, 0.4 * ry, 0),
        # Depth anchors sit behind the surfaces they stand for, so limbs next to the trunk
        # are drawn over it.
        "torso_anchor": at("chest", 0, 0, -0.6 * b.leg_width),
        "pelvis_anchor": at("pelvis", 0, 0, -0.4 * b.leg_width),
        "skirt_anchor": at("pelvis", 0, -0.3 * b.thigh, 0.5 * b.leg_width),
        "head_center": pose.head_center,
        "head_x": at("head", cx + rx, cy, cz), "head_y": at("head", cx, cy + ry, cz),
        "head_z": at("head", cx, cy, cz + rz),
        "hair_volume": at("head", cx, cy + 0.12 * ry, cz - 0.2 * rz),
        "hair_cap": at("head", cx, cy + 0.5 * ry, cz),
        "hair_back": at("head", cx, cy + 0.1 * ry, cz - 0.45 * rz),
        "hair_long": at("head", cx, cy - 0.9 * ry, cz - 0.7 * rz),
        "bun": at("head", cx, cy + 0.95 * ry, cz - 0.45 * rz),
    }


def build_scene(pose: Pose, framing: Framing, camera: CameraPath,
                size: int) -> tuple[Scene, np.ndarray]:
    """Project the clip; returns the scene and the (T, 133, 3) projected keypoints."""
    extras = _extra_points(pose)
    pts3 = np.concatenate([pose.keypoints, pose.joints]
                          + [extras[n][:, None] for n in EXTRA], 1)
    proj = project(pts3, framing, camera)
    px = np.round((proj[..., :2] * size - 0.5) * ONE).astype(np.int32)
    ppm = size * camera.zoom / framing.extent
    centre = proj[:, COL["head_center"], :2]
    x_axis = (proj[:, COL["head_x"], :2] - centre) * size
    y_axis = (proj[:, COL["head_y"], :2] - centre) * size
    rx, ry, _ = head_radii(pose.body)
    axes = np.stack([np.linalg.norm(x_axis, axis=1) / (rx * ppm),
                     np.linalg.norm(y_axis, axis=1) / (ry * ppm)], 1)
    scene = Scene(
        px=px, depth=proj[..., 2], ppm=ppm,
        roll=np.degrees(np.arctan2(y_axis[:, 0], -y_axis[:, 1])),  # projected up axis
        head_axes=np.clip(axes, 0.0, 1.0),
        facing=pose.rotations[:, J["head"], 2, 2],  # head forward . towards the camera
        turn_side=np.sign(proj[:, COL["head_z"], 0] - centre[:, 0]))
    return scene, proj[:, :K.NUM_KEYPOINTS]


# --- parts: (depth column, draw(img, scene, t)) ------------------------------------------

Draw = Callable[[np.ndarray, Scene, int], None]


def _capsule(a: str, b: str, width: float, color) -> Draw:
    ca, cb = COL[a], COL[b]

    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        cv2.line(img, s.p(t, ca), s.p(t, cb), color, s.width(t, width), LINE, SHIFT)
    return draw


def _polygon(names, color) -> Draw:
    c = cols(*names)

    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        cv2.fillPoly(img, [s.px[t, c]], color, LINE, SHIFT)
    return draw


def _trunk(outline, spine: tuple[str, str], depth: float, color) -> Draw:
    """A flat outline plus a capsule along the spine as thick as the body is deep, so the
    trunk keeps its volume when seen from the side."""
    flat, core = _polygon(outline, color), _capsule(*spine, depth, color)

    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        core(img, s, t)
        flat(img, s, t)
    return draw


def _hand(start: int, skin, finger_width: float) -> Draw:
    palm = cols(*(start + i for i in (0, 1, 5, 9, 13, 17)))
    fingers = [cols(*(start + 1 + 4 * f + k for k in range(4))) for f in range(5)]
    finger_color = shade(skin, 0.85)  # a shade darker, so fingers read over the palm

    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        cv2.fillPoly(img, [s.px[t, palm]], skin, LINE, SHIFT)
        cv2.polylines(img, [s.px[t, f] for f in fingers], False, finger_color,
                      s.width(t, finger_width), LINE, SHIFT)
    return draw


def _foot(ankle: str, first: int, color, width: float) -> Draw:
    c = cols(ankle, first + 2, first + 1, first)  # ankle, heel, small toe, big toe

    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        pts = s.px[t, c]
        cv2.fillPoly(img, [pts], color, LINE, SHIFT)
        cv2.polylines(img, [pts], True, color, s.width(t, width), LINE, SHIFT)
    return draw


def _disc(col: int, radius: float, color) -> Draw:
    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        r = max(1, int(radius * s.ppm[t] * ONE))
        cv2.circle(img, s.p(t, col), r, color, -1, LINE, SHIFT)
    return draw


def _ellipse(img, s: Scene, t: int, col: int, axes: tuple[float, float], color,
             start: int = 0, end: int = 360) -> None:
    """A filled ellipse (or pie slice start..end degrees) rolled with the head."""
    a = (max(1, int(axes[0] * s.ppm[t] * ONE)), max(1, int(axes[1] * s.ppm[t] * ONE)))
    cv2.ellipse(img, s.p(t, col), a, float(s.roll[t]), start, end, color, -1, LINE, SHIFT)


def _head(spec: CharacterSpec) -> Draw:
    b, pal, style = spec.body, spec.palette, spec.outfit.hair
    rx, ry, _ = head_radii(b)
    skin, hair = pal.skin, pal.hair
    lips, brow, nostril = mix(skin, (190, 60, 70), 0.45), shade(hair, 0.7), shade(skin, 0.75)
    neck = _capsule("neck_base", "neck_top", 0.9 * b.head_radius, skin)
    centre, volume, cap = COL["head_center"], COL["hair_volume"], COL["hair_cap"]
    jaw, nose, outer_lips, inner_lips = (cols(*range(F + a, F + z)) for a, z in
                                         ((0, 17), (31, 36), (48, 60), (60, 68)))
    eyes = [cols(*range(F + 36, F + 42)), cols(*range(F + 42, F + 48))]
    brows = [cols(*range(F + 17, F + 22)), cols(*range(F + 22, F + 27))]
    haired = style != "bald"

    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        fx, fy = s.head_axes[t]
        neck(img, s, t)
        if haired:  # volume around the face
            _ellipse(img, s, t, volume, (1.1 * rx, 1.0 * ry), hair)
        _ellipse(img, s, t, centre, (rx, ry), skin)
        if s.facing[t] < FACE_HIDDEN_BELOW:  # seen from behind
            if haired:
                _ellipse(img, s, t, centre, (1.04 * rx, 1.02 * ry), hair)
            return
        px = s.px[t]
        cv2.fillPoly(img, [px[jaw]], skin, LINE, SHIFT)  # the chin follows the open jaw
        if haired:
            if fx < 0.97:  # turned: the back of the head shows as a crescent of hair
                # between the outline and the projected front/back boundary (half-width fx)
                start = 90 if s.turn_side[t] > 0 else -90
                _ellipse(img, s, t, centre, (rx, ry), hair, start, start + 180)
                _ellipse(img, s, t, centre, (fx * rx, ry), skin, start, start + 180)
            _ellipse(img, s, t, cap, (1.02 * rx, 0.6 * ry), hair, 180, 360)
        thin = s.width(t, 0.05 * ry)
        for eye in eyes:  # white, iris (if open enough), upper lid line
            pts = px[eye]
            cv2.fillPoly(img, [pts], (250, 250, 250), LINE, SHIFT)
            opening = (pts[1:3, 1].mean() - pts[4:6, 1].mean()) / ONE
            radius = min(-0.5 * opening, 0.3 * abs(int(pts[3, 0]) - int(pts[0, 0])) / ONE)
            if radius >= 0.4:
                centre_px = (int(pts[:, 0].mean()), int(pts[:, 1].mean()))
                cv2.circle(img, centre_px, int(radius * ONE), pal.eyes, -1, LINE, SHIFT)
            cv2.polylines(img, [pts[:4]], False, (40, 30, 30), thin, LINE, SHIFT)
        cv2.polylines(img, [px[brows[0]], px[brows[1]]], False, brow,
                      s.width(t, 0.09 * ry * fy), LINE, SHIFT)
        cv2.polylines(img, [px[nose]], False, nostril, thin, LINE, SHIFT)
        cv2.fillPoly(img, [px[outer_lips]], lips, LINE, SHIFT)
        cv2.fillPoly(img, [px[inner_lips]], (90, 20, 30), LINE, SHIFT)
    return draw


def _long_hair(color, b) -> Draw:
    rx, ry, _ = head_radii(b)
    back, low = COL["hair_back"], COL["hair_long"]

    def draw(img: np.ndarray, s: Scene, t: int) -> None:
        _ellipse(img, s, t, back, (1.08 * rx, 1.05 * ry), color)
        _ellipse(img, s, t, low, (1.0 * rx, 0.9 * ry), color)
    return draw


def character_parts(spec: CharacterSpec) -> list[tuple[int, Draw]]:
    """The drawing of one character as (depth column, draw) parts."""
    b, pal, outfit = spec.body, spec.palette, spec.outfit
    skin, shirt, pants = pal.skin, pal.shirt, pal.pants
    upper_arm = skin if outfit.sleeves == "none" else shirt
    forearm = shirt if outfit.sleeves == "long" else skin
    thigh = skin if outfit.lower == "skirt" else pants
    shin = pants if outfit.lower == "pants" else skin
    parts = [
        (COL["torso_anchor"], _trunk(["l_shoulder_top", "r_shoulder_top", "r_waist", "l_waist"],
                                     ("chest_top", "waist"), b.torso_depth, shirt)),
        (COL["pelvis_anchor"], _trunk(["l_waist", "r_waist", "r_hip_out", "crotch", "l_hip_out"],
                                      ("hip_centre", "crotch"), b.torso_depth, pants)),
        (COL["head_center"], _head(spec)),
    ]
    for s, hand, foot, ear in (("l", K.LEFT_HAND.start, K.FEET.start, 3),
                               ("r", K.RIGHT_HAND.start, K.FEET.start + 3, 4)):
        joint = {n: f"joint:{s}_{n}" for n in ("shoulder", "elbow", "wrist", "hip", "knee",
                                               "ankle")}
        parts += [
            (COL[joint["shoulder"]], _capsule(joint["shoulder"], joint["elbow"], b.arm_width,
                                              upper_arm)),
            (COL[joint["elbow"]], _capsule(joint["elbow"], joint["wrist"], 0.85 * b.arm_width,
                                           forearm)),
            (hand + 9, _hand(hand, skin, 0.09 * b.hand)),
            (COL[joint["hip"]], _capsule(joint["hip"], joint["knee"], b.leg_width, thigh)),
            (COL[joint["knee"]], _capsule(joint["knee"], joint["ankle"], 0.8 * b.leg_width,
                                          shin)),
            (foot, _foot(joint["ankle"], foot, pal.shoes, 0.35 * b.leg_width)),
            (ear, _disc(ear, 0.22 * b.head_radius, shade(skin, 0.92))),
        ]
    if outfit.lower == "skirt":
        parts.append((COL["skirt_anchor"],
                      _polygon(["l_waist", "r_waist", "r_skirt", "l_skirt"], pants)))
    if outfit.hair == "long":
        parts.append((COL["hair_long"], _long_hair(pal.hair, b)))
    if outfit.hair == "bun":
        parts.append((COL["bun"], _disc(COL["bun"], 0.42 * b.head_radius, pal.hair)))
    return parts


def render(pose: Pose, spec: CharacterSpec, framing: Framing, camera: CameraPath,
           size: int, bg_canvas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, size, size, 3) uint8 RGB and projected keypoints (T, 133, 3)."""
    scene, kps = build_scene(pose, framing, camera, size)
    parts = character_parts(spec)
    depth = scene.depth[:, [col for col, _ in parts]]
    order = np.argsort(-depth, axis=1, kind="stable")  # far first
    if bg_canvas is None:
        bg_canvas = background.canvas(spec.background, size)
    frames = np.empty((camera.frames, size, size, 3), np.uint8)
    last, view = None, None
    for t in range(camera.frames):
        cam = (camera.pan_x[t], camera.pan_y[t], camera.zoom[t])
        if cam != last:  # a static camera reuses one background view
            view, last = background.view(bg_canvas, size, *cam), cam
        img = frames[t]
        img[:] = view
        for i in order[t]:
            parts[i][1](img, scene, t)
    return frames, kps
