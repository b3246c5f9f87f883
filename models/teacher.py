"""The training objectives of the teacher's stages, as plain functions of tensors.

Stage 0 trains the video VAE (L1 reconstruction + KL). Stages 1-3 train the DiT with flow
matching on VAE latents, weighted by motion (MotionCharacter's region-aware loss), plus an
ID-consistency term on decoded frames every few steps. The training loop (flows/train_worker)
only calls these.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.conditions import Conditions, build_conditions, drop_masks
from models.losses import (
    flow_matching_loss,
    id_consistency_loss,
    predicted_x0,
    region_weights,
    sample_timesteps,
)


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
    """uint8 frames resized to size² (for the optical-flow weights)."""
    return to_uint8(to_pixels(frames, size))


def vae_loss(vae, batch: dict, size: int, kl_weight: float) -> dict[str, Tensor]:
    x = to_pixels(batch["frames"], size)
    recon, posterior = vae(x)
    return vae.loss(x, recon, posterior, kl_weight)


class TeacherObjective:
    """Flow matching + region weighting + ID consistency for one DiT stage."""

    def __init__(self, vae: nn.Module, text, size: int, *, region_alpha: float = 1.0,
                 id_weight: float = 0.05, timestep_shift: float = 1.0):
        self.vae, self.text, self.size = vae.eval().requires_grad_(False), text, size
        self.region_alpha, self.id_weight, self.shift = region_alpha, id_weight, timestep_shift
        self._id_encoder: nn.Module | None = None

    def prepare(self, batch: dict, device) -> tuple[Tensor, Conditions, dict | None]:
        """Clean latents, conditions and dropout masks of a dataset batch."""
        with torch.no_grad():
            x0 = self.vae.encode_latents(to_pixels(batch["frames"], self.size).to(device))
        cond = build_conditions(batch, encode_latents=self.vae.encode_latents, text=self.text,
                                size=self.size, device=device)
        return x0, cond, drop_masks(batch, device)

    def __call__(self, model: nn.Module, batch: dict, *, device, generator=None,
                 with_id: bool = False, fixed_t: Tensor | None = None,
                 noise: Tensor | None = None) -> dict[str, Tensor]:
        x0, cond, drop = self.prepare(batch, device)
        b = x0.shape[0]
        t = fixed_t if fixed_t is not None else sample_timesteps(b, generator, self.shift)
        t = t.to(device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(device)
        x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
        v = model(x_t, t, cond, drop)
        weights = None
        if self.region_alpha > 0:
            weights = region_weights(resize_frames(batch["frames"], self.size), x0.shape,
                                     alpha=self.region_alpha).to(device)
        out = {"flow_matching": flow_matching_loss(v, x0, noise, weights)}
        if with_id and self.id_weight > 0:
            frames = self.vae.decode_latents(predicted_x0(x_t, t, v))
            out["id_consistency"] = id_consistency_loss(
                frames, cond.reference_pixels, self.id_encoder(model), num_frames=2)
        out["total"] = out["flow_matching"] + self.id_weight * out.get(
            "id_consistency", torch.zeros((), device=device))
        return out

    def id_encoder(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """A frozen copy of the model's learned appearance encoder (dlib is not
        differentiable); refreshed from the model's current weights each call."""
        source = _unwrap(model).identity.appearance
        if self._id_encoder is None:
            self._id_encoder = copy.deepcopy(source).requires_grad_(False)
        self._id_encoder.load_state_dict(source.state_dict())

        def embed(images: Tensor) -> Tensor:
            return self._id_encoder(images).flatten(1)

        return embed


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
