"""MotionDiT's condition encoders: what turns each condition into tokens the DiT attends to
or adds to its video tokens (models/dit.py wires them together).

    PoseEncoder       body or hand pose maps -> one embedding per video token
    CameraEncoder     per-frame pan and zoom -> one embedding per token frame
    FaceEncoder       expression codes -> face tokens per pixel frame
    FaceAdapter       per-frame cross-attention of the video tokens to those face tokens
    IdentityEncoder   dlib embedding + reference appearance + pooled subject library
                      -> identity tokens (AppearanceEncoder, LibraryPool)
    IntensityEncoder  motion intensity -> one token beside the action phrase's
    GuidanceEncoder   a distilled student's guidance scales -> added to the timestep's

Pixel-frame conditions meet latent frames through `causal_groups`. The first section holds
the small layers these encoders share with the DiT's blocks. Encoders built on `MLP`
subclass it so that their weights keep the names `linear_1` / `linear_2`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.conditions import FACE_CODE_DIM, FACE_POINTS, IDENTITY_DIM
from models.errors import InvalidInput

if TYPE_CHECKING:
    from models.conditions import Conditions
    from models.dit import DiTConfig


# --------------------------------------------------------------------------- shared layers

def sinusoidal(x: Tensor, dim: int) -> Tensor:
    """(B,) -> (B, dim) [cos, sin] features (diffusers `Timesteps(flip_sin_to_cos=True)`)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device) / half)
    args = x.float()[:, None] * freqs
    return F.pad(torch.cat([args.cos(), args.sin()], -1), (0, dim % 2))


def attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """Multi-head attention on (B, N, D) projections; mask (B, 1, 1|N, M) bool, True = keep."""
    q, k, v = (a.unflatten(-1, (heads, -1)).transpose(1, 2) for a in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)


def key_mask(mask: Tensor | None) -> Tensor | None:
    """(B, M) keep-mask -> SDPA mask, or None when nothing is masked (fast path)."""
    return None if mask is None or bool(mask.all()) else mask[:, None, None, :]


