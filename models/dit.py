"""MotionDiT: the holistic character-animation video diffusion transformer.

A Wan2.x-style DiT over VAE latents (3D patches, 3D RoPE self-attention, text cross-attention,
shared timestep modulation with per-block tables: adaLN-Zero) carrying the Kling-MotionControl
conditions. Each has its encoder (models/encoders.py), a null embedding that stands in for it
when it is dropped (classifier-free guidance), and one of four ways into the DiT:

    added to the video tokens   body and hand pose maps, camera, anchor frames (long videos)
    appended to the sequence    reference (+ subject library) latent frames, at negative
                                RoPE times, with a learned type embedding
    cross-attention             text; identity tokens (decoupled, weight ip_scale:
                                MotionCharacter Eq. 3); [action, intensity] (Eq. 8)
    face adapters               expression-code tokens, per frame, every face_every blocks

Stage 1 uses the body, stage 2 adds the face, stage 3 the hands; every new output projection
starts at zero, so a later stage loaded from the previous one changes nothing at step 0.
Module names follow diffusers' `WanTransformer3DModel` (models/convert_wan.py); checkpoints
depend on them, so tests/unit/models/dit_state_dict_keys.txt pins every key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from models.encoders import (
    MLP,
    CameraEncoder,
    FaceAdapter,
    FaceEncoder,
    GuidanceEncoder,
    IdentityEncoder,
    IntensityEncoder,
    PoseEncoder,
    attend,
    causal_groups,
    key_mask,
    sinusoidal,
)
from models.errors import InvalidInput

if TYPE_CHECKING:
    from models.conditions import Conditions

STAGES = (1, 2, 3)


@dataclass(frozen=True)
class DiTConfig:
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
    # A student's guidance when cond.guidance is None: its teacher's (the profile sets it);
    # (1, 1) is no guidance.
    default_guidance: tuple[float, float] = (1.0, 1.0)
    # Preconditioned around the still reference (EDM's c_skip / c_out, Karras et al. 2022,
    # with the reference held still, cond.still_latents, as the prior mean of the clean clip
    # and `still_sigma` as its spread): the clean-clip estimate is the best linear guess from
    # x_t and the still, plus the network's output scaled to what that guess leaves unknown.
    # A zero-initialised model then starts as the static baseline, and the network's errors
    # shrink with t (at small t the estimate follows x_t), as with a velocity head.
    reference_skip: bool = False
    still_sigma: float = 0.5
    # What the estimate starts from: "still", the reference repeated (the static baseline),
    # or "warp", the reference thin-plate-spline-warped to the target pose frame by frame
    # (models.baselines.tps_warp): the figure is already where the pose puts it, and the
    # network corrects what one smooth warp cannot draw (folds, occlusions).
    reference_prior: str = "still"
    min_time: float = 0.05  # t is clamped here where the estimate is turned into a velocity

    @property
    def skip_prior(self) -> str | None:
        """What the model starts from: None (a plain velocity head), "still" or "warp"."""
        return self.reference_prior if self.reference_skip else None

    def __post_init__(self):
        if self.reference_prior not in ("still", "warp"):
            raise InvalidInput(f"reference_prior must be 'still' or 'warp', got "
                               f"{self.reference_prior!r}")
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

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads




# --------------------------------------------------------------------------- building blocks

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


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor], heads: int) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of each head of x (B, N, heads * d)."""
    cos, sin = (a[:, None] for a in rope)  # (N, 1, d / 2): the same angles in every head
    x = x.unflatten(-1, (heads, -1))
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-3).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, c: DiTConfig):
        super().__init__()
        self.heads = c.heads
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(c.dim, c.dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.RMSNorm(c.dim, eps=c.eps), nn.RMSNorm(c.dim, eps=c.eps)

    def forward(self, x: Tensor, rope, mask: Tensor | None) -> Tensor:
        q, k = self.norm_q(self.to_q(x)), self.norm_k(self.to_k(x))
        q, k = apply_rope(q, rope, self.heads), apply_rope(k, rope, self.heads)
        return self.to_out(attend(q, k, self.to_v(x), self.heads, mask))


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
        self.intensity_embedder = IntensityEncoder(c)
        self.null_intensity = nn.Parameter(torch.randn(d) * 0.02)
        self.camera_embedder = CameraEncoder(c)
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
        self.guidance_embedder = GuidanceEncoder(c) if c.guidance_embed else None

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
        for p in (p for m in zero_outputs for p in m.parameters()):
            nn.init.zeros_(p)

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

    @staticmethod
    def _positions(h: int, w: int, times: Tensor, device) -> Tensor:
        """(len(times) * h * w, 3) (t, y, x) positions of token frames at `times`."""
        axes = (times, torch.arange(h), torch.arange(w))
        return torch.cartesian_prod(*(a.to(device, torch.float64) for a in axes))

    def _frame_conditions(self, cond: Conditions, drop: dict[str, Tensor],
                          grid: tuple[int, int, int]) -> Tensor:
        """What is added to the video tokens: body, hands, camera, anchors -> (B, N, D)."""
        (frames, h, w), add = grid, 0
        for path, encoder, maps, null in (
                ("body", self.body_encoder, cond.body_maps, self.null_body),
                ("hands", self.hands_encoder, cond.hand_maps, self.null_hands)):
            if self.enabled(path):
                enc = encoder(maps, frames * self.config.patch_size[0])
                add = add + torch.where(drop[path][:, None, None], null, enc)
        cam = self.camera_embedder(cond.camera, frames)  # (B, frames, D)
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
        dt, mask = drop["text"], cond.text_mask.bool()
        text = torch.where(dt[:, None, None], self.null_text, cond.text_tokens)
        first = torch.arange(mask.shape[1], device=mask.device) == 0
        mask = torch.where(dt[:, None], first, mask)  # a dropped text: one null token
        action = torch.where(dt[:, None], self.null_action, cond.action_embedding)
        intensity = self.intensity_embedder(cond.motion_intensity)
        intensity = torch.where(drop["intensity"][:, None], self.null_intensity, intensity)
        motion = torch.stack([self.action_embedder(action), intensity], 1)
        return CrossContext(self.text_embedder(text), key_mask(mask),
                            self.identity(cond, drop["reference"]), motion)

    def _face_tokens(self, cond: Conditions, drop: Tensor, token_frames: int) -> Tensor:
        """Expression codes -> (B, token frames, M, D): for each token frame, the face tokens
        of the pixel frames it covers."""
        c, face = self.config, self.face_encoder(cond.face_codes)
        face = torch.where(drop[:, None, None, None], self.null_face, face)
        face = causal_groups(face, 1, c.temporal_factor, token_frames * c.patch_size[0])
        return face.unflatten(1, (token_frames, -1)).flatten(2, 3)

    def forward(self, x: Tensor, t: Tensor, cond: Conditions,
                drop: dict[str, Tensor] | None = None) -> Tensor:
        """Predicted flow-matching velocity (B, C, T, H, W) for noisy latents x at times t
        (B,) in [0, 1] (1 = noise). drop: per-condition (B,) bool masks, keys from
        models.conditions.DROP_KEYS; a dropped condition is replaced by its null embedding."""
        drop = cond.check(x, t, self.config, drop)
        c, dtype = self.config, self.patch_embedding.weight.dtype
        x, cond = x.to(dtype), cond.to(dtype=dtype)  # float conditions in the model's dtype
        b, _, lat_frames, lat_h, lat_w = x.shape
        pt, ph, pw = c.patch_size
        grid = (lat_frames // pt, lat_h // ph, lat_w // pw)  # token frames, rows, columns

        # 1. Patchify the noisy latents; body, hands, camera and anchors add to their tokens.
        video = self.patch_embedding(x).flatten(2).transpose(1, 2)
        video = video + self._frame_conditions(cond, drop, grid)
        n_video = video.shape[1]

        # 2. Reference (+ subject library) tokens follow in the self-attention sequence;
        #    a dropped reference or a missing library image is masked out of attention.
        ref, ref_keep, ref_positions = self._reference_tokens(cond, drop["reference"])
        seq = torch.cat([video, ref], 1)
        mask = key_mask(torch.cat([ref_keep.new_ones(b, n_video), ref_keep], 1))

        # 3. 3D RoPE: video frames at times 0, 1, ..., reference frames at negative times.
        positions = self._positions(*grid[1:], torch.arange(grid[0]), x.device)
        rope = rope_angles(torch.cat([positions, ref_positions], 0), c.head_dim, c.rope_theta)

        # 4. Timestep (+ a student's guidance scales) -> the shared adaLN modulation.
        temb = self.time_embedder(sinusoidal(t * c.time_scale, c.freq_dim).to(dtype))
        if self.guidance_embedder is not None:
            temb = temb + self.guidance_embedder(cond.guidance, b)
        mod = self.time_proj(F.silu(temb)).unflatten(1, (6, -1))

        # 5. What every cross-attention reads: text, identity tokens, [action, intensity].
        ctx = self._cross_context(cond, drop)

        # 6. The blocks; from stage 2 a face adapter after every face_every-th block.
        face = self._face_tokens(cond, drop["face"], grid[0]) if self.enabled("face") else None
        for i, block in enumerate(self.blocks):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                seq = checkpoint(block, seq, mod, rope, mask, ctx, use_reentrant=False)
            else:
                seq = block(seq, mod, rope, mask, ctx)
            if face is not None and (i + 1) % c.face_every == 0:
                seq = self.face_adapters[i // c.face_every](seq, n_video, face)

        # 7. Unpatchify the video tokens (the reference's are not decoded).
        shift, scale = (self.scale_shift_table + temb[:, None]).chunk(2, 1)
        out = self.proj_out(self.norm_out(seq[:, :n_video]) * (1 + scale) + shift)
        out = out.view(b, *grid, pt, ph, pw, c.latent_channels)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape)
        if not c.reference_skip:
            return out

        # 8. The clean-clip estimate around the prior clip (the still or warped reference),
        #    as a velocity. Without a reference (dropped for guidance) the prior is the
        #    latents' own: 0 and spread 1. (Keeping the warped prior there, as the pose maps
        #    are kept, trained worse: held-out sample SSIM 0.37 against 0.55 at 300 steps.)
        dropped = drop["reference"][:, None, None, None, None]
        still = torch.where(dropped, 0.0, cond.still_latents)
        sigma = torch.where(dropped, 1.0, c.still_sigma).to(dtype)
        tt = t.to(dtype).view(-1, 1, 1, 1, 1)
        spread = ((1 - tt) * sigma).square() + tt.square()
        c_skip = (1 - tt) * sigma.square() / spread
        c_out = sigma * tt / spread.sqrt()
        x0 = still + c_skip * (x - (1 - tt) * still) + c_out * out
        return (x - x0) / tt.clamp(min=c.min_time)
