"""Procedural action library: named actions that write joint-angle, face and hand tracks.

Each action is a function of time in seconds (so any fps gives the same motion), authored
as deviations from the neutral pose for the character's LEFT side and mirrored for the
right. `intensity` in [0, 1] scales every deviation: 0 is the neutral pose held still,
1 the full action. Angles are radians (signs in `skeleton.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.errors import InvalidInput
from models.synthetic.animation import Motion
from models.synthetic.face import EXPR, NUM_EXPRESSION, VISEMES
from models.synthetic.face import expression as face_expression
from models.synthetic.hands import NUM_GESTURE
from models.synthetic.hands import gesture as hand_gesture
from models.synthetic.rotations import mirror_euler
from models.synthetic.skeleton import MIRROR, NEUTRAL, NUM_JOINTS, J

# Leg segments in leg lengths (the same for every body, see character.body), and how far a
# squat of amount 1 bends the hips and knees.
_THIGH, _SHIN = 0.51 * 0.955, 0.49 * 0.955
_SQUAT_HIP, _SQUAT_KNEE = 0.9, 1.6


def planted_root(bend: np.ndarray) -> np.ndarray:
    """(T, 3) root offset that keeps flat feet in place under a squat of amount `bend`."""
    th, tk = bend * _SQUAT_HIP, bend * _SQUAT_KNEE
    root = np.zeros((len(bend), 3))
    root[:, 1] = _THIGH * np.cos(th) + _SHIN * np.cos(tk - th) - (_THIGH + _SHIN)
    root[:, 2] = -(_THIGH * np.sin(th) - _SHIN * np.sin(tk - th))
    return root


class Track:
    """Deviation tracks of one action; `t` is the action time of each frame in seconds
    (clock time scaled by a per-seed tempo in [0.9, 1.1], so seeds vary the pace)."""

    def __init__(self, frames: int, fps: float, rng: np.random.Generator):
        tempo = rng.uniform(0.9, 1.1)
        self.t = np.arange(frames) / fps * tempo
        self.duration = frames / fps * tempo
        self.rng = rng
        self.angles = np.zeros((frames, NUM_JOINTS, 3))
        self.root = np.zeros((frames, 3))
        self.bend = np.zeros(frames)  # squat amount; its root offset is added after scaling
        self.face = np.zeros((frames, NUM_EXPRESSION))
        self.hands = np.broadcast_to(hand_gesture("relaxed"), (frames, 2, NUM_GESTURE)).copy()

    # time shapes
    def ramp(self, start: float, length: float = 0.4) -> np.ndarray:
        """0 before `start` seconds, eased to 1 over `length` seconds."""
        s = np.clip((self.t - start) / max(length, 1e-6), 0.0, 1.0)
        return s * s * (3 - 2 * s)

    def wave(self, hz: float, phase: float = 0.0) -> np.ndarray:
        return np.sin(2 * np.pi * hz * self.t + phase)

    def enter(self, fraction: float = 0.25, cap: float = 0.5) -> np.ndarray:
        """Ease into the action's pose over the first `fraction` of the clip (<= cap s)."""
        return self.ramp(0.0, min(cap, fraction * self.duration))

    # writers (values broadcast over frames)
    def joint(self, name: str, x=0.0, y=0.0, z=0.0, side: str = "left") -> None:
        j = J[name] if side == "left" else MIRROR[J[name]]
        value = np.stack(np.broadcast_arrays(x, y, z, self.t)[:3], -1)
        self.angles[:, j] += value if side == "left" else mirror_euler(value)

    def arm(self, side: str, shoulder=(0, 0, 0), elbow=(0, 0, 0), wrist=(0, 0, 0)) -> None:
        """Shoulder/elbow/wrist deviations, given for the left arm; `side` mirrors them."""
        for name, angles in (("l_shoulder", shoulder), ("l_elbow", elbow), ("l_wrist", wrist)):
            self.joint(name, *angles, side=side)

    def squat(self, amount: np.ndarray) -> None:
        """Bend both legs with the feet flat and planted (see `planted_root`)."""
        th, tk = amount * _SQUAT_HIP, amount * _SQUAT_KNEE
        for side in ("left", "right"):
            self.joint("l_hip", x=-th, side=side)
            self.joint("l_knee", x=tk, side=side)
            self.joint("l_ankle", x=th - tk, side=side)
        self.bend += amount

    def expression(self, name_or_values, weight=1.0) -> None:
        w = np.asarray(weight, dtype=np.float64).reshape(-1, 1)
        self.face += w * face_expression(name_or_values)

    def gesture(self, side: str, name: str, weight=1.0) -> None:
        i = 0 if side == "left" else 1
        w = np.asarray(weight, dtype=np.float64).reshape(-1, 1)
        self.hands[:, i] = self.hands[:, i] * (1 - w) + hand_gesture(name) * w

    def blinks(self, every: float = 3.0) -> None:
        """Natural blinks (0.15 s) at jittered intervals."""
        start = self.rng.uniform(0.3, every)
        while start < self.duration:
            self.face[:, EXPR["blink"]] += np.exp(-((self.t - start) / 0.05) ** 2)
            start += every * self.rng.uniform(0.6, 1.4)


