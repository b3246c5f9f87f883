"""Who is drawn: body proportions, colours, clothing and background, as presets or by seed.

Sizes are metres. A character is built from a few human-scale numbers (height, heads tall,
leg and arm fractions, build) so presets read like a figure-drawing table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.errors import InvalidInput

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Body:
    """Bone lengths and widths in metres (the character frame: x left, y up, z forward)."""

    head_radius: float  # half-width of the head; half-height is 1.18x, depth 1.05x
    neck: float
    torso: float  # waist joint to the shoulder line
    shoulder_width: float
    hip_width: float  # between the hip joints
    upper_arm: float
    forearm: float
    hand: float  # wrist to the middle fingertip
    thigh: float
    shin: float
    ankle: float  # ankle height above the sole
    foot: float
    arm_width: float
    leg_width: float
    torso_depth: float  # chest front to back

    @property
    def leg(self) -> float:
        """Hip joint to the ground, standing: the unit of root motion."""
        return self.thigh + self.shin + self.ankle


def body(height: float, heads_tall: float, leg: float, arm: float, hand: float,
         shoulders: float, build: float = 1.0) -> Body:
    """A body from figure-drawing numbers: `leg`, `arm` (shoulder to wrist), `hand` and
    `shoulders` as fractions of the height; `build` scales widths (0.8 slim, 1.3 stocky)."""
    head_h = height / heads_tall
    legs = leg * height
    ankle = 0.045 * legs
    above_hips = height - legs - head_h
    neck = 0.16 * above_hips
    return Body(
        head_radius=head_h / 2 / 1.18, neck=neck, torso=above_hips - neck,
        shoulder_width=shoulders * height * (0.85 + 0.15 * build),
        hip_width=0.10 * height * (0.8 + 0.2 * build),
        upper_arm=0.55 * arm * height, forearm=0.45 * arm * height, hand=hand * height,
        thigh=0.51 * (legs - ankle), shin=0.49 * (legs - ankle), ankle=ankle,
        foot=0.145 * height, arm_width=0.05 * height * build, leg_width=0.07 * height * build,
        torso_depth=0.12 * height * build)


BODIES = {
    "adult": dict(height=1.75, heads_tall=7.5, leg=0.48, arm=0.33, hand=0.105, shoulders=0.23),
    "tall_slim": dict(height=1.9, heads_tall=8.0, leg=0.50, arm=0.34, hand=0.105,
                      shoulders=0.21, build=0.8),
    "stocky": dict(height=1.65, heads_tall=7.0, leg=0.45, arm=0.32, hand=0.11,
                   shoulders=0.26, build=1.35),
    "teen": dict(height=1.55, heads_tall=6.8, leg=0.47, arm=0.32, hand=0.105, shoulders=0.22,
                 build=0.9),
    "child": dict(height=1.15, heads_tall=5.5, leg=0.42, arm=0.31, hand=0.10, shoulders=0.22),
    "toddler": dict(height=0.85, heads_tall=4.2, leg=0.36, arm=0.29, hand=0.10, shoulders=0.23,
                    build=1.15),
    "cartoon": dict(height=1.2, heads_tall=3.0, leg=0.32, arm=0.27, hand=0.13, shoulders=0.25,
                    build=1.1),
    "chibi": dict(height=1.0, heads_tall=2.3, leg=0.27, arm=0.24, hand=0.13, shoulders=0.27,
                  build=1.2),
}

SKIN = [(255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 90), (160, 102, 66),
        (118, 74, 47), (86, 55, 38), (250, 210, 180)]
HAIR = [(20, 18, 16), (60, 40, 25), (110, 70, 40), (180, 130, 70), (230, 200, 120),
        (160, 50, 30), (140, 140, 140), (240, 240, 235), (70, 110, 200), (200, 80, 160)]
CLOTH = [(200, 40, 40), (40, 90, 200), (40, 150, 70), (240, 200, 40), (240, 130, 30),
         (120, 60, 170), (30, 30, 40), (235, 235, 235), (120, 120, 125), (20, 150, 160),
         (230, 110, 150), (110, 80, 50)]
EYES = [(60, 40, 25), (40, 90, 160), (60, 120, 60), (30, 25, 20)]
BACKDROP = [(235, 235, 230), (180, 200, 225), (205, 230, 200), (250, 225, 200), (90, 95, 110),
            (60, 70, 60), (240, 240, 200), (200, 180, 220), (150, 170, 150), (40, 45, 60)]

SLEEVES = ("short", "long", "none")
LOWER = ("pants", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "bald", "bun")
BACKGROUNDS = ("solid", "vertical_gradient", "horizontal_gradient", "stripes", "checker",
               "dots", "floor")


@dataclass(frozen=True)
class Palette:
    skin: RGB
    hair: RGB
    eyes: RGB
    shirt: RGB
    pants: RGB
    shoes: RGB


@dataclass(frozen=True)
class Outfit:
    sleeves: str = "short"
    lower: str = "pants"
    hair: str = "short"


@dataclass(frozen=True)
class Background:
    kind: str = "solid"
    colors: tuple[RGB, RGB] = ((235, 235, 230), (180, 200, 225))
    scale: float = 0.1  # pattern period as a fraction of the frame
    seed: int = 0


@dataclass(frozen=True)
class CharacterSpec:
    identity_id: str
    preset: str
    body: Body
    palette: Palette
    outfit: Outfit
    background: Background

    def describe(self) -> str:
        """A short caption fragment: 'a child with long brown hair, red shirt, blue skirt'."""
        hair = "no hair" if self.outfit.hair == "bald" else \
            f"{self.outfit.hair} {color_name(self.palette.hair)} hair"
        return (f"a {self.preset.replace('_', ' ')} character with {hair}, a "
                f"{color_name(self.palette.shirt)} shirt and {color_name(self.palette.pants)} "
                f"{self.outfit.lower}")


_NAMED_COLORS = {
    "black": (25, 25, 25), "white": (240, 240, 240), "grey": (130, 130, 130),
    "red": (200, 40, 40), "blue": (40, 90, 200), "green": (40, 150, 70),
    "yellow": (240, 200, 40), "orange": (240, 130, 30), "purple": (120, 60, 170),
    "teal": (20, 150, 160), "pink": (230, 110, 150), "brown": (110, 70, 40),
    "blond": (220, 185, 110), "auburn": (160, 50, 30),
}


def color_name(rgb: RGB) -> str:
    names = list(_NAMED_COLORS)
    dist = [sum((a - b) ** 2 for a, b in zip(rgb, _NAMED_COLORS[n], strict=True)) for n in names]
    return names[int(np.argmin(dist))]


def character_preset(name: str = "adult", identity_id: str | None = None) -> CharacterSpec:
    """A fixed, plain-looking character of body preset `name` (see `BODIES`)."""
    if name not in BODIES:
        raise InvalidInput(f"unknown character preset {name!r}; choose one of {sorted(BODIES)}")
    return CharacterSpec(
        identity_id=identity_id or f"preset-{name}", preset=name, body=body(**BODIES[name]),
        palette=Palette(skin=SKIN[1], hair=HAIR[1], eyes=EYES[0], shirt=CLOTH[1],
                        pants=CLOTH[6], shoes=(50, 40, 35)),
        outfit=Outfit(), background=Background())


def sample_character(seed: int, preset: str | None = None) -> CharacterSpec:
    """A random character, fully determined by `seed`: a body preset (or `preset`) with
    jittered proportions, colours, outfit and background. identity_id is 'syn-<seed>'."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    if preset is not None and preset not in BODIES:
        raise InvalidInput(f"unknown character preset {preset!r}; choose one of {sorted(BODIES)}")
    rng = np.random.default_rng(seed)
    name = preset or str(rng.choice(list(BODIES)))
    params = dict(BODIES[name])
    for key in ("leg", "arm", "hand", "shoulders"):
        params[key] *= rng.uniform(0.93, 1.07)
    params["heads_tall"] *= rng.uniform(0.92, 1.08)
    params["height"] *= rng.uniform(0.92, 1.08)
    params["build"] = params.get("build", 1.0) * rng.uniform(0.85, 1.2)

    def pick(options):  # a choice from a list of tuples/strings, as plain Python values
        item = options[int(rng.integers(len(options)))]
        return tuple(int(c) for c in item) if isinstance(item, tuple) else item

    shirt, pants = (CLOTH[i] for i in rng.choice(len(CLOTH), 2, replace=False))
    hair_style = pick(HAIR_STYLES)
    palette = Palette(skin=pick(SKIN), hair=pick(HAIR), eyes=pick(EYES), shirt=shirt,
                      pants=pants, shoes=pick([(40, 35, 30), (240, 240, 240), (120, 40, 40),
                                               (60, 60, 90)]))
    bg_colors = tuple(BACKDROP[i] for i in rng.choice(len(BACKDROP), 2, replace=False))
    background = Background(kind=pick(BACKGROUNDS), colors=bg_colors,
                            scale=float(rng.uniform(0.05, 0.2)), seed=seed)
    outfit = Outfit(sleeves=pick(SLEEVES), lower=pick(LOWER), hair=hair_style)
    return CharacterSpec(identity_id=f"syn-{seed}", preset=name, body=body(**params),
                         palette=palette, outfit=outfit, background=background)


def with_background(character: CharacterSpec, kind: str, **kwargs) -> CharacterSpec:
    """The same character in front of another background."""
    if kind not in BACKGROUNDS:
        raise InvalidInput(f"unknown background {kind!r}; choose one of {BACKGROUNDS}")
    return replace(character, background=replace(character.background, kind=kind, **kwargs))
