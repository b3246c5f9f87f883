"""MotionDiT: the holistic character-animation video diffusion transformer.

A Wan2.x-style DiT over VAE latents (3D patches, 3D RoPE self-attention, text cross-attention,
shared timestep modulation with per-block tables: adaLN-Zero) carrying the Kling-MotionControl
conditions, each with its own encoder, its own null embedding for classifier-free guidance and
a stage switch:

    body / hands   pose maps -> 3D conv stack on the latent token grid, added to the video tokens
    face           expression codes -> per-frame tokens, adapter cross-attention every k blocks
    reference      reference (+ subject library) latent frames appended to the self-attention
                   sequence at negative temporal positions, with a learned type embedding
    identity       dlib embedding (MLP) + appearance encoder of the reference pixels + pooled
                   subject library -> tokens, decoupled cross-attention with weight ip_scale
                   (MotionCharacter Eq. 3)
    action, intensity  [action phrase token, intensity token], a parallel cross-attention added
                   to the text attention (MotionCharacter Eq. 8)
    camera         per-frame (pan, tilt, log zoom) -> MLP, added to the tokens of each frame
    anchors        given first/last latent frames added to their frames' tokens with a mask
                   embedding (Kling-Avatar sub-clips of long videos)

Stage 1 uses the body, stage 2 adds the face, stage 3 the hands; every new output projection
starts at zero, so a later stage loaded from the previous one changes nothing at step 0.
Module names follow diffusers' `WanTransformer3DModel` (see models/convert_wan.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from models.errors import InvalidInput

if TYPE_CHECKING:
    from models.conditions import Conditions

DROP_KEYS = ("text", "reference", "body", "face", "hands", "camera", "intensity")
STAGES = (1, 2, 3)
FACE_POINTS, FACE_CODE_DIM = 68, 3
IDENTITY_DIM = 128  # dlib face embedding


@dataclass(frozen=True)
class DiTConfig:
    preset: str
    latent_channels: int
    patch_size: tuple[int, int, int]
    dim: int
    depth: int
    heads: int
    ffn_dim: int
    text_dim: int = 384  # MiniLM-L6
    face_every: int = 2  # a face adapter after every k-th block
    freq_dim: int = 256  # sinusoidal features of the timestep (and of the motion intensity)
    temporal_factor: int = 4  # the VAE's: latent frames = 1 + (frames - 1) / temporal_factor
    spatial_factor: int = 8  # the VAE's: latent side = pixel side / spatial_factor
    pose_width: int = 16  # first conv width of the body/hand encoders (doubles per stage)
    appearance_width: int = 16  # same for the reference appearance encoder
    appearance_grid: int = 2  # appearance tokens per image = grid²
    identity_tokens: int = 2  # tokens from the dlib embedding
    library_tokens: int = 2  # tokens pooled from the subject library
    face_tokens: int = 2  # tokens per pixel frame of expression codes
    ip_scale: float = 1.0  # λ of the decoupled identity cross-attention
    motion_scale: float = 1.0  # weight of the action/intensity parallel cross-attention
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_theta: float = 10000.0
    time_scale: float = 1000.0  # t in [0, 1] -> Wan's timestep in [0, 1000]
    intensity_scale: float = 100.0  # motion intensity (~0.002-0.02) -> sinusoid argument
    reference_time: float = -1.0  # RoPE time of the reference frame; library frames go on down
    # A distilled student takes its guidance scales (text, reference) as an input embedding
    # added to the timestep's, so one evaluation gives the teacher's guided velocity.
    guidance_embed: bool = False
    default_guidance: tuple[float, float] = (3.0, 1.5)  # used when cond.guidance is None

    def __post_init__(self):
        if self.dim % self.heads or (self.dim // self.heads) % 2 or self.dim // self.heads < 6:
            raise InvalidInput(f"dim {self.dim} must split into {self.heads} even heads of "
                               "at least 6 channels (3D RoPE)")
        for name in ("latent_channels", "dim", "depth", "heads", "ffn_dim", "text_dim",
                     "face_every", "freq_dim", "pose_width", "appearance_width",
                     "appearance_grid", "identity_tokens", "library_tokens", "face_tokens"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise InvalidInput(f"patch_size must be 3 positive ints, got {self.patch_size}")
        for name, value in (("temporal_factor", self.temporal_factor),
                            ("spatial_factor", self.spatial_factor),
                            *zip(("patch t", "patch h", "patch w"), self.patch_size,
                                 strict=True)):
            if value < 1 or value & (value - 1):
                raise InvalidInput(f"{name} must be a power of 2, got {value}")
        if self.face_every > self.depth:
            raise InvalidInput(f"face_every {self.face_every} > depth {self.depth}: no block "
                               "would get a face adapter")
        if self.patch_size[1] != self.patch_size[2]:
            raise InvalidInput(f"patch_size must be square in space, got {self.patch_size}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> DiTConfig:
        if name not in DIT_PRESETS:
            raise InvalidInput(f"unknown DiT preset {name!r}; choose from {sorted(DIT_PRESETS)}")
        return dataclasses.replace(DIT_PRESETS[name], **overrides)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


DIT_PRESETS: dict[str, DiTConfig] = {
    # CPU: 64² px x 17 frames -> latents 5x8x8 (spatial_factor=4: 5x16x16).
    "tiny": DiTConfig("tiny", latent_channels=16, patch_size=(1, 2, 2), dim=128, depth=4,
                      heads=4, ffn_dim=512, face_every=2),
    # One GPU.
    "small": DiTConfig("small", latent_channels=16, patch_size=(1, 2, 2), dim=512, depth=12,
                       heads=8, ffn_dim=2048, face_every=3, pose_width=32,
                       appearance_width=32, appearance_grid=3, identity_tokens=4,
                       library_tokens=4, face_tokens=4),
    # Wan2.1-T2V-1.3B dimensions (its blocks, patch and time embeddings load via convert_wan).
    "base": DiTConfig("base", latent_channels=16, patch_size=(1, 2, 2), dim=1536, depth=30,
                      heads=12, ffn_dim=8960, face_every=5, pose_width=64,
                      appearance_width=64, appearance_grid=4, identity_tokens=4,
                      library_tokens=8, face_tokens=8),
}


# --------------------------------------------------------------------------- building blocks

def sinusoidal(x: Tensor, dim: int) -> Tensor:
    """(B,) -> (B, dim) [cos, sin] features (diffusers `Timesteps(flip_sin_to_cos=True)`)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device) / half)
    args = x.float()[:, None] * freqs
    return F.pad(torch.cat([args.cos(), args.sin()], -1), (0, dim % 2))