# --- the actions -------------------------------------------------------------------------

def idle(m: Track) -> None:
    breath = m.wave(0.25)
    m.joint("chest", x=-0.03 * breath)
    m.joint("pelvis", z=0.03 * m.wave(0.2))
    m.root[:, 0] += 0.02 * m.wave(0.2)
    m.joint("head", y=0.08 * m.wave(0.13, 1.0))
    for side in ("left", "right"):
        m.arm(side, shoulder=(0, 0, 0.03 * breath))
    m.blinks()


def static(m: Track) -> None:
    """Nothing moves, at any intensity."""


def wave(m: Track) -> None:
    up = m.enter()
    m.arm("right", shoulder=(-0.2 * up, 0, 1.45 * up),
          elbow=(0, 0, up * (1.6 + 0.45 * m.wave(2.0))), wrist=(0, 1.57 * up, 0))
    m.gesture("right", "open", up)
    m.joint("head", z=-0.08 * up)
    m.expression("smile", 0.7 * up)
    m.blinks()


def clap(m: Track) -> None:
    up = m.enter()
    together = 0.5 - 0.5 * np.cos(2 * np.pi * 2.0 * m.t)  # 1 when the palms touch
    for side in ("left", "right"):
        m.arm(side, shoulder=(-1.0 * up, 0, up * (-0.17 - 0.27 * together)),
              elbow=(-0.65 * up, 0, 0))
        m.gesture(side, "flat", up)
    m.expression("smile", up)


def jump(m: Track) -> None:
    s = (m.t / 1.2) % 1.0  # one jump every 1.2 s
    crouch = np.exp(-((s - 0.18) / 0.09) ** 2) + np.exp(-((s - 0.8) / 0.08) ** 2)
    air = np.where((s > 0.3) & (s < 0.7), np.sin(np.pi * (s - 0.3) / 0.4), 0.0)
    m.squat(0.7 * crouch)
    m.root[:, 1] += 0.45 * air
    m.joint("spine", x=0.35 * crouch)
    for side in ("left", "right"):
        m.arm(side, shoulder=(0.6 * crouch - 2.4 * air, 0, 0.3 * air))
        m.joint("l_ankle", x=0.5 * air, side=side)
        m.gesture(side, "open", air)
    m.expression("surprise", 0.4 * air)


def walk(m: Track) -> None:
    phase = 2 * np.pi * 0.9 * m.t
    heading = 0.6
    m.joint("pelvis", y=heading + 0.08 * np.sin(phase))
    for side, shift in (("left", 0.0), ("right", np.pi)):
        p = phase + shift
        m.joint("l_hip", x=-0.45 * np.sin(p), side=side)
        m.joint("l_knee", x=0.9 * np.clip(np.cos(p), 0, None) ** 2 + 0.1, side=side)
        m.joint("l_ankle", x=-0.15 * np.sin(p), side=side)
        m.arm(side, shoulder=(0.4 * np.sin(p), 0, 0.05), elbow=(-0.25 + 0.15 * np.sin(p), 0, 0))
    m.root[:, 1] += -0.02 * (1 - np.cos(2 * phase)) / 2
    along = 0.9 * (m.t - m.duration / 2)  # leg lengths per second, centred on the clip
    m.root[:, 0] += along * np.sin(heading)
    m.root[:, 2] += along * np.cos(heading)
    m.blinks()


