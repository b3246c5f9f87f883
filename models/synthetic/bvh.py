"""BVH motion capture: a small parser, forward kinematics, and retargeting onto the
synthetic skeleton by joint rotations (each character keeps its own bone lengths).

Retargeting: every skeleton joint takes the global rotation of its mocap counterpart,
corrected by the rest-pose difference (the rotation taking our rest bone direction onto the
mocap rest bone direction, e.g. T-pose arms onto hanging arms); local angles follow from
the parents. The root trajectory is divided by the mocap leg length, so it scales with
each character's legs. The first frame's heading is turned to face the camera.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import InvalidInput
from models.synthetic.animation import Motion
from models.synthetic.face import EXPR, NUM_EXPRESSION
from models.synthetic.hands import NUM_GESTURE, gesture
from models.synthetic.rotations import align, axis_rotation, channel_rotation, matrix_to_euler
from models.synthetic.skeleton import JOINTS, NUM_JOINTS, PARENTS, J


@dataclass
class BvhJoint:
    name: str
    parent: int
    offset: np.ndarray  # (3,) in the parent's frame
    channels: list[str]
    end: np.ndarray | None = None  # End Site offset, if any


@dataclass
class Bvh:
    joints: list[BvhJoint]
    motion: np.ndarray  # (F, total channels)
    frame_time: float

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def forward_kinematics(self) -> tuple[np.ndarray, np.ndarray]:
        """Global positions (F, J, 3) and rotations (F, J, 3, 3) of every joint."""
        frames = len(self.motion)
        pos = np.zeros((frames, len(self.joints), 3))
        rot = np.zeros((frames, len(self.joints), 3, 3))
        col = 0
        for i, joint in enumerate(self.joints):
            values = self.motion[:, col:col + len(joint.channels)]
            col += len(joint.channels)
            local_pos = np.broadcast_to(joint.offset, (frames, 3)).copy()
            axes, angles = "", []
            for k, ch in enumerate(joint.channels):
                axis = "XYZ".index(ch[0])
                if ch.endswith("position"):  # the root adds it to its offset
                    base = joint.offset[axis] if joint.parent < 0 else 0.0
                    local_pos[:, axis] = base + values[:, k]
                else:
                    axes += ch[0]
                    angles.append(values[:, k])
            local_rot = (channel_rotation(axes, np.stack(angles, -1)) if axes
                         else np.broadcast_to(np.eye(3), (frames, 3, 3)))
            if joint.parent < 0:
                rot[:, i], pos[:, i] = local_rot, local_pos
            else:
                p = joint.parent
                rot[:, i] = rot[:, p] @ local_rot
                pos[:, i] = pos[:, p] + np.einsum("fij,fj->fi", rot[:, p], local_pos)
        return pos, rot

    def rest_positions(self) -> np.ndarray:
        """(J, 3) joint positions in the rest pose (all channels zero, root at origin)."""
        pos = np.zeros((len(self.joints), 3))
        for i, joint in enumerate(self.joints):
            if joint.parent >= 0:
                pos[i] = pos[joint.parent] + joint.offset
        return pos


CHANNELS = {f"{axis}{kind}" for axis in "XYZ" for kind in ("position", "rotation")}


def parse_bvh(text: str) -> Bvh:
    """Parse BVH text (HIERARCHY + MOTION); raises InvalidInput saying what is wrong."""
    try:
        return _parse(deque(text.split()))
    except IndexError as exc:
        raise InvalidInput("malformed BVH: the text ends before HIERARCHY and MOTION are "
                           "complete") from exc
    except ValueError as exc:
        raise InvalidInput(f"malformed BVH: {exc}") from exc


def _parse(words: deque) -> Bvh:
    take = words.popleft

    def expect(*tokens: str) -> None:
        for token in tokens:
            if (got := take()) != token:
                raise ValueError(f"expected {token!r}, got {got!r}")

    def vector() -> np.ndarray:
        return np.array([float(take()) for _ in range(3)])

    expect("HIERARCHY")
    joints: list[BvhJoint] = []
    stack: list[int] = []  # enclosing joints
    while (token := take()) != "MOTION":
        if token in ("ROOT", "JOINT"):
            joints.append(BvhJoint(take(), stack[-1] if stack else -1, np.zeros(3), []))
        elif token == "{":
            stack.append(len(joints) - 1)
        elif token == "}":
            stack.pop()
        elif token == "OFFSET":
            joints[-1].offset = vector()
        elif token == "CHANNELS":
            joints[-1].channels = [take() for _ in range(int(take()))]
            if bad := set(joints[-1].channels) - CHANNELS:
                raise ValueError(f"unknown channels {sorted(bad)}")
        elif token == "End":  # End Site { OFFSET x y z }
            expect("Site", "{", "OFFSET")
            joints[stack[-1]].end = vector()
            expect("}")
        else:
            raise ValueError(f"unexpected token {token!r}")
    if not joints or stack:
        raise ValueError("no joints, or unbalanced braces")
    expect("Frames:")
    frames = int(take())
    expect("Frame", "Time:")
    frame_time = float(take())
    values = np.array([float(v) for v in words])
    width = sum(len(j.channels) for j in joints)
    if frames < 1 or frame_time <= 0 or values.size != frames * width:
        raise ValueError(f"expected {frames} frames x {width} channels at a positive frame "
                         f"time, got {values.size} values every {frame_time} s")
    return Bvh(joints=joints, motion=values.reshape(frames, width), frame_time=frame_time)


def load_bvh(path: str | Path) -> Bvh:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"BVH file not found: {path}")
    return parse_bvh(path.read_text())


# Skeleton joint -> mocap names to try, first found wins (prefixes like 'mixamorig:' are
# ignored). 'LeftShoulder' is the upper arm only in files without 'LeftArm' (where it is
# the collar bone).
NAMES = {
    "pelvis": ["Hips", "Pelvis", "Root"],
    "spine": ["Spine", "Chest", "Spine1"],
    "chest": ["Spine2", "Chest2", "Spine1", "Chest"],
    "neck": ["Neck", "Neck1"],
    "head": ["Head"],
    "l_shoulder": ["LeftArm", "LeftUpArm", "LeftShoulder"],
    "l_elbow": ["LeftForeArm", "LeftElbow", "LeftLowArm"],
    "l_wrist": ["LeftHand", "LeftWrist"],
    "l_hip": ["LeftUpLeg", "LeftHip", "LeftThigh"],
    "l_knee": ["LeftLeg", "LeftKnee", "LeftShin", "LeftLowLeg"],
    "l_ankle": ["LeftFoot", "LeftAnkle"],
}
for _left in [n for n in NAMES if n.startswith("l_")]:
    NAMES["r_" + _left[2:]] = [n.replace("Left", "Right") for n in NAMES[_left]]

# Limbs: our rest bone direction (towards the child, character frame) and the child whose
# mocap counterpart gives the mocap rest direction (None: the joint's own first child or
# End Site, preferring a middle finger or a toe). The trunk and head need no correction:
# both rest poses stand upright facing forward.
_DOWN = np.array([0.0, -1.0, 0.0])
_FOOT = np.array([0.0, -0.3, 1.0]) / np.hypot(0.3, 1.0)
_LIMBS = {"shoulder": (_DOWN, "elbow"), "elbow": (_DOWN, "wrist"), "wrist": (_DOWN, None),
          "hip": (_DOWN, "knee"), "knee": (_DOWN, "ankle"), "ankle": (_FOOT, None)}
_MIRROR = np.array([-1.0, 1.0, 1.0])


def _short(name: str) -> str:
    return name.split(":")[-1]


def _mapping(bvh: Bvh) -> dict[str, int]:
    names = {_short(j.name).lower(): i for i, j in enumerate(bvh.joints)}
    found = {}
    for joint, candidates in NAMES.items():
        hit = next((names[c.lower()] for c in candidates if c.lower() in names), None)
        if hit is None:
            raise InvalidInput(f"BVH has no joint for {joint!r} (tried {candidates}); "
                               f"joints: {[j.name for j in bvh.joints]}")
        found[joint] = hit
    return found


def _rest_correction(bvh: Bvh, rest: np.ndarray, mapping: dict[str, int],
                     joint: str) -> np.ndarray:
    """Rotation taking our rest bone direction onto the mocap one (identity for the trunk)."""
    side, _, limb = joint.partition("_")
    if limb not in _LIMBS:
        return np.eye(3)
    ours, child = _LIMBS[limb]
    i = mapping[joint]
    if child is not None:
        theirs = rest[mapping[f"{side}_{child}"]] - rest[i]
    else:
        children = [k for k, j in enumerate(bvh.joints) if j.parent == i]
        named = [k for k in children
                 if any(w in _short(bvh.joints[k].name).lower() for w in ("middle", "toe"))]
        if named or children:
            theirs = rest[(named or children)[0]] - rest[i]
        elif bvh.joints[i].end is not None:
            theirs = bvh.joints[i].end
        else:
            return np.eye(3)
    return align(ours * _MIRROR if side == "r" else ours, theirs)


def motion_from_bvh(path: str | Path, *, fps: float | None = None,
                    name: str | None = None) -> Motion:
    """Retarget a BVH file onto the skeleton; resampled to `fps` if given. Hands are
    relaxed and the face neutral with natural blinks."""
    bvh = load_bvh(path)
    mapping = _mapping(bvh)
    pos, rot = bvh.forward_kinematics()
    rest = bvh.rest_positions()

    # Face the camera at frame 0: remove the initial heading (yaw of the hips' forward).
    fwd = rot[0, mapping["pelvis"]] @ np.array([0.0, 0.0, 1.0])
    unyaw = axis_rotation(1, -np.arctan2(fwd[0], fwd[2]))
    rot = unyaw @ rot
    pos = pos @ unyaw.T

    glob = np.zeros((len(rot), NUM_JOINTS, 3, 3))
    for joint in JOINTS:
        glob[:, J[joint]] = rot[:, mapping[joint]] @ _rest_correction(bvh, rest, mapping, joint)
    local = glob.copy()
    for j in range(1, NUM_JOINTS):
        local[:, j] = np.swapaxes(glob[:, PARENTS[j]], -1, -2) @ glob[:, j]
    angles = matrix_to_euler(local)

    # Root: hip height above the lowest rest point is the mocap leg length.
    hips = pos[:, mapping["pelvis"]]
    leg = rest[mapping["pelvis"], 1] - min(rest[:, 1].min(), _lowest_end(bvh, rest))
    root = hips / leg
    root[:, 1] -= 1.0
    root[:, [0, 2]] -= (root[:, [0, 2]].max(0) + root[:, [0, 2]].min(0)) / 2

    frames = len(angles)
    face = np.zeros((frames, NUM_EXPRESSION))
    t = np.arange(frames) * bvh.frame_time
    face[:, EXPR["blink"]] = np.exp(-((t % 3.1 - 1.5) / 0.05) ** 2)
    hands = np.broadcast_to(gesture("relaxed"), (frames, 2, NUM_GESTURE)).copy()
    stem = name or Path(path).stem
    motion = Motion(angles=angles, root=root, face=face, hands=hands, fps=bvh.fps,
                    action="mocap", phrase=f"performing a motion-capture sequence ({stem})",
                    intensity=1.0, motion_id=f"bvh-{stem}")
    return motion.resample(fps) if fps else motion


def _lowest_end(bvh: Bvh, rest: np.ndarray) -> float:
    ends = [rest[i, 1] + j.end[1] for i, j in enumerate(bvh.joints) if j.end is not None]
    return min(ends) if ends else rest[:, 1].min()