def rope_angles(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin (N, head_dim / 2) of 3D RoPE at (N, 3) float (t, y, x) positions; channels
    split as Wan's: y and x get 2 * (head_dim // 6) each, time the rest."""
    side = 2 * (head_dim // 6)
    angles = []
    for axis, d in enumerate((head_dim - 2 * side, side, side)):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64,
                                             device=positions.device) / d)
        angles.append(positions[:, axis, None].double() * freqs)
    angles = torch.cat(angles, -1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of x (B, H, N, d)."""
    cos, sin = rope
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2).type_as(x)


def attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None,
           rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Multi-head attention on (B, N, D) projections; mask (B, 1, 1|N, M) bool, True = keep."""
    q, k, v = (a.unflatten(-1, (heads, -1)).transpose(1, 2) for a in (q, k, v))
    if rope is not None:
        q, k = apply_rope(q, rope), apply_rope(k, rope)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)


def key_mask(mask: Tensor | None) -> Tensor | None:
    """(B, M) keep-mask -> SDPA mask, or None when nothing is masked (fast path)."""
    return None if mask is None or bool(mask.all()) else mask[:, None, None, :]


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class MLP(nn.Module):
    """linear_1 -> act -> linear_2 (diffusers' TimestepEmbedding / PixArt text projection)."""

    def __init__(self, d_in: int, hidden: int, d_out: int, act: str = "silu"):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, hidden)
        self.act = nn.SiLU() if act == "silu" else nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(hidden, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class SelfAttention(nn.Module):
    def __init__(self, c: DiTConfig):
        super().__init__()
        self.heads = c.heads
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(c.dim, c.dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.RMSNorm(c.dim, eps=c.eps), nn.RMSNorm(c.dim, eps=c.eps)

    def forward(self, x: Tensor, rope, mask: Tensor | None) -> Tensor:
        q, k = self.norm_q(self.to_q(x)), self.norm_k(self.to_k(x))
        return self.to_out(attend(q, k, self.to_v(x), self.heads, mask, rope))


class CrossContext(NamedTuple):
    text: Tensor  # (B, L, D)
    text_mask: Tensor | None  # (B, 1, 1, L) or None
    identity: Tensor  # (B, I, D)
    motion: Tensor  # (B, 2, D): action phrase, intensity


class CrossAttention(nn.Module):
    """Text cross-attention plus two parallel attentions sharing its query, summed before the
    output projection: identity (decoupled K/V, weight ip_scale; Wan's `add_k_proj` image
    branch) and [action, intensity] (MotionCharacter Eq. 8). Both value projections start at
    zero."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.heads, self.ip_scale, self.motion_scale = c.heads, c.ip_scale, c.motion_scale
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(c.dim, c.dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.RMSNorm(c.dim, eps=c.eps), nn.RMSNorm(c.dim, eps=c.eps)
        self.add_k_proj, self.add_v_proj = nn.Linear(c.dim, c.dim), nn.Linear(c.dim, c.dim)
        self.norm_added_k = nn.RMSNorm(c.dim, eps=c.eps)
        self.motion_k_proj, self.motion_v_proj = nn.Linear(c.dim, c.dim), nn.Linear(c.dim, c.dim)
        self.norm_motion_k = nn.RMSNorm(c.dim, eps=c.eps)

    def forward(self, x: Tensor, ctx: CrossContext) -> Tensor:
        q = self.norm_q(self.to_q(x))
        out = attend(q, self.norm_k(self.to_k(ctx.text)), self.to_v(ctx.text), self.heads,
                     ctx.text_mask)
        ident = attend(q, self.norm_added_k(self.add_k_proj(ctx.identity)),
                       self.add_v_proj(ctx.identity), self.heads)
        motion = attend(q, self.norm_motion_k(self.motion_k_proj(ctx.motion)),
                        self.motion_v_proj(ctx.motion), self.heads)
        return self.to_out(out + self.ip_scale * ident + self.motion_scale * motion)


class DiTBlock(nn.Module):
    """Wan block: modulated self-attention, cross-attention, modulated FFN (adaLN-Zero gates
    from the shared timestep projection plus this block's table)."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.attn1 = SelfAttention(c)
        self.norm2 = nn.LayerNorm(c.dim, eps=c.eps) if c.cross_attn_norm else nn.Identity()
        self.attn2 = CrossAttention(c)
        self.norm3 = nn.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.ffn = MLP(c.dim, c.ffn_dim, c.dim, act="gelu")
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 6, c.dim))

    def forward(self, x: Tensor, mod: Tensor, rope, mask: Tensor | None,
                ctx: CrossContext) -> Tensor:
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + mod).chunk(6, 1)
        x = x + self.attn1(self.norm1(x) * (1 + scale) + shift, rope, mask) * gate
        x = x + self.attn2(self.norm2(x), ctx)
        return x + self.ffn(self.norm3(x) * (1 + c_scale) + c_shift) * c_gate