def dance(m: Track) -> None:
    beat = 2 * np.pi * 1.0 * m.t
    m.joint("pelvis", z=0.12 * np.sin(beat))
    m.root[:, 0] += 0.06 * np.sin(beat)
    m.squat(0.25 * (1 - np.cos(2 * beat)) / 2)
    for side, shift in (("left", 0.0), ("right", np.pi)):
        lift = 0.5 + 0.5 * np.sin(beat + shift)
        m.arm(side, shoulder=(-0.3, 0, 0.6 + 1.4 * lift), elbow=(0, 0, 1.2 * lift),
              wrist=(0, 1.2 * lift, 0))
        m.gesture(side, "open")
    m.joint("head", x=0.12 * np.sin(2 * beat), z=0.1 * np.sin(beat))
    m.expression("smile")


def facepalm(m: Track) -> None:
    up = m.ramp(0.1 * m.duration, min(0.6, 0.3 * m.duration))
    m.arm("right", shoulder=(-1.16 * up, -0.36 * up, -0.6 * up), elbow=(-1.91 * up, 0, 0))
    m.gesture("right", "flat", up)
    m.joint("head", x=0.3 * up, y=0.12 * up * m.wave(1.2))
    m.expression({"brow_furrow": 0.8, "blink": 0.9, "smile": -0.5}, up)


def point(m: Track) -> None:
    up = m.enter()
    m.arm("right", shoulder=(-0.6 * up, 0, up * (1.3 + 0.08 * m.wave(0.7))),
          elbow=(-0.15 * up, 0, 0))
    m.gesture("right", "point", up)
    m.joint("head", y=-0.45 * up)
    m.blinks()


def smile(m: Track) -> None:
    up = m.enter(0.4, 0.8)
    m.expression("smile", up)
    m.joint("head", z=0.1 * up, x=-0.05 * up)
    m.blinks()


def talk(m: Track) -> None:
    # A viseme every ~0.18 s, smoothed, drives the mouth; beats move the head and a hand.
    letters = list(VISEMES)
    step = 0.18
    n = int(m.duration / step) + 2
    keys = np.array([face_expression(letters[i])
                     for i in m.rng.integers(len(letters), size=n)])
    times = np.arange(n) * step
    for ch in range(NUM_EXPRESSION):
        m.face[:, ch] += np.interp(m.t, times, keys[:, ch])
    m.face[:, EXPR["brow_raise"]] += 0.4 * np.clip(m.wave(0.4, 1.0), 0, None)
    m.joint("head", x=0.06 * m.wave(0.8), y=0.08 * m.wave(0.35))
    m.arm("right", shoulder=(-0.35, 0, 0.1), elbow=(-1.1 - 0.25 * m.wave(1.5), 0, 0),
          wrist=(0, 0.8, 0))
    m.gesture("right", "open", 0.6)
    m.blinks()


def surprise(m: Track) -> None:
    hit = m.ramp(0.25 * m.duration, 0.15)
    m.expression("surprise", hit)
    for side in ("left", "right"):
        m.arm(side, shoulder=(-0.3 * hit, 0, 0.45 * hit), elbow=(-1.6 * hit, 0, 0))
        m.gesture(side, "open", hit)
    m.joint("spine", x=-0.15 * hit)
    m.joint("head", x=-0.1 * hit)


def nod(m: Track) -> None:
    nodding = 0.3 * m.wave(1.5) * m.enter(0.1, 0.3)
    m.joint("head", x=nodding)
    m.joint("neck", x=0.3 * nodding)
    m.expression("smile", 0.3)
    m.blinks()


def arms_up(m: Track) -> None:
    up = m.enter()
    for side, shift in (("left", 0.0), ("right", np.pi)):
        m.arm(side, shoulder=(0, 0, up * (2.75 + 0.12 * m.wave(1.0, shift))),
              elbow=(0, 0, 0.15 * up), wrist=(0, 1.57 * up, 0))
        m.gesture(side, "open", up)
    m.expression("smile", 0.8 * up)


def turn(m: Track) -> None:
    around = m.ramp(0.1 * m.duration, 0.8 * m.duration)
    m.joint("pelvis", y=np.pi * around)
    step = np.sin(np.pi * around) * np.clip(m.wave(1.5), 0, None)
    m.joint("l_knee", x=0.5 * step)
    m.joint("l_hip", x=-0.3 * step)
    m.blinks()


