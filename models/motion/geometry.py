"""Small geometry shared by the motion modules.

The contract stores x as a fraction of the frame width, y as a fraction of the height and z in
x's units. Angles and lengths only mean something in isotropic units, so the modules convert
to "metric" coordinates (x, y / aspect, z), aspect = width / height, and back.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def to_metric(xyz: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """(..., 3) contract x, y, z -> isotropic coordinates in frame-width units (float64)."""
    out = np.array(xyz[..., :3], dtype=np.float64)
    out[..., 1] /= aspect
    return out


def from_metric(xyz: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """Inverse of `to_metric`."""
    out = np.array(xyz, dtype=np.float64)
    out[..., 1] *= aspect
    return out


def unit(v: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors along the last axis; near-zero vectors become `fallback` (or zero), so
    degenerate bones never turn into NaN."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    out = np.divide(v, norm, out=np.zeros_like(v, dtype=np.float64), where=norm > EPS)
    if fallback is not None:
        out = np.where(norm > EPS, out, np.broadcast_to(fallback, out.shape))
    return out


def similarity_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares similarity (Umeyama) taking `src` (N, D) onto `dst` (N, D).

    Returns (scale, rotation (D, D), translation (D,)) with dst ≈ scale * src @ R.T + t, R a
    proper rotation. Points with zero weight are ignored.
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / max(w.sum(), EPS)
    mu_s, mu_d = w @ src, w @ dst
    s_c, d_c = src - mu_s, dst - mu_d
    cov = (d_c * w[:, None]).T @ s_c
    u, sig, vt = np.linalg.svd(cov)
    fix = np.ones(len(sig))
    fix[-1] = np.sign(np.linalg.det(u @ vt)) or 1.0  # no reflections
    rot = (u * fix) @ vt
    var_s = w @ (s_c**2).sum(axis=1)
    scale = float((sig * fix).sum() / max(var_s, EPS))
    return scale, rot, mu_d - scale * mu_s @ rot.T