class MLP(nn.Module):
    """linear_1 -> act -> linear_2 (diffusers' TimestepEmbedding / PixArt text projection)."""

    def __init__(self, d_in: int, hidden: int, d_out: int, act: str = "silu"):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, hidden)
        self.act = nn.SiLU() if act == "silu" else nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(hidden, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


# --------------------------------------------------------------------------- pixel -> latent frames

def causal_groups(x: Tensor, dim: int, temporal_factor: int, latent_frames: int) -> Tensor:
    """Pixel frames -> frames grouped per latent frame, as a causal video VAE groups them:
    frame 0 alone, then `temporal_factor` at a time. The first frame is repeated
    temporal_factor - 1 times in front, so axis `dim` becomes temporal_factor * latent_frames
    (split it with `unflatten`)."""
    frames = x.shape[dim]
    if frames != 1 + temporal_factor * (latent_frames - 1):
        raise InvalidInput(f"{frames} pixel frames do not make {latent_frames} latent frames "
                           f"(need 1 + {temporal_factor} x (latent frames - 1))")
    first = x.narrow(dim, 0, 1)
    return torch.cat([first.expand_as(x.narrow(dim, 0, temporal_factor - 1)), x], dim) \
        if temporal_factor > 1 else x


def _widths(base: int, stages: int, cap: int) -> list[int]:
    """Conv widths that double per downsampling stage, up to `cap`."""
    return [min(base * 2 ** i, cap) for i in range(stages)]


# --------------------------------------------------------------------------- body and hands

class PoseEncoder(nn.Module):
    """Pose maps (B, 3, T, H, W) in [0, 1] -> (B, N, dim) one embedding per video token: a 3D
    conv stack with stride 2 per stage down to the latent token grid, zero-initialised output
    (Wan-Animate adds it to the patch tokens)."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.temporal_factor = c.temporal_factor
        pt, ph, _ = c.patch_size
        down_t = int(math.log2(c.temporal_factor * pt))
        down_s = int(math.log2(c.spatial_factor * ph))
        layers, c_in = [], 3
        for i, width in enumerate(_widths(c.pose_width, max(down_t, down_s, 1), c.dim)):
            stride = (2 if i < down_t else 1, 2 if i < down_s else 1, 2 if i < down_s else 1)
            layers += [nn.Conv3d(c_in, width, 3, stride=stride, padding=1), nn.SiLU()]
            c_in = width
        self.net = nn.Sequential(*layers)
        self.proj = nn.Conv3d(c_in, c.dim, 1)

    def forward(self, maps: Tensor, latent_frames: int) -> Tensor:
        maps = causal_groups(maps, 2, self.temporal_factor, latent_frames)
        return self.proj(self.net(maps * 2 - 1)).flatten(2).transpose(1, 2)


class CameraEncoder(MLP):
    """Camera (B, T, 3) pan x, pan y, zoom per pixel frame -> (B, token frames, dim): the
    (pan, log zoom) of the pixel frames a token frame covers, through an MLP."""

    def __init__(self, c: DiTConfig):
        super().__init__(3 * c.temporal_factor * c.patch_size[0], c.dim, c.dim)
        self.temporal_factor, self.frames_per_token = c.temporal_factor, c.patch_size[0]

    def forward(self, camera: Tensor, token_frames: int) -> Tensor:
        log_zoom = camera[..., 2].clamp_min(1e-3).log()
        cam = torch.stack([camera[..., 0], camera[..., 1], log_zoom], -1)
        cam = causal_groups(cam, 1, self.temporal_factor, token_frames * self.frames_per_token)
        return super().forward(cam.unflatten(1, (token_frames, -1)).flatten(2))


# --------------------------------------------------------------------------- face

class FaceEncoder(nn.Module):
    """Expression codes (B, T, 68, 3) -> (B, T, face_tokens, dim) per pixel frame."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.n = c.face_tokens
        self.mlp = MLP(FACE_POINTS * FACE_CODE_DIM, c.dim, c.face_tokens * c.dim)

    def forward(self, codes: Tensor) -> Tensor:
        return self.mlp(codes.flatten(2)).unflatten(-1, (self.n, -1))


class FaceAdapter(nn.Module):
    """Per-frame cross-attention of a latent frame's tokens to the face tokens of the pixel
    frames it covers; zero-initialised output."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.heads = c.heads
        self.norm_x = nn.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.norm_face = nn.LayerNorm(c.dim, eps=c.eps)
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(c.dim, c.dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.RMSNorm(c.dim, eps=c.eps), nn.RMSNorm(c.dim, eps=c.eps)

    def forward(self, seq: Tensor, n_video: int, face: Tensor) -> Tensor:
        """seq (B, N, D) whose first n_video tokens are the video's, face (B, F, M, D) tokens
        of each token frame -> seq, the video tokens of each frame updated from its face
        tokens (the reference tokens after them pass unchanged)."""
        b, frames = face.shape[:2]
        video = seq[:, :n_video]
        x = video.unflatten(1, (frames, -1)).flatten(0, 1)  # (B F, S, D): a frame per row
        face = self.norm_face(face.flatten(0, 1))
        q = self.norm_q(self.to_q(self.norm_x(x)))
        out = self.to_out(attend(q, self.norm_k(self.to_k(face)), self.to_v(face), self.heads))
        return torch.cat([video + out.reshape(b, n_video, -1), seq[:, n_video:]], 1)


# --------------------------------------------------------------------------- identity

class AppearanceEncoder(nn.Module):
    """Images (N, 3, H, W) in [-1, 1] -> (N, grid², dim) appearance tokens."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        layers, c_in = [], 3
        for width in _widths(c.appearance_width, int(math.log2(c.spatial_factor)) + 1, c.dim):
            layers += [nn.Conv2d(c_in, width, 3, stride=2, padding=1), nn.SiLU()]
            c_in = width
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(c.appearance_grid))
        self.proj = nn.Linear(c_in, c.dim)
        self.norm = nn.LayerNorm(c.dim, eps=c.eps)

    def forward(self, images: Tensor) -> Tensor:
        return self.norm(self.proj(self.net(images).flatten(2).transpose(1, 2)))


