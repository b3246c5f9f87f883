"""Technical quality filters: resolution, sharpness, exposure, frozen (static) frames."""

from __future__ import annotations

import cv2
import numpy as np

from models.curation.base import (
    CurationThresholds,
    FilterResult,
    analysis_luma,
    check_frames,
    luma_u8,
    resize_short_side,
    result,
    sample_indices,
)
from models.curation.optical_flow import ClipFlow

_BLOCK = 8  # px; frozen-frame test compares 8×8 block means, which averages out codec noise


def resolution_filter(frames: np.ndarray, th: CurationThresholds) -> FilterResult:
    """Short side of the frames in pixels."""
    frames = check_frames(frames)
    height, width = frames.shape[1:3]
    side = min(height, width)
    failures = []
    if side < th.min_short_side:
        failures.append(f"too small: short side {side} px < {th.min_short_side} px")
    return result("resolution", {"short_side": side, "height": height, "width": width},
                  failures)


def sharpness_filter(frames: np.ndarray, th: CurationThresholds) -> FilterResult:
    """Variance of the Laplacian of luma, normalised for resolution and content; median over
    sampled frames.

    Each frame is resized to a short side of `th.sharpness_short_side` (a fixed scale, so the
    score does not depend on the clip's resolution), and the Laplacian variance is divided by
    the mean squared gradient. The raw variance also grows with contrast and with how much of
    the frame is textured, so a dim clip or a subject on a plain background (synthetic
    renders) would read as blurry; the ratio only measures how steep the edges are (it falls
    as 1/sigma² under a Gaussian blur of sigma px). Both are reported; the ratio decides."""
    frames = check_frames(frames)
    variances, ratios = [], []
    for i in sample_indices(len(frames), th.sample_frames):
        luma = resize_short_side(luma_u8(frames[i]), th.sharpness_short_side)
        luma = luma.astype(np.float32) / 255.0
        laplacian_var = cv2.Laplacian(luma, cv2.CV_32F).var()
        gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, scale=0.125)  # 1/8: luma change per pixel
        gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, scale=0.125)
        variances.append(laplacian_var)
        ratios.append(laplacian_var / max(float((gx**2 + gy**2).mean()), 1e-12))
    sharpness = float(np.median(ratios))
    failures = []
    if sharpness < th.min_sharpness:
        failures.append(f"too blurry: normalised Laplacian variance {sharpness:.2f} "
                        f"< {th.min_sharpness:.2f}")
    return result("sharpness", {"sharpness": sharpness,
                                "laplacian_var": float(np.median(variances))}, failures)


def exposure_filter(frames: np.ndarray, th: CurationThresholds) -> FilterResult:
    """Mean luma and the fractions of clipped dark and bright pixels, over sampled frames."""
    frames = check_frames(frames)
    idx = sample_indices(len(frames), th.sample_frames)
    luma = analysis_luma(frames[idx], th.analysis_short_side).astype(np.float32) / 255.0
    mean = float(luma.mean())
    dark = float((luma <= th.dark_luma).mean())
    bright = float((luma >= th.bright_luma).mean())
    failures = []
    if mean < th.min_mean_luma:
        failures.append(f"too dark: mean luma {mean:.2f} < {th.min_mean_luma:.2f}")
    if mean > th.max_mean_luma:
        failures.append(f"too bright: mean luma {mean:.2f} > {th.max_mean_luma:.2f}")
    if dark > th.max_dark_fraction:
        failures.append(f"crushed shadows: {dark:.0%} of pixels clipped dark "
                        f"> {th.max_dark_fraction:.0%}")
    if bright > th.max_bright_fraction:
        failures.append(f"blown highlights: {bright:.0%} of pixels clipped bright "
                        f"> {th.max_bright_fraction:.0%}")
    return result("exposure", {"mean_luma": mean, "dark_fraction": dark,
                               "bright_fraction": bright}, failures)


def frozen_pairs(clip: np.ndarray | ClipFlow, th: CurationThresholds) -> np.ndarray:
    """(T-1,) bool: consecutive pairs with no 8×8 block changing more than the threshold."""
    luma = (clip.luma if isinstance(clip, ClipFlow)
            else analysis_luma(check_frames(clip, min_frames=2), th.analysis_short_side))
    luma = luma.astype(np.float32) / 255.0
    diff = np.abs(np.diff(luma, axis=0))
    t, h, w = diff.shape
    hb, wb = max(1, h // _BLOCK), max(1, w // _BLOCK)
    blocks = diff[:, :hb * _BLOCK, :wb * _BLOCK].reshape(t, hb, _BLOCK, wb, _BLOCK).mean((2, 4))
    return blocks.max(axis=(1, 2)) <= th.static_block_delta


def static_filter(clip: np.ndarray | ClipFlow, th: CurationThresholds) -> FilterResult:
    """Share of near-identical consecutive frames (frozen or duplicated frames), from the
    frames or from a `ClipFlow` (which holds the same analysis luma).

    A fully static clip fails unless `th.allow_static`: static clips are added on purpose by
    another path, and here they are far more often a frozen stream than a wanted sample."""
    frozen = frozen_pairs(clip, th)
    fraction = float(frozen.mean())
    fully_static = bool(frozen.all())
    failures = []
    if fully_static and not th.allow_static:
        failures.append(f"fully static: all {len(frozen)} consecutive frame pairs identical")
    elif not fully_static and fraction > th.max_static_fraction:
        failures.append(f"frozen frames: {fraction:.0%} of consecutive pairs identical "
                        f"> {th.max_static_fraction:.0%}")
    return result("static", {"static_fraction": fraction, "fully_static": fully_static},
                  failures)
