"""Video frames between their two forms: uint8 (T, H, W, 3) as stored and shown, and float
(3, T, H, W) in [-1, 1] as the VAE takes them. Training, inference and metrics all convert
through these, so every resize is the same `area` filter."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def to_pixels(frames, size: int) -> Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, size, size) float in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames)).float().div(127.5).sub(1.0)
    b, t, h, w, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w)
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()


def to_uint8(video: Tensor) -> np.ndarray:
    """The inverse of to_pixels: (B, 3, T, H, W) in [-1, 1] -> (B, T, H, W, 3) uint8."""
    return ((video.permute(0, 2, 3, 4, 1) + 1) * 127.5).round().clamp(0, 255).byte() \
        .cpu().numpy()


def resize_frames(frames, size: int) -> np.ndarray:
    """(B, T, H, W, 3) uint8 frames resized to size² (area filter), still uint8."""
    return to_uint8(to_pixels(frames, size))