class LibraryPool(nn.Module):
    """Masked attention pooling of any number K >= 0 of subject-library images' appearance
    tokens into `library_tokens` learned queries. A learned empty slot is always attendable,
    so K = 0 (or all masked) gives a learned "no library" result instead of NaN."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.heads = c.heads
        self.queries = nn.Parameter(torch.randn(c.library_tokens, c.dim) * 0.02)
        self.empty = nn.Parameter(torch.randn(1, c.dim) * 0.02)
        self.to_k, self.to_v = nn.Linear(c.dim, c.dim), nn.Linear(c.dim, c.dim)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """tokens (B, K, G, D), mask (B, K) -> (B, library_tokens, D)."""
        b, k, g, d = tokens.shape
        keys = torch.cat([self.empty.expand(b, 1, d), tokens.reshape(b, k * g, d)], 1)
        keep = torch.cat([mask.new_ones(b, 1), mask.repeat_interleave(g, 1)], 1)
        return attend(self.queries.expand(b, -1, -1), self.to_k(keys), self.to_v(keys),
                      self.heads, key_mask(keep))


class IdentityEncoder(nn.Module):
    """Identity tokens [dlib (identity_tokens), reference appearance (grid²), subject library
    (library_tokens)] for the decoupled cross-attention."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.n_id = c.identity_tokens
        n = c.identity_tokens + c.appearance_grid ** 2 + c.library_tokens
        self.face_id = MLP(IDENTITY_DIM, c.dim, c.identity_tokens * c.dim)
        self.appearance = AppearanceEncoder(c)
        self.library = LibraryPool(c)
        self.null_face_id = nn.Parameter(torch.randn(c.identity_tokens, c.dim) * 0.02)
        self.null = nn.Parameter(torch.randn(n, c.dim) * 0.02)  # reference dropped

    def forward(self, cond: Conditions, drop: Tensor) -> Tensor:
        b = cond.identity_embedding.shape[0]
        face = self.face_id(cond.identity_embedding).unflatten(-1, (self.n_id, -1))
        face = torch.where(cond.identity_valid.bool()[:, None, None], face, self.null_face_id)
        k = cond.subject_library.shape[1]
        images = torch.cat([cond.reference_pixels[:, None], cond.subject_library], 1)
        look = self.appearance(images.flatten(0, 1)).unflatten(0, (b, k + 1))
        library = self.library(look[:, 1:], cond.subject_mask)
        tokens = torch.cat([face, look[:, 0], library], 1)
        return torch.where(drop[:, None, None], self.null, tokens)


# --------------------------------------------------------------------------- motion, guidance

class IntensityEncoder(MLP):
    """Motion intensity (B,) (mean foreground optical flow, ~0.002-0.02) -> (B, dim)."""

    def __init__(self, c: DiTConfig):
        super().__init__(c.freq_dim, c.dim, c.dim)
        self.freq_dim, self.scale = c.freq_dim, c.intensity_scale

    def forward(self, intensity: Tensor) -> Tensor:
        features = sinusoidal(intensity * self.scale, self.freq_dim)
        return super().forward(features.type_as(intensity))


class GuidanceEncoder(MLP):
    """A distilled student's guidance scales (B, 2) (text, reference) -> (B, dim), added to
    the timestep embedding so that one evaluation gives the teacher's guided velocity."""

    def __init__(self, c: DiTConfig):
        super().__init__(2 * c.freq_dim, c.dim, c.dim)
        self.freq_dim, self.default = c.freq_dim, c.default_guidance

    def forward(self, scales: Tensor | None, batch: int) -> Tensor:
        """scales None: the config's default_guidance for every sample."""
        if scales is None:
            scales = torch.tensor(self.default, device=self.linear_1.weight.device)
            scales = scales.expand(batch, 2)
        # scales ~1-5 -> the timestep's sinusoid range (time_scale maps [0, 1] to [0, 1000])
        features = sinusoidal(scales.flatten() * 100.0, self.freq_dim).view(batch, -1)
        return super().forward(features.to(self.linear_1.weight.dtype))
