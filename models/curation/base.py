"""Shared types of the curation filters: the thresholds, the result, and frame helpers.

Every filter is a pure function `(clip data, thresholds) -> FilterResult`; the thresholds live
in one frozen dataclass so that the platform's settings object can build it in one place.

Units used throughout:
- luma: BT.601 luma scaled to [0, 1];
- motion: optical flow in *short sides per frame* (pixels per frame divided by the short side
  of the image the flow was measured on), so numbers do not depend on the clip's resolution;
- keypoint speeds: torso lengths per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.errors import InvalidInput

FLOW_PRESETS = ("ultrafast", "fast", "medium")
IDENTITY_REDUCTIONS = ("max", "mean")
NO_FACE_POLICIES = ("skip", "fail")


@dataclass(frozen=True)
class CurationThresholds:
    """Every threshold of the curation filters, with defaults for the tiny (128² px) profile."""

    # --- analysis resolution (not pass/fail thresholds, but they set the scale of the scores)
    analysis_short_side: int = 128  # px; luma is downscaled to this for flow and frozen frames
    flow_preset: str = "medium"  # OpenCV DIS preset: "ultrafast", "fast" or "medium"
    sample_frames: int = 8  # frames sampled for per-frame measures (sharpness, appearance)

    # --- resolution
    min_short_side: int = 128  # px

    # --- sharpness: variance of the Laplacian (3×3) of luma over the mean squared gradient
    # (1/px², contrast- and content-free), measured after resizing the frame to
    # `sharpness_short_side` (keep it at or below the smallest clips' short side: upscaling
    # blurs), median over sampled frames. Sharp footage scores 3-6; a Gaussian blur of
    # sigma 1 px at that scale about 0.6.
    sharpness_short_side: int = 128  # px
    min_sharpness: float = 1.0

    # --- exposure
    min_mean_luma: float = 0.15
    max_mean_luma: float = 0.85
    dark_luma: float = 0.02  # a pixel at or below this luma is clipped dark (≈ 5/255)
    bright_luma: float = 0.98  # a pixel at or above this luma is clipped bright (≈ 250/255)
    max_dark_fraction: float = 0.25  # of all pixels of the sampled frames
    max_bright_fraction: float = 0.25

    # --- frozen frames: a consecutive pair is near-identical when no 8×8 block of the
    # analysis-resolution luma changes by more than `static_block_delta` on average
    static_block_delta: float = 0.01  # luma units (≈ 2.5/255)
    max_static_fraction: float = 0.3  # of consecutive pairs
    allow_static: bool = False  # fully static clips pass (they are added on purpose elsewhere)

    # --- motion amplitude: mean flow magnitude over all pixels and pairs, short sides/frame
    min_motion: float = 3e-4  # a few pedestrians in a wide shot move ~6e-4
    max_motion: float = 0.08

    # --- fluency
    max_relative_jerk: float = 0.8  # mean |Δ per-pair mean flow magnitude| / mean magnitude
    cut_residual: float = 0.08  # mean |luma - flow-warped next luma| above which a pair is a cut
    max_cuts: int = 0

    # --- motion intensity (MotionCharacter): foreground = flow magnitude above this
    intensity_flow_threshold: float = 2e-3  # short sides/frame (≈ 0.26 px/frame at 128 px)
    # bucket edges, short sides/frame: "almost no" < 0.002 ≤ "slight" < 0.005 ≤ "moderate"
    # < 0.01 ≤ "strong" < 0.02 ≤ "very strong" (synthetic actions at 128 px: 0.004-0.009)
    intensity_levels: tuple[float, ...] = (2e-3, 5e-3, 0.01, 0.02)

    # --- camera motion (similarity model fitted to the background flow)
    camera_translation: float = 3e-3  # short sides/frame for a pan or tilt
    camera_zoom: float = 3e-3  # relative scale change per frame for a zoom

    # --- identity (dlib 128-d face embedding, L2 distance; 0.6 is dlib's same-person threshold)
    max_identity_distance: float = 0.6
    identity_reduce: str = "max"  # "max" (every sampled face must match) or "mean"
    identity_frames: int = 4  # frames sampled for face embeddings
    no_face: str = "skip"  # no face found in the clip: "skip" (pass, flagged) or "fail"
    face_upsample: int = 1  # dlib HOG detector upsampling (1: faces down to ~40 px)
    face_min_side: int = 256  # px; smaller frames are upscaled before detection

    # --- appearance stability: HSV histogram correlation of the subject region vs frame 0
    min_appearance_correlation: float = 0.5  # a pan over a third of the frame ≈ 0.6

    # --- keypoint coverage
    keypoint_confidence: float = 0.3  # a keypoint counts as detected at or above this
    part_visible_fraction: float = 0.5  # a part is detected when this share of its points is
    min_body_coverage: float = 0.8  # share of frames with the body detected
    min_face_coverage: float = 0.5
    min_hand_coverage: float = 0.25  # share of frames with at least one hand detected
    min_body_in_frame: float = 0.7  # share of body joints (all frames) detected inside the frame

    # --- action phrase heuristic
    action_speed: float = 0.015  # torso lengths/frame above which a limb counts as moving

    def __post_init__(self):
        for name, allowed in (("flow_preset", FLOW_PRESETS),
                              ("identity_reduce", IDENTITY_REDUCTIONS),
                              ("no_face", NO_FACE_POLICIES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if list(self.intensity_levels) != sorted(self.intensity_levels):
            raise ValueError("intensity_levels must be increasing")
        for name in ("analysis_short_side", "sample_frames", "sharpness_short_side",
                     "identity_frames", "face_min_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True)
class FilterResult:
    """One filter's decision on one clip. `reason` says in words why it failed (empty when it
    passed); `skipped` marks a pass that was not measured (no face, no keypoints)."""

    name: str
    passed: bool
    scores: dict[str, float]
    reason: str = ""
    skipped: bool = False


def result(name: str, scores: dict[str, float], failures: list[str]) -> FilterResult:
    """A result that passes when `failures` (reasons in words) is empty."""
    return FilterResult(name, not failures, {k: float(v) for k, v in scores.items()},
                        "; ".join(failures))


def check_frames(frames: np.ndarray, min_frames: int = 1) -> np.ndarray:
    """Validate a (T, H, W, 3) uint8 RGB clip."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInput(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise InvalidInput(f"frames must be uint8, got {frames.dtype}")
    if len(frames) < min_frames:
        raise InvalidInput(f"need at least {min_frames} frames, got {len(frames)}")
    return frames


def sample_indices(count: int, wanted: int) -> np.ndarray:
    """Up to `wanted` frame indices spread evenly over `count` frames, first and last included."""
    return np.unique(np.linspace(0, count - 1, min(wanted, count)).round().astype(int))


def resize_short_side(image: np.ndarray, side: int, upscale: bool = True) -> np.ndarray:
    """Resize so that the short side is `side` px (area filter when shrinking)."""
    h, w = image.shape[:2]
    scale = side / min(h, w)
    if scale == 1 or (scale > 1 and not upscale):
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def luma_u8(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def analysis_luma(frames: np.ndarray, side: int) -> np.ndarray:
    """(T, h, w) uint8 luma, downscaled (never upscaled) to a short side of `side` px."""
    return np.stack([resize_short_side(luma_u8(f), side, upscale=False) for f in frames])
