"""Classical baselines that a generated clip must beat: the still reference ("no motion"), a
keypoint-driven thin-plate-spline warp of the reference ("image warping, no generation") and,
for how much of a photo's look an output keeps, a 32-px thumbnail of the reference ("no detail").

Both work in the square-crop convention of `models.extraction.square` / `square_keypoints`:
the reference is centre-cropped and resized to size², keypoints are normalised to that square.
"""

from __future__ import annotations

import cv2
import numpy as np

from models import keypoints as K
from models.errors import InvalidInput
from models.extraction import check_reference, square

WARP_POINTS = slice(K.BODY.start, K.FEET.stop)  # the 23 body and feet points drive the warp
WARP_CONFIDENCE = 0.5  # a point drives the warp when both its reference and target exceed this
MIN_WARP_POINTS = 4  # fewer confident points than this: the frame is the unwarped reference
TPS_SMOOTHING = 1e-2  # regularisation of the spline (in squared frame units): robust to
# near-duplicate points, which make the exact interpolation system singular
# The warp a model starts from (models.conditions): smoother, so that a keypoint MediaPipe
# misplaces bends the figure less. On the 8 held-out pairs (MediaPipe's reference keypoints,
# 64 px) SSIM to the truth: 0.747 at the baseline's 1e-2, 0.764 at 0.1, 0.798 at 1, 0.785 at
# 10, 0.777 at 1e3 (nearly affine); the static reference 0.717.
WARP_PRIOR_SMOOTHING = 1.0
THUMBNAIL_PX = 32  # side of the thumbnail baseline before it is scaled back up
# Fixed anchors (normalised), so that the background and frame borders stay put.
BORDER_ANCHORS = np.array([(x, y) for x in (0.0, 0.5, 1.0) for y in (0.0, 0.5, 1.0)
                           if (x, y) != (0.5, 0.5)], dtype=np.float64)


def static_reference(reference: np.ndarray, frames: int, size: int) -> np.ndarray:
    """(frames, size, size, 3): the square reference repeated, the "no motion" baseline."""
    if frames < 1 or size < 1:
        raise InvalidInput(f"frames and size must be positive, got {frames} and {size}")
    return np.repeat(square(check_reference(reference), size)[None], frames, axis=0)


def thumbnail(reference: np.ndarray, frames: int, size: int, side: int = THUMBNAIL_PX
              ) -> np.ndarray:
    """(frames, size, size, 3): the square reference shrunk to side² and scaled back up
    (bilinear), repeated. Scored by its SSIM to the reference, it is the bar for an output that
    keeps the photo's look: a model that only keeps a blurred copy of it does no better."""
    small = square(check_reference(reference), side)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.repeat(big[None], frames, axis=0)


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """The thin-plate radial basis U = r² log r² (0 at r = 0)."""
    return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-20)), 0.0)


def _fit_tps(src: np.ndarray, dst: np.ndarray, smoothing: float):
    """The thin-plate spline f with f(src_i) ≈ dst_i (both (N, 2)); returns f as a function
    of (M, 2) points. Solves [[K + λI, P], [Pᵀ, 0]] [w; a] = [dst; 0], λ = smoothing."""
    n = len(src)
    kernel = _tps_kernel(((src[:, None] - src[None]) ** 2).sum(-1)) + smoothing * np.eye(n)
    affine = np.hstack([np.ones((n, 1)), src])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n], system[:n, n:], system[n:, :n] = kernel, affine, affine.T
    rhs = np.vstack([dst, np.zeros((3, 2))])
    coef = np.linalg.lstsq(system, rhs, rcond=None)[0]

    def f(points: np.ndarray) -> np.ndarray:
        # squared distances as |p|² + |s|² - 2 p·s: one matmul, not an (M, N, 2) array
        d2 = (points ** 2).sum(1)[:, None] + (src ** 2).sum(1)[None] - 2 * points @ src.T
        basis = _tps_kernel(np.maximum(d2, 0.0))
        return basis @ coef[:n] + np.hstack([np.ones((len(points), 1)), points]) @ coef[n:]

    return f


def _warp_frame(image: np.ndarray, ref_pts: np.ndarray, target_pts: np.ndarray,
                smoothing: float) -> np.ndarray:
    """Backward warp: a spline maps each output pixel (target pose) to where it is in the
    reference, and the reference is sampled there."""
    size = image.shape[0]
    to_reference = _fit_tps(np.vstack([target_pts, BORDER_ANCHORS]),
                            np.vstack([ref_pts, BORDER_ANCHORS]), smoothing)
    centres = (np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2)
               + 0.5) / size
    source = (to_reference(centres) * size - 0.5).reshape(size, size, 2).astype(np.float32)
    return cv2.remap(image, source[..., 0], source[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def tps_warp(reference: np.ndarray, reference_keypoints: np.ndarray,
             target_keypoints: np.ndarray, size: int, smoothing: float = TPS_SMOOTHING
             ) -> np.ndarray:
    """(T, size, size, 3): the square reference warped, frame by frame, by a thin-plate spline
    that moves its confident body and feet keypoints onto the target's (a classical
    "animate by warping" baseline: no occlusion, no new content).

    reference (H, W, 3) uint8; reference_keypoints (133, 4) and target_keypoints (T, 133, 4),
    normalised to the square crop. The frame borders are anchored (BORDER_ANCHORS), so the
    background stays put. A frame with fewer than MIN_WARP_POINTS points confident in both is
    the unwarped reference. smoothing: λ of the spline; larger is smoother, towards an affine
    map (a model's warp prior uses WARP_PRIOR_SMOOTHING).

    Limits (measured on the 19 synthetic actions, 64², plain background, L1 to the true
    frames): it beats the still reference on whole-body moves (jump 4.5 vs 10.5, walk 8.7 vs
    12.6, bow, shrug, nod) and loses on large arm moves (arms_up 11.3 vs 6.6, turn): one global
    smooth map folds the torso and face when a limb swings across them."""
    image = square(check_reference(reference), size)
    ref = np.asarray(reference_keypoints, dtype=np.float32)
    if ref.shape != (K.NUM_KEYPOINTS, 4):
        raise InvalidInput(f"reference_keypoints must be ({K.NUM_KEYPOINTS}, 4), got "
                           f"{ref.shape}")
    target = K.validate(target_keypoints)
    out = np.repeat(image[None], len(target), axis=0)
    ref_pts = ref[WARP_POINTS]
    for t, frame_kps in enumerate(target[:, WARP_POINTS]):
        use = (ref_pts[:, K.CONF] > WARP_CONFIDENCE) & (frame_kps[:, K.CONF] > WARP_CONFIDENCE)
        if use.sum() >= MIN_WARP_POINTS:
            out[t] = _warp_frame(image, ref_pts[use, :2].astype(np.float64),
                                 frame_kps[use, :2].astype(np.float64), smoothing)
    return out