# --------------------------------------------------------------------------- condition encoders

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
    return [min(base * 2 ** i, cap) for i in range(stages)]


class PoseEncoder(nn.Module):
    """Pose maps (B, 3, T, H, W) in [0, 1] -> (B, N, dim) one embedding per video token: a 3D
    conv stack with stride 2 per stage down to the latent token grid, zero-initialised output
    (Wan-Animate adds it to the patch tokens)."""

    def __init__(self, c: DiTConfig):
        super().__init__()
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

    def forward(self, maps: Tensor) -> Tensor:
        return self.proj(self.net(maps * 2 - 1)).flatten(2).transpose(1, 2)


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

    def forward(self, x: Tensor, face: Tensor) -> Tensor:
        """x (B, F, S, D) tokens per frame, face (B, F, M, D) -> (B, F, S, D)."""
        b = x.shape[0]
        x, face = x.flatten(0, 1), self.norm_face(face.flatten(0, 1))
        q = self.norm_q(self.to_q(self.norm_x(x)))
        out = attend(q, self.norm_k(self.to_k(face)), self.to_v(face), self.heads)
        return self.to_out(out).unflatten(0, (b, -1))


# --------------------------------------------------------------------------- the model

class MotionDiT(nn.Module):
    """Velocity model v(x_t, t, conditions) for flow matching on video latents.

    Token sequence: the video's 3D patches (+ body, hands, camera, anchors) followed by the
    reference frames' patches; only the video tokens are decoded."""

    def __init__(self, config: DiTConfig, stage: int = 3):
        super().__init__()
        c = self.config = config
        d = c.dim
        self.patch_embedding = nn.Conv3d(c.latent_channels, d, c.patch_size, stride=c.patch_size)
        self.time_embedder = MLP(c.freq_dim, d, d)
        self.time_proj = nn.Linear(d, 6 * d)  # after SiLU: the shared adaLN modulation
        self.text_embedder = MLP(c.text_dim, d, d, act="gelu")
        self.blocks = nn.ModuleList(DiTBlock(c) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(d, eps=c.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(d, c.latent_channels * math.prod(c.patch_size))
        self.scale_shift_table = nn.Parameter(torch.zeros(1, 2, d))

        # Conditions. Nulls stand in for a dropped condition (classifier-free guidance).
        self.null_text = nn.Parameter(torch.zeros(c.text_dim))
        self.reference_embedding = nn.Parameter(torch.randn(d) * 0.02)  # token type
        self.identity = IdentityEncoder(c)
        self.action_embedder = MLP(c.text_dim, d, d)
        self.null_action = nn.Parameter(torch.zeros(c.text_dim))
        self.intensity_embedder = MLP(c.freq_dim, d, d)
        self.null_intensity = nn.Parameter(torch.randn(d) * 0.02)
        self.camera_embedder = MLP(3 * c.temporal_factor * c.patch_size[0], d, d)
        self.null_camera = nn.Parameter(torch.zeros(d))
        self.anchor_embedding = nn.Conv3d(c.latent_channels, d, c.patch_size, stride=c.patch_size)
        self.anchor_mask_embedding = nn.Parameter(torch.zeros(d))
        self.body_encoder = PoseEncoder(c)
        self.null_body = nn.Parameter(torch.zeros(d))
        self.face_encoder = FaceEncoder(c)
        self.null_face = nn.Parameter(torch.randn(c.face_tokens, d) * 0.02)
        self.face_adapters = nn.ModuleList(FaceAdapter(c) for _ in range(c.depth // c.face_every))
        self.hands_encoder = PoseEncoder(c)
        self.null_hands = nn.Parameter(torch.zeros(d))
        self.guidance_embedder = MLP(2 * c.freq_dim, d, d) if c.guidance_embed else None

        self.gradient_checkpointing = False
        self._init_weights()
        self.stage = 0
        self.set_stage(stage)

    def _init_weights(self) -> None:
        for m in self.modules():  # DiT: xavier linears (convs keep PyTorch's default)
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embedding.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embedding.bias)
        for m in (self.time_embedder, self.action_embedder, self.intensity_embedder):
            nn.init.normal_(m.linear_1.weight, std=0.02)
            nn.init.normal_(m.linear_2.weight, std=0.02)
        # adaLN-Zero and zero-initialised condition outputs: at init every block is the
        # identity, the output is zero, and no condition path changes anything.
        zero_outputs = [self.time_proj, self.proj_out, self.camera_embedder.linear_2,
                        self.anchor_embedding, self.body_encoder.proj, self.hands_encoder.proj]
        for block in self.blocks:
            zero_outputs += [block.attn2.to_out, block.attn2.add_v_proj, block.attn2.motion_v_proj]
        zero_outputs += [adapter.to_out for adapter in self.face_adapters]
        if self.guidance_embedder is not None:  # a student starts as its teacher
            zero_outputs.append(self.guidance_embedder.linear_2)
        for m in zero_outputs:
            zero_(m)

    # ------------------------------------------------------------------ stages

    def _path_modules(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        return {"body": [self.body_encoder, self.null_body],
                "face": [self.face_encoder, self.face_adapters, self.null_face],
                "hands": [self.hands_encoder, self.null_hands]}

    def enabled(self, path: str) -> bool:
        return self.stage >= {"body": 1, "face": 2, "hands": 3}[path]

    def set_stage(self, stage: int) -> None:
        """Stage 1: body; 2: + face; 3: + hands (identity, text, camera, intensity, reference
        and anchors always). Disabled paths are frozen (requires_grad False) so optimizers
        and DDP skip them; call this before freezing the whole model."""
        if stage not in STAGES:
            raise InvalidInput(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        for path, parts in self._path_modules().items():
            for part in parts:
                part.requires_grad_(self.enabled(path))

    # ------------------------------------------------------------------ forward

    def _drop(self, drop: dict[str, Tensor] | None, b: int, device) -> dict[str, Tensor]:
        drop = dict(drop or {})
        unknown = set(drop) - set(DROP_KEYS)
        if unknown:
            raise InvalidInput(f"unknown drop keys {sorted(unknown)}; use {DROP_KEYS}")
        out = {}
        for key in DROP_KEYS:
            mask = torch.as_tensor(drop.get(key, False), dtype=torch.bool, device=device)
            if mask.ndim > 1 or (mask.ndim == 1 and mask.shape[0] != b):
                raise InvalidInput(f"drop[{key!r}] must be a bool or a ({b},) mask, "
                                   f"got shape {tuple(mask.shape)}")
            out[key] = mask.expand(b)
        return out

    def _check(self, x: Tensor, t: Tensor, cond: Conditions) -> None:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.latent_channels:
            raise InvalidInput(f"x must be (B, {c.latent_channels}, T, H, W) latents, "
                               f"got {tuple(x.shape)}")
        b, _, frames, h, w = x.shape
        if any(n % p for n, p in zip((frames, h, w), c.patch_size, strict=True)):
            raise InvalidInput(f"latent (T, H, W) = {(frames, h, w)} must be divisible by "
                               f"patch_size {c.patch_size}")
        if t.shape != (b,):
            raise InvalidInput(f"t must be ({b},) times in [0, 1], got {tuple(t.shape)}")
        pixels = (1 + c.temporal_factor * (frames - 1), h * c.spatial_factor,
                  w * c.spatial_factor)
        k = cond.subject_library.shape[1] if cond.subject_library.ndim == 5 else -1
        expect = {
            "reference_latents": (b, c.latent_channels, None, h, w),
            "body_maps": (b, 3, *pixels), "hand_maps": (b, 3, *pixels),
            "face_codes": (b, pixels[0], FACE_POINTS, FACE_CODE_DIM),
            "identity_embedding": (b, IDENTITY_DIM), "identity_valid": (b,),
            "reference_pixels": (b, 3, *pixels[1:]),
            "subject_library": (b, None, 3, *pixels[1:]), "subject_mask": (b, k),
            "text_tokens": (b, None, c.text_dim), "action_embedding": (b, c.text_dim),
            "motion_intensity": (b,), "camera": (b, pixels[0], 3),
        }
        if cond.anchor_latents is not None:
            expect |= {"anchor_latents": tuple(x.shape), "anchor_mask": (b, frames)}
        for name, shape in expect.items():
            got = getattr(cond, name)
            if got is None or got.ndim != len(shape) or any(
                    s is not None and g != s for g, s in zip(got.shape, shape, strict=True)):
                raise InvalidInput(f"cond.{name} must have shape {shape} (None: any) for "
                                   f"latents {tuple(x.shape)}, got "
                                   f"{None if got is None else tuple(got.shape)}")
        if cond.text_mask.shape != cond.text_tokens.shape[:2]:
            raise InvalidInput("cond.text_mask must match text_tokens' (B, L)")
        if cond.reference_latents.shape[2] < 1:
            raise InvalidInput("cond.reference_latents needs the reference frame (R >= 1)")
        if not bool(cond.text_mask.bool().any(1).all()):
            raise InvalidInput("cond.text_mask must keep at least one token per sample")

    @staticmethod
    def _positions(h: int, w: int, t0: Tensor, device) -> Tensor:
        """(len(t0) * h * w, 3) (t, y, x) positions of token frames at times t0."""
        grid = torch.meshgrid(t0.to(device, torch.float64),
                              torch.arange(h, device=device, dtype=torch.float64),
                              torch.arange(w, device=device, dtype=torch.float64),
                              indexing="ij")
        return torch.stack(grid, -1).reshape(-1, 3)

    def _frame_conditions(self, cond: Conditions, drop: dict[str, Tensor],
                          grid: tuple[int, int, int]) -> Tensor:
        """What is added to the video tokens: body, hands, camera, anchors -> (B, N, D)."""
        c, (frames, h, w) = self.config, grid
        lat_frames = frames * c.patch_size[0]
        add = 0
        for path, encoder, maps, null in (
                ("body", self.body_encoder, cond.body_maps, self.null_body),
                ("hands", self.hands_encoder, cond.hand_maps, self.null_hands)):
            if self.enabled(path):
                enc = encoder(causal_groups(maps, 2, c.temporal_factor, lat_frames))
                add = add + torch.where(drop[path][:, None, None], null, enc)
        cam = cond.camera
        cam = torch.stack([cam[..., 0], cam[..., 1], cam[..., 2].clamp_min(1e-3).log()], -1)
        cam = causal_groups(cam, 1, c.temporal_factor, lat_frames).unflatten(1, (frames, -1))
        cam = self.camera_embedder(cam.flatten(2))  # (B, frames, D)
        cam = torch.where(drop["camera"][:, None, None], self.null_camera, cam)
        add = add + cam.repeat_interleave(h * w, 1)
        if cond.anchor_latents is not None:
            given = cond.anchor_mask.unflatten(1, (frames, -1)).any(-1)  # per token frame
            emb = self.anchor_embedding(cond.anchor_latents) + \
                self.anchor_mask_embedding[:, None, None, None]
            emb = emb * given[:, None, :, None, None]
            add = add + emb.flatten(2).transpose(1, 2)
        return add

    def _reference_tokens(self, cond: Conditions, drop: Tensor):
        """Reference (+ library) latent frames -> tokens (B, R*h*w, D), their keep-mask
        (B, R*h*w) and (R*h*w, 3) positions."""
        c, ref = self.config, cond.reference_latents
        b, r = ref.shape[0], ref.shape[2]
        # The last K reference frames are the subject library's when R >= 1 + K (absent
        # images masked out); a dropped reference is masked out of attention entirely.
        k = cond.subject_library.shape[1] if r >= 1 + cond.subject_library.shape[1] else 0
        if c.patch_size[0] > 1:  # one token frame per reference frame
            ref = ref.repeat_interleave(c.patch_size[0], 2)
        tokens = self.patch_embedding(ref)
        h, w = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2) + self.reference_embedding
        keep = torch.cat([cond.subject_mask.new_ones(b, r - k, dtype=torch.bool),
                          cond.subject_mask.bool()[:, cond.subject_mask.shape[1] - k:]], 1)
        keep = keep & ~drop[:, None]
        times = c.reference_time - torch.arange(r, dtype=torch.float64)
        return tokens, keep.repeat_interleave(h * w, 1), self._positions(h, w, times, ref.device)

    def _cross_context(self, cond: Conditions, drop: dict[str, Tensor]) -> CrossContext:
        c = self.config
        text, mask = cond.text_tokens, cond.text_mask.bool()
        dt = drop["text"]
        text = torch.where(dt[:, None, None], self.null_text, text)
        first = torch.zeros_like(mask)
        first[:, 0] = True
        mask = torch.where(dt[:, None], first, mask)
        action = torch.where(dt[:, None], self.null_action, cond.action_embedding)
        intensity = self.intensity_embedder(
            sinusoidal(cond.motion_intensity * c.intensity_scale, c.freq_dim).type_as(text))
        intensity = torch.where(drop["intensity"][:, None], self.null_intensity, intensity)
        motion = torch.stack([self.action_embedder(action), intensity], 1)
        return CrossContext(self.text_embedder(text), key_mask(mask),
                            self.identity(cond, drop["reference"]), motion)

    def _guidance_features(self, cond: Conditions, b: int, device) -> Tensor:
        c = self.config
        scales = cond.guidance if cond.guidance is not None else \
            torch.tensor(c.default_guidance, device=device).expand(b, 2)
        if scales.shape != (b, 2):
            raise InvalidInput(f"cond.guidance must be ({b}, 2) scales, got {tuple(scales.shape)}")
        # scales ~1-5 -> the timestep's sinusoid range (time_scale maps [0, 1] to [0, 1000])
        feats = sinusoidal(scales.flatten() * 100.0, c.freq_dim).view(b, -1)
        return feats.to(self.patch_embedding.weight.dtype)

    def forward(self, x: Tensor, t: Tensor, cond: Conditions,
                drop: dict[str, Tensor] | None = None) -> Tensor:
        """Predicted flow-matching velocity (B, C, T, H, W) for noisy latents x at times t
        (B,) in [0, 1] (1 = noise). drop: per-condition (B,) bool masks (DROP_KEYS); a dropped
        condition is replaced by its null embedding."""
        self._check(x, t, cond)
        c, dtype = self.config, self.patch_embedding.weight.dtype
        x, cond = x.to(dtype), cond.to(dtype=dtype)  # float conditions in the model's dtype
        b, _, lat_frames, lat_h, lat_w = x.shape
        pt, ph, pw = c.patch_size
        grid = (lat_frames // pt, lat_h // ph, lat_w // pw)
        drop = self._drop(drop, b, x.device)

        video = self.patch_embedding(x).flatten(2).transpose(1, 2)
        video = video + self._frame_conditions(cond, drop, grid)
        ref, ref_keep, ref_pos = self._reference_tokens(cond, drop["reference"])
        seq = torch.cat([video, ref], 1)
        n_video = video.shape[1]
        positions = torch.cat([self._positions(*grid[1:], torch.arange(grid[0]), x.device),
                               ref_pos], 0)
        rope = rope_angles(positions, c.head_dim, c.rope_theta)
        mask = key_mask(torch.cat([ref_keep.new_ones(b, n_video), ref_keep], 1))

        temb = self.time_embedder(sinusoidal(t * c.time_scale, c.freq_dim).to(dtype))
        if self.guidance_embedder is not None:
            temb = temb + self.guidance_embedder(self._guidance_features(cond, b, x.device))
        mod = self.time_proj(F.silu(temb)).unflatten(1, (6, -1))
        ctx = self._cross_context(cond, drop)
        face = None
        if self.enabled("face"):
            face = self.face_encoder(cond.face_codes)
            face = torch.where(drop["face"][:, None, None, None], self.null_face, face)
            face = causal_groups(face, 1, c.temporal_factor, lat_frames)
            face = face.unflatten(1, (grid[0], -1)).flatten(2, 3)  # (B, F, M, D)

        for i, block in enumerate(self.blocks):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                seq = checkpoint(block, seq, mod, rope, mask, ctx, use_reentrant=False)
            else:
                seq = block(seq, mod, rope, mask, ctx)
            if face is not None and (i + 1) % c.face_every == 0:
                adapter = self.face_adapters[(i + 1) // c.face_every - 1]
                frames = seq[:, :n_video].unflatten(1, (grid[0], -1))
                seq = torch.cat([seq[:, :n_video] + adapter(frames, face).flatten(1, 2),
                                 seq[:, n_video:]], 1)

        shift, scale = (self.scale_shift_table + temb[:, None]).chunk(2, 1)
        out = self.proj_out(self.norm_out(seq[:, :n_video]) * (1 + scale) + shift)
        out = out.view(b, *grid, pt, ph, pw, c.latent_channels)
        return out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape)


def count_parameters(config: DiTConfig) -> int:
    """Parameters of a MotionDiT (built on the meta device: no memory, any preset)."""
    with torch.device("meta"):
        return sum(p.numel() for p in MotionDiT(config).parameters())


def preset_table(presets: Sequence[str] = tuple(DIT_PRESETS)) -> list[dict]:
    return [{"preset": name, "dim": DIT_PRESETS[name].dim, "depth": DIT_PRESETS[name].depth,
             "heads": DIT_PRESETS[name].heads, "params": count_parameters(DIT_PRESETS[name])}
            for name in presets]
