"""Motion measures from dense optical flow (OpenCV DIS on downscaled luma).

The flow of a clip is computed once (`clip_flow`) and shared by the amplitude and fluency
filters, the MotionCharacter motion intensity and the camera-move classifier. Flow is reported
in short sides per frame: pixels per frame divided by the short side of the analysed luma.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from models.curation.base import (
    CurationThresholds,
    FilterResult,
    analysis_luma,
    check_frames,
    result,
)

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
INTENSITY_LABELS = ("almost no", "slight", "moderate", "strong", "very strong")
_TEXTURED = 0.01  # luma change per pixel (≈ 2.5/255) above which flow is measured, not filled


@dataclass(frozen=True, eq=False)
class ClipFlow:
    """Forward flow between consecutive frames of a clip, at the analysis resolution."""

    luma: np.ndarray  # (T, h, w) uint8
    flow_px: np.ndarray  # (T-1, h, w, 2) float32, pixels per frame at (h, w)

    @property
    def short_side(self) -> int:
        return min(self.luma.shape[1:])

    @property
    def flow(self) -> np.ndarray:
        """(T-1, h, w, 2) flow in short sides per frame."""
        return self.flow_px / self.short_side

    @cached_property
    def magnitude(self) -> np.ndarray:
        """(T-1, h, w) flow magnitude in short sides per frame (computed once)."""
        return np.hypot(self.flow_px[..., 0], self.flow_px[..., 1]) / self.short_side


def clip_flow(frames: np.ndarray, th: CurationThresholds) -> ClipFlow:
    """DIS optical flow between every pair of consecutive frames."""
    frames = check_frames(frames, min_frames=2)
    luma = analysis_luma(frames, th.analysis_short_side)
    dis = cv2.DISOpticalFlow_create(_PRESETS[th.flow_preset])
    flow = np.stack([dis.calc(a, b, None) for a, b in zip(luma[:-1], luma[1:], strict=True)])
    return ClipFlow(luma, flow.astype(np.float32))


def as_flow(clip: np.ndarray | ClipFlow, th: CurationThresholds) -> ClipFlow:
    return clip if isinstance(clip, ClipFlow) else clip_flow(clip, th)


# --- amplitude and fluency ---------------------------------------------------------------


def motion_amplitude_filter(clip: np.ndarray | ClipFlow, th: CurationThresholds) -> FilterResult:
    """Mean flow magnitude over all pixels and frame pairs (short sides per frame)."""
    flow = as_flow(clip, th)
    amplitude = float(flow.magnitude.mean())
    failures = []
    if amplitude < th.min_motion and not th.allow_static:
        failures.append(f"too little motion: mean flow {amplitude:.2g} < {th.min_motion:.2g} "
                        "short sides/frame")
    if amplitude > th.max_motion:
        failures.append(f"too much motion: mean flow {amplitude:.2g} > {th.max_motion:.2g} "
                        "short sides/frame")
    return result("motion_amplitude", {"mean_flow": amplitude}, failures)


def warp_residuals(flow: ClipFlow) -> np.ndarray:
    """(T-1,) mean |luma_t - luma_t+1 warped back by the flow|, luma in [0, 1].

    Where the flow explains the change (any motion) the residual is small; across a cut or
    a jump no flow can explain it, so the residual stays as large as the raw difference."""
    h, w = flow.luma.shape[1:]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)
    margin = max(1, min(h, w) // 16)  # content entering at the borders has no match
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    residuals = []
    for t, f in enumerate(flow.flow_px):
        coords = grid + f
        warped = cv2.remap(flow.luma[t + 1], coords[..., 0], coords[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        diff = np.abs(flow.luma[t].astype(np.float32) - warped.astype(np.float32))
        residuals.append(diff[inner].mean() / 255.0)
    return np.array(residuals)


def fluency_filter(clip: np.ndarray | ClipFlow, th: CurationThresholds) -> FilterResult:
    """Temporal smoothness: relative jerk of the per-pair mean flow magnitude, and cuts/jumps.

    relative jerk = mean_t |a_t+1 - a_t| / mean_t a_t, with a_t the mean flow magnitude of
    pair t; stutter (dropped or duplicated frames) and sudden jumps make it large. The
    denominator is floored at `min_motion` so that the noise of a near-static clip does not
    count as jerk. A cut is a pair whose flow-compensated residual exceeds `cut_residual`."""
    flow = as_flow(clip, th)
    speed = flow.magnitude.mean(axis=(1, 2))
    jerk = float(np.abs(np.diff(speed)).mean() / max(speed.mean(), th.min_motion)
                 if len(speed) > 1 else 0.0)
    residuals = warp_residuals(flow)
    cuts = np.flatnonzero(residuals > th.cut_residual)
    failures = []
    if len(cuts) > th.max_cuts:
        where = ", ".join(f"{t}→{t + 1}" for t in cuts[:5])
        failures.append(f"cut or jump between frames {where}: flow-compensated residual "
                        f"{residuals.max():.2f} > {th.cut_residual:.2f}")
    if jerk > th.max_relative_jerk:
        failures.append(f"jerky motion: relative jerk {jerk:.2f} > {th.max_relative_jerk:.2f}")
    return result("fluency", {"relative_jerk": jerk, "cuts": len(cuts),
                              "max_residual": float(residuals.max())}, failures)


# --- motion intensity (MotionCharacter) ----------------------------------------------------


def motion_intensity(clip: np.ndarray | ClipFlow, th: CurationThresholds) -> float:
    """Per-clip motion intensity after MotionCharacter (Fang et al., 2024, arXiv 2411.18281).

    NOT VERIFIED against the paper's Eq. 5-7: only the abstract and summaries of the paper
    could be retrieved here (arxiv.org/html/2411.18281v2 and v3, motioncharacter.github.io,
    sciencestack.ai). They say that intensity is "a quantifiable metric derived from optical
    flow", a single coefficient per clip, used with a region-aware loss that localises motion
    to the subject. What is implemented is the reading the project lead remembers:

        m_t(p) = ||F_t(p)||                     flow magnitude of frame pair t at pixel p
        M_t    = {p : m_t(p) > tau}             foreground mask: the pixels that move
        I      = 1/(T-1) * sum_t mean_{p in M_t} m_t(p)     (an empty M_t contributes 0)

    with tau = `th.intensity_flow_threshold`. Flow is OpenCV DIS on luma downscaled to
    `th.analysis_short_side` (the paper uses a learned flow network). Unit: short sides per
    frame (multiply by the short side in pixels for pixels per frame). Masking makes the value
    the speed of what moves, independent of how much of the frame it covers; a static clip
    gives 0.
    """
    magnitude = as_flow(clip, th).magnitude
    per_pair = []
    for m in magnitude:
        moving = m[m > th.intensity_flow_threshold]
        per_pair.append(moving.mean() if moving.size else 0.0)
    return float(np.mean(per_pair))


def intensity_level(intensity: float, th: CurationThresholds) -> int:
    """Discrete bucket of a motion intensity: 0 ... len(th.intensity_levels)."""
    return int(np.searchsorted(th.intensity_levels, intensity, side="right"))


def intensity_label(intensity: float, th: CurationThresholds) -> str:
    """Words for the bucket: "almost no", "slight", "moderate", "strong", "very strong"."""
    level = intensity_level(intensity, th)
    return INTENSITY_LABELS[min(level, len(INTENSITY_LABELS) - 1)]


# --- camera motion -------------------------------------------------------------------------


def _fit_similarity(flow: np.ndarray, luma: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Robust least-squares fit of u = tx + s·x - r·y, v = ty + r·x + s·y to one flow field
    (pixels; x, y centred, in short sides). Returns (tx, ty, s, r) in short sides per frame.

    In complex numbers the model is w = t + c·z (w = u + iv, z = x + iy, t = tx + i·ty,
    c = s + i·r), whose least-squares solution is closed-form. Only textured pixels are used
    (flow in flat regions is filled in from the neighbours, e.g. leaked from a moving
    subject), and re-fitting on the best-explained half lets the background (the majority)
    win over a moving subject. Every other pixel is enough and halves the cost twice."""
    h, w = flow.shape[:2]
    side = min(h, w)
    margin = max(1, side // 12)  # borders are where content appears and flow is unreliable
    inner = (slice(margin, h - margin, 2), slice(margin, w - margin, 2))
    ys, xs = np.mgrid[inner]
    z = ((xs - (w - 1) / 2) + 1j * (ys - (h - 1) / 2)).ravel() / side
    f = flow[inner].reshape(-1, 2) / side
    motion = f[:, 0] + 1j * f[:, 1]
    gradient = cv2.magnitude(*(cv2.Sobel(luma, cv2.CV_32F, dx, 1 - dx, scale=1 / (8 * 255))
                               for dx in (1, 0)))
    keep = gradient[inner].ravel() > _TEXTURED
    if keep.mean() < 0.05:  # (almost) no texture anywhere: use every pixel
        keep[:] = True
    t = c = 0j
    for _ in range(iterations):
        zk, wk = z[keep], motion[keep]
        dz = zk - zk.mean()
        c = np.vdot(dz, wk - wk.mean()) / max(np.vdot(dz, dz).real, 1e-12)
        t = wk.mean() - c * zk.mean()
        err = np.abs(motion - t - c * z)
        keep &= err <= np.median(err[keep])
    return np.array([t.real, t.imag, c.real, c.imag])


def camera_motion(clip: np.ndarray | ClipFlow, th: CurationThresholds) -> dict[str, float]:
    """Median over frame pairs of the global similarity motion: `tx`, `ty` (image motion of
    the background, short sides/frame, x right, y down), `zoom` (relative scale change per
    frame, > 0 when the image grows) and `rotation` (rad/frame)."""
    flow = as_flow(clip, th)
    pairs = zip(flow.flow_px, flow.luma[:-1], strict=True)
    params = np.median([_fit_similarity(f, luma) for f, luma in pairs], axis=0)
    return dict(zip(("tx", "ty", "zoom", "rotation"), map(float, params), strict=True))


def classify_camera(motion: dict[str, float], th: CurationThresholds) -> str:
    """static, pan_left, pan_right, tilt_up, tilt_down, zoom_in or zoom_out.

    The background moves opposite to the camera: a pan to the left shifts the image content
    to the right (tx > 0), a tilt up shifts it down (ty > 0), a zoom in enlarges it."""
    pan = abs(motion["tx"]) / th.camera_translation
    tilt = abs(motion["ty"]) / th.camera_translation
    zoom = abs(motion["zoom"]) / th.camera_zoom
    strongest = max(pan, tilt, zoom)
    if strongest < 1:
        return "static"
    if strongest == zoom:
        return "zoom_in" if motion["zoom"] > 0 else "zoom_out"
    if strongest == pan:
        return "pan_left" if motion["tx"] > 0 else "pan_right"
    return "tilt_up" if motion["ty"] > 0 else "tilt_down"
