"""Causal 3D video VAE (training stage 0 of the teacher), after Wan-VAE.

Video (B, 3, T, H, W) in [-1, 1] with T = 1 + t*k  <->  latent (B, C, 1 + k, H/s, W/s), where
t and s are the temporal and spatial compression. Every convolution pads time on the past side
only and GroupNorm takes its statistics per frame, so latent frame j sees pixel frames <= t*j:
the first frame is encoded alone, and an image is a video with T = 1 (reference images and
first frames share one latent space).

`WanVAEAdapter` wraps a pretrained diffusers `AutoencoderKLWan` from a local folder (the `base`
profile) behind the same interface; `load_vae` picks one of the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import InvalidInput


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    latent_channels: int = 16
    base_channels: int = 96
    # one entry per resolution level; between two levels one downsampling step
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    # per downsampling step: does it halve H and W, does it halve T (Wan: time halves late)
    spatial_down: tuple[bool, ...] = (True, True, True)
    temporal_down: tuple[bool, ...] = (False, True, True)
    # space-to-depth of the pixels first (Wan 2.2): full-resolution convs are what costs most
    patch_size: int = 1
    num_res_blocks: int = 2
    attention: bool = True  # one per-frame self-attention in each mid block
    norm_groups: int = 32
    # DC-AE's residual autoencoding (Chen et al. 2024): the encoder adds a parameter-free
    # thumbnail of the pixels (mean colour of each latent cell's 2x2 sub-blocks over its
    # frames) to the first latent channels and the decoder adds it back, upsampled, so the
    # networks learn only the residual detail. It makes a small VAE learn many times faster.
    shortcut: bool = False

    def __post_init__(self):
        steps = len(self.channel_mult) - 1
        if len(self.spatial_down) != steps or len(self.temporal_down) != steps:
            raise InvalidInput(
                f"spatial_down has {len(self.spatial_down)} and temporal_down "
                f"{len(self.temporal_down)} entries for {len(self.channel_mult)} channel_mult "
                f"levels: give one flag per downsampling step ({steps})")
        widths = {self.base_channels * m for m in self.channel_mult}
        if any(w % self.norm_groups for w in widths):
            raise InvalidInput(
                f"channel widths {sorted(widths)} are not all divisible by norm_groups="
                f"{self.norm_groups}: change base_channels, channel_mult or norm_groups")
        if self.shortcut and self.latent_channels < 4 * self.in_channels:
            raise InvalidInput(f"shortcut needs latent_channels >= {4 * self.in_channels} "
                               f"(2x2 sub-blocks x {self.in_channels} channels), got "
                               f"{self.latent_channels}")
        if min(self.in_channels, self.latent_channels, self.num_res_blocks, self.patch_size) < 1:
            raise InvalidInput(
                "in_channels, latent_channels, num_res_blocks and patch_size must be >= 1")

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** sum(self.spatial_down)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_down)




# --- posterior ----------------------------------------------------------------------------

class DiagonalGaussian:
    """q(z|x) = N(mean, exp(logvar)); `params` holds mean and logvar stacked on channels."""

    def __init__(self, params: torch.Tensor):
        self.mean, logvar = params.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                            dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), per sample (B,), mean over latent elements (independent of size)."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).mean(1)


# --- shared interface: input checks and latent scaling --------------------------------------

class LatentVAE(nn.Module):
    """What the diffusion model sees of a VAE, whichever is inside.

    Subclasses set `in_channels`, `latent_channels`, `spatial_factor`, `temporal_factor` and
    register the per-channel buffers `shift` and `scaling_factor`:
    diffusion latent = (z - shift) * scaling_factor, ~zero mean and unit variance per channel.
    """

    in_channels: int
    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sample: bool | None = None,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """(recon, posterior). Decodes a posterior sample in training mode and the mean in
        eval mode (deterministic validation), unless `sample` says otherwise."""
        posterior = self.encode(x)
        sample = self.training if sample is None else sample
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    def _per_channel(self, name: str) -> torch.Tensor:
        return getattr(self, name).view(1, -1, 1, 1, 1)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self._per_channel("shift")) * self._per_channel("scaling_factor")

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / self._per_channel("scaling_factor") + self._per_channel("shift")

    def encode_latents(self, x: torch.Tensor, sample: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels -> normalised latents for the diffusion model: the posterior mean by default
        (deterministic, as Wan's pipelines; with a light KL a sample differs little)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.normalize_latents(z)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents from the diffusion model -> pixels in [-1, 1] (float32)."""
        return self.decode(self.denormalize_latents(z)).clamp(-1.0, 1.0)  # decode: float32

    def decode_on_prior(self, z: torch.Tensor, prior_latents: torch.Tensor,
                        prior_pixels: torch.Tensor) -> torch.Tensor:
        """Latents sampled from a prior clip -> pixels in [-1, 1]: the prior's own pixels plus
        what the latents change, decode(z) - decode(prior_latents). The VAE's loss on the
        prior (its blur, and the ghosts of its temporal factor) cancels, so the prior's detail
        survives where the model leaves it alone. On the tiny profile's held-out pairs this
        took the student from SSIM / LPIPS 0.804 / 0.252 to 0.816 / 0.226
        (docs/training.md#decoding-on-the-prior)."""
        change = self.decode_latents(z) - self.decode_latents(prior_latents)
        return (prior_pixels.to(change) + change).clamp(-1.0, 1.0)

    def decoding_modules(self) -> list[nn.Module]:
        """The modules `decode` runs, which `set_decode_dtype` casts."""
        raise NotImplementedError

    def set_decode_dtype(self, dtype: torch.dtype) -> LatentVAE:
        """Run `decode` in `dtype` (the encoder stays as it is). bfloat16 halves the decode
        on a CPU with AVX512-BF16 (oneDNN) and on a GPU; outputs stay float32, and differ
        from a float32 decode by ~1/255 on average (tests/unit/models/test_vae.py). One way:
        casting back does not restore the rounded weights; reload them instead."""
        for module in self.decoding_modules():
            module.to(dtype)
        return self

    @property
    def decode_dtype(self) -> torch.dtype:
        return next(self.decoding_modules()[0].parameters()).dtype

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the latent of a (3, frames, height, width) video."""
        self._check_size(frames, height, width)
        s = self.spatial_factor
        return (self.latent_channels, 1 + (frames - 1) // self.temporal_factor,
                height // s, width // s)

    def _check_size(self, frames: int, height: int, width: int) -> None:
        t, s = self.temporal_factor, self.spatial_factor
        if frames < 1 or (frames - 1) % t:
            lo = 1 + t * max(0, (frames - 1) // t)
            raise InvalidInput(
                f"video has {frames} frames; the causal VAE needs 1 + {t}k frames (1, {1 + t}, "
                f"{1 + 2 * t}, ...): trim or pad the clip, e.g. to {lo} or {lo + t} frames")
        if height % s or width % s:
            raise InvalidInput(
                f"frame size {height}x{width} is not divisible by the spatial compression {s}: "
                f"resize or crop to e.g. {height // s * s or s}x{width // s * s or s}")

    def check_video(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or x.ndim != 5:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InvalidInput(
                f"expected a video tensor (B, {self.in_channels}, T, H, W), got {got}: "
                f"for images (B, C, H, W) use x.unsqueeze(2) (an image is a 1-frame video)")
        if not x.is_floating_point():
            raise InvalidInput(f"video dtype is {x.dtype}; pass floats in [-1, 1] "
                               "(for uint8 frames: x.float() / 127.5 - 1)")
        if x.shape[1] != self.in_channels:
            raise InvalidInput(
                f"video has {x.shape[1]} channels, expected {self.in_channels} (RGB) in dim 1 "
                f"of (B, C, T, H, W): for (B, T, H, W, C) frames use x.permute(0, 4, 1, 2, 3)")
        self._check_size(*x.shape[2:])
        if x.numel() and x.detach().abs().amax() > 1.01:
            raise InvalidInput(
                f"video values reach {x.detach().abs().amax().item():.3g}; pass [-1, 1] "
                "(from [0, 255]: x / 127.5 - 1; from [0, 1]: 2 * x - 1), or clamp")

    def check_latent(self, z: torch.Tensor) -> None:
        if not torch.is_tensor(z) or z.ndim != 5 or z.shape[1] != self.latent_channels:
            got = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise InvalidInput(f"expected latents (B, {self.latent_channels}, T', H', W'), "
                               f"got {got}: pass what encode() returns")


# --- the from-scratch causal VAE ------------------------------------------------------------

# PyTorch sends small batch-1 CPU conv3d (N*C*T*H <= 20480: every conv of the tiny profile at B=1) to
# its slow native kernel; oneDNN is ~4x faster there (same numbers, autograd included).
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")


class CausalConv3d(nn.Conv3d):
    """3D conv that pads time on the past side only: output frame i sees input frames <= i."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int | tuple = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))
        self.time_pad = kernel - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0))
        if _ONEDNN and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32:
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding,
                                            self.stride, self.dilation, self.groups)
        return super().forward(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: a 3D GroupNorm pools over time and so would leak
    later frames into earlier latents (and make an image encode differently from frame 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.block = nn.Sequential(
            FrameGroupNorm(groups, cin), nn.SiLU(), CausalConv3d(cin, cout),
            FrameGroupNorm(groups, cout), nn.SiLU(), CausalConv3d(cout, cout))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


class FrameAttention(nn.Module):
    """Single-head spatial self-attention within each frame (causal by construction)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = FrameGroupNorm(groups, channels)
        self.qkv = nn.Conv3d(channels, 3 * channels, 1)
        self.proj = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        qkv = self.qkv(self.norm(x)).permute(0, 2, 3, 4, 1).reshape(b * t, h * w, 3 * c)
        y = F.scaled_dot_product_attention(*qkv.chunk(3, dim=-1))
        return x + self.proj(y.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3))


class Upsample(nn.Module):
    """Inverse of one downsampling step; its conv also narrows to the next level's width."""

    def __init__(self, cin: int, cout: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv = CausalConv3d(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal:  # frame 0 stays alone, the others double: 1 + k -> 1 + 2k frames
            x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)
        if self.spatial:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return self.conv(x)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C*p*p, T, H/p, W/p), per frame."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, cpp, t, h, w = x.shape
    x = x.view(b, cpp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, cpp // (p * p), t, h * p, w * p)


class Thumbnail(nn.Module):
    """The parameter-free path of residual autoencoding between pixels (B, C, T, H, W) and the
    first 4·C latent channels: mean colours of the 2x2 sub-blocks of every latent cell, over
    the cell's frames (frame 0 alone, then groups of `temporal_factor`, as the causal VAE)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.t, self.s, self.c = cfg.temporal_factor, cfg.spatial_factor, cfg.in_channels

    def down(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:, :, :1]
        rest = x[:, :, 1:]
        if self.t > 1 and rest.shape[2]:
            rest = F.avg_pool3d(rest, (self.t, 1, 1))
        x = F.avg_pool3d(torch.cat([first, rest], 2), (1, self.s // 2, self.s // 2))
        return patchify(x, 2)  # (B, 4C, T', H/s, W/s)

    def up(self, z: torch.Tensor) -> torch.Tensor:
        x = unpatchify(z[:, :4 * self.c], 2)
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(self.t, 2)], 2)
        return F.interpolate(x, scale_factor=(1, self.s // 2, self.s // 2), mode="nearest")


def _mid(channels: int, cfg: VAEConfig) -> nn.Sequential:
    attn = [FrameAttention(channels, cfg.norm_groups)] if cfg.attention else []
    return nn.Sequential(ResBlock(channels, channels, cfg.norm_groups), *attn,
                         ResBlock(channels, channels, cfg.norm_groups))


def _head(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(FrameGroupNorm(groups, cin), nn.SiLU(), CausalConv3d(cin, cout))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.patch = cfg.patch_size
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [CausalConv3d(cfg.in_channels * self.patch ** 2, widths[0])]
        cin = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(cin, width, cfg.norm_groups))
                cin = width
            if level < len(widths) - 1:
                # kernel 3, stride 2 with 2 past pad frames: out frame j sees in frames 2j-2..2j,
                # so 1 + 2k frames -> 1 + k and frame 0 still stands alone
                s, t = cfg.spatial_down[level], cfg.temporal_down[level]
                layers.append(CausalConv3d(cin, cin, stride=(1 + t, 1 + s, 1 + s)))
        layers += [_mid(cin, cfg), _head(cin, 2 * cfg.latent_channels, cfg.norm_groups)]
        self.layers = nn.Sequential(*layers)
        self.thumbnail = Thumbnail(cfg) if cfg.shortcut else None
        if self.thumbnail is not None:  # start from the thumbnail itself, little noise
            head = self.layers[-1][-1]
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            nn.init.constant_(head.bias[cfg.latent_channels:], -6.0)  # log-variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(patchify(x, self.patch) if self.patch > 1 else x)
        if self.thumbnail is not None:  # onto the posterior mean's first channels
            thumb = self.thumbnail.down(x)
            h = torch.cat([h[:, :thumb.shape[1]] + thumb, h[:, thumb.shape[1]:]], 1)
        return h


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.patch = cfg.patch_size
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        cin = widths[-1]
        layers: list[nn.Module] = [CausalConv3d(cfg.latent_channels, cin), _mid(cin, cfg)]
        for level in reversed(range(len(widths))):
            for _ in range(cfg.num_res_blocks + 1):  # one more than the encoder, as in LDM/Wan
                layers.append(ResBlock(cin, widths[level], cfg.norm_groups))
                cin = widths[level]
            if level > 0:
                s, t = cfg.spatial_down[level - 1], cfg.temporal_down[level - 1]
                layers.append(Upsample(cin, widths[level - 1], s, t))
                cin = widths[level - 1]
        layers.append(_head(cin, cfg.in_channels * self.patch ** 2, cfg.norm_groups))
        self.layers = nn.Sequential(*layers)
        self.thumbnail = Thumbnail(cfg) if cfg.shortcut else None
        if self.thumbnail is not None:
            nn.init.zeros_(self.layers[-1][-1].weight)
            nn.init.zeros_(self.layers[-1][-1].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.layers(z)
        x = unpatchify(x, self.patch) if self.patch > 1 else x
        return x + self.thumbnail.up(z) if self.thumbnail is not None else x


class VideoVAE(LatentVAE):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = cfg = config
        self.in_channels, self.latent_channels = cfg.in_channels, cfg.latent_channels
        self.spatial_factor, self.temporal_factor = cfg.spatial_factor, cfg.temporal_factor
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        # identity until fit_latent_stats; buffers, so they travel with the state dict
        self.register_buffer("shift", torch.zeros(cfg.latent_channels))
        self.register_buffer("scaling_factor", torch.ones(cfg.latent_channels))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        self.check_video(x)
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.check_latent(z)
        return self.decoder(z.to(self.decode_dtype)).float()

    def decoding_modules(self) -> list[nn.Module]:
        return [self.decoder]

    def loss(self, x: torch.Tensor, recon: torch.Tensor, posterior: DiagonalGaussian,
             kl_weight: float = 1e-4) -> dict[str, torch.Tensor]:
        """L1 reconstruction + kl_weight * KL, both means over elements (so the weight does
        not depend on resolution). A light KL, as in LDM/Wan: the latent scale is fixed
        afterwards by `fit_latent_stats`, not by the prior."""
        if recon.shape != x.shape:
            raise InvalidInput(f"recon {tuple(recon.shape)} and x {tuple(x.shape)} differ: "
                               "pass the recon that forward(x) returned")
        recon_l1 = (recon - x).abs().mean()
        kl = posterior.kl().mean()
        return {"total": recon_l1 + kl_weight * kl, "recon_l1": recon_l1, "kl": kl}

    @torch.no_grad()
    def fit_latent_stats(self, latents: torch.Tensor | list[torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Set `shift` and `scaling_factor` per channel from latents (B, C, T', H', W') of the
        training data (one tensor or a list of batches), so normalize_latents gives zero mean
        and unit variance. Fit on what the diffusion model is fed (encode_latents: the mode)."""
        batches = list(latents) if isinstance(latents, list | tuple) else [latents]
        c = self.latent_channels
        for z in batches:
            if not torch.is_tensor(z) or z.ndim < 3 or z.shape[1] != c:
                raise InvalidInput(f"expected latents (B, {c}, ...), got "
                                   f"{getattr(z, 'shape', type(z).__name__)}: pass encode() outputs")
        flat = torch.cat([z.detach().float().transpose(0, 1).reshape(c, -1) for z in batches], 1)
        if flat.shape[1] < 2:
            raise InvalidInput("need at least 2 latent values per channel to fit stats: "
                               "encode more clips")
        std = flat.std(dim=1).clamp_min(1e-3)  # a collapsed channel must not become noise
        self.shift.copy_(flat.mean(dim=1))
        self.scaling_factor.copy_(1.0 / std)
        return self.shift.clone(), self.scaling_factor.clone()


# --- pretrained Wan VAE (diffusers) ---------------------------------------------------------

class WanVAEAdapter(LatentVAE):
    """diffusers `AutoencoderKLWan` behind the VideoVAE interface. Its config's per-channel
    `latents_mean` / `latents_std` become `shift` / `scaling_factor` (as Wan's pipelines use)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        self.model = model
        self.in_channels = cfg.in_channels
        self.latent_channels = cfg.z_dim
        self.spatial_factor = cfg.scale_factor_spatial
        self.temporal_factor = cfg.scale_factor_temporal
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise InvalidInput(
                f"Wan VAE config has {len(cfg.latents_mean)} latents_mean / "
                f"{len(cfg.latents_std)} latents_std values for z_dim={cfg.z_dim}: "
                "give one per latent channel in config.json")
        self.register_buffer("shift", torch.tensor(cfg.latents_mean, dtype=torch.float32))
        self.register_buffer("scaling_factor", 1.0 / torch.tensor(cfg.latents_std, dtype=torch.float32))

    @classmethod
    def from_config(cls, config: dict) -> WanVAEAdapter:
        """A randomly initialised AutoencoderKLWan of `config` (its config.json), e.g. to
        load a registered version's weights into."""
        from diffusers import AutoencoderKLWan

        return cls(AutoencoderKLWan.from_config(config))

    @classmethod
    def from_pretrained(cls, local_dir: str | os.PathLike, **kwargs) -> WanVAEAdapter:
        from diffusers import AutoencoderKLWan  # heavy import, only for the base profile

        path = Path(local_dir)
        if not (path / "config.json").is_file():
            raise InvalidInput(
                f"{path} is not a diffusers VAE folder (no config.json): download the Wan VAE "
                "(e.g. the `vae/` folder of Wan2.1-T2V) to a local folder and pass that path")
        # local_files_only: never reach a model hub at run time
        return cls(AutoencoderKLWan.from_pretrained(path, local_files_only=True, **kwargs))

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        self.check_video(x)
        dist = self.model.encode(x.to(self.model.dtype)).latent_dist
        return DiagonalGaussian(dist.parameters.float())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.check_latent(z)
        return self.model.decode(z.to(self.decode_dtype)).sample.float()

    def decoding_modules(self) -> list[nn.Module]:
        return [self.model.post_quant_conv, self.model.decoder]


def load_vae(config_or_path: os.PathLike | str | VAEConfig) -> LatentVAE:
    """A VAEConfig (flows/profiles.py has each profile's) -> a fresh VideoVAE;
    a local diffusers folder (config.json + weights) -> the pretrained WanVAEAdapter."""
    if isinstance(config_or_path, VAEConfig):
        return VideoVAE(config_or_path)
    if isinstance(config_or_path, str | os.PathLike) and Path(config_or_path).is_dir():
        return WanVAEAdapter.from_pretrained(config_or_path)
    raise InvalidInput(
        f"cannot load a VAE from {config_or_path!r}: give a VAEConfig "
        "or the path of a local diffusers AutoencoderKLWan folder")


def decode_dtype_for(choice: str, device: torch.device | str) -> torch.dtype:
    """The decode precision `choice` ("auto", "float32", "bfloat16") means on `device`: auto is
    bfloat16 where the hardware computes it natively (a CPU with AVX512-BF16/AMX, a GPU with
    bf16), float32 elsewhere (an emulated bf16 conv is slower than float32)."""
    if choice in ("float32", "bfloat16"):
        return getattr(torch, choice)
    if choice != "auto":
        raise InvalidInput(f"decode dtype {choice!r}: use auto, float32 or bfloat16")
    if torch.device(device).type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = _ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.bfloat16 if native else torch.float32


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DiagonalGaussian", "LatentVAE", "VAEConfig", "VideoVAE",
           "WanVAEAdapter", "decode_dtype_for", "load_vae", "num_params"]