def thumbs_up(m: Track) -> None:
    up = m.enter()
    m.arm("right", shoulder=(-0.5 * up, 0, 0.2 * up), elbow=(-1.5 * up, 0, 0))
    m.gesture("right", "thumbs_up", up)
    m.expression("smile", up)
    m.joint("head", z=-0.08 * up)


def peace(m: Track) -> None:
    up = m.enter()
    m.arm("right", shoulder=(-1.1 * up, 0, -0.09 * up), elbow=(-2.0 * up, 0, 0),
          wrist=(0, 1.2 * up, 0))
    m.gesture("right", "peace", up)
    m.expression("smile", up)
    m.joint("head", z=-0.1 * up)


def shrug(m: Track) -> None:
    s = m.ramp(0.2 * m.duration, 0.3) * (1 - m.ramp(0.7 * m.duration, 0.3))
    for side in ("left", "right"):
        m.arm(side, shoulder=(0, 0, 0.35 * s), elbow=(-1.3 * s, 0, 0), wrist=(0, -1.2 * s, 0))
        m.gesture(side, "open", s)
    m.joint("head", z=0.15 * s)
    m.expression({"brow_raise": 0.8, "smile": -0.3}, s)


def bow(m: Track) -> None:
    down = m.ramp(0.15 * m.duration, 0.5) * (1 - m.ramp(0.65 * m.duration, 0.5))
    m.joint("spine", x=0.6 * down)
    m.joint("chest", x=0.25 * down)
    m.joint("head", x=0.2 * down)
    m.expression("smile", 0.5 * down)


@dataclass(frozen=True)
class Action:
    name: str
    phrase: str
    build: Callable[[Track], None]


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("static", "standing still", static),
    Action("idle", "standing idle, breathing and blinking", idle),
    Action("wave", "waving the right hand", wave),
    Action("clap", "clapping hands", clap),
    Action("jump", "jumping up and down", jump),
    Action("walk", "walking", walk),
    Action("dance", "dancing", dance),
    Action("facepalm", "facepalming with the right hand", facepalm),
    Action("point", "pointing with the right hand", point),
    Action("smile", "smiling", smile),
    Action("talk", "talking", talk),
    Action("surprise", "looking surprised", surprise),
    Action("nod", "nodding", nod),
    Action("arms_up", "raising both arms", arms_up),
    Action("turn", "turning around", turn),
    Action("thumbs_up", "giving a thumbs-up", thumbs_up),
    Action("peace", "making a peace sign", peace),
    Action("shrug", "shrugging", shrug),
    Action("bow", "bowing", bow),
)}


def make_motion(action: str, *, frames: int = 48, fps: float = 24.0, intensity: float = 0.7,
                seed: int = 0) -> Motion:
    """`frames` frames of a named action at `fps`; `intensity` in [0, 1] scales it
    (0 holds the neutral pose); `seed` varies the pace, blink times and talk visemes."""
    if action not in ACTIONS:
        raise InvalidInput(f"unknown action {action!r}; choose one of {sorted(ACTIONS)}")
    if not isinstance(frames, int | np.integer) or frames < 1:
        raise InvalidInput(f"frames must be a positive integer, got {frames!r}")
    if not (isinstance(fps, int | float) and fps > 0):
        raise InvalidInput(f"fps must be a positive number, got {fps!r}")
    if not (isinstance(intensity, int | float) and 0.0 <= intensity <= 1.0):
        raise InvalidInput(f"intensity must lie in [0, 1], got {intensity!r}")
    spec = ACTIONS[action]
    track = Track(int(frames), float(fps), np.random.default_rng(seed))
    spec.build(track)
    relaxed = hand_gesture("relaxed")
    hand_weight = min(1.0, 2.0 * intensity)  # a gesture forms fully from intensity 0.5
    return Motion(
        angles=NEUTRAL + intensity * track.angles,
        root=intensity * track.root + planted_root(intensity * track.bend),
        face=intensity * track.face, hands=relaxed + hand_weight * (track.hands - relaxed),
        fps=float(fps), action=action, phrase=spec.phrase, intensity=float(intensity),
        motion_id=f"{action}-i{intensity:.2f}-s{seed}-{frames}f{fps:g}")
