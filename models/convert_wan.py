"""Load a pretrained Wan2.x DiT (diffusers `WanTransformer3DModel` state dict) into MotionDiT.

MotionDiT's backbone uses Wan's module names, so the mapping is a handful of renames; every
key whose shape matches is copied (patch embedding, time embedding and modulation, text
projection, self- and cross-attention with their q/k norms, FFNs, output head; an I2V model's
image K/V `add_k_proj`/`add_v_proj` land on the identity branch). Everything else keeps its
initialisation and is reported: the condition encoders (new, zero-initialised), and the text
projection's first layer when the text encoders differ (umT5 4096-d vs MiniLM 384-d).

    report = load_wan(model, safetensors.torch.load_file(".../diffusion_pytorch_model.safetensors"))
    print(report.summary())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.errors import InvalidInput

# (Wan key fragment, MotionDiT key fragment), applied in order.
RENAMES = (
    ("condition_embedder.time_embedder.", "time_embedder."),
    ("condition_embedder.time_proj.", "time_proj."),
    ("condition_embedder.text_embedder.", "text_embedder."),
    (".to_out.0.", ".to_out."),
    (".ffn.net.0.proj.", ".ffn.linear_1."),
    (".ffn.net.2.", ".ffn.linear_2."),
)


def motiondit_key(wan_key: str) -> str:
    """The MotionDiT parameter name a Wan (diffusers) key corresponds to."""
    for old, new in RENAMES:
        wan_key = wan_key.replace(old, new)
    return wan_key


@dataclass
class WanConversion:
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (Wan key, MotionDiT key)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, Wan, ours
    unused: list[str] = field(default_factory=list)  # Wan keys without a MotionDiT counterpart
    missing: list[str] = field(default_factory=list)  # MotionDiT keys left at their init

    def summary(self) -> str:
        lines = [f"mapped {len(self.mapped)} tensors, {len(self.missing)} MotionDiT tensors "
                 f"kept their init, {len(self.unused)} Wan tensors unused, "
                 f"{len(self.shape_mismatch)} shape mismatches"]
        lines += [f"  shape mismatch {k}: Wan {a} vs MotionDiT {b}"
                  for k, a, b in self.shape_mismatch]
        return "\n".join(lines)


def convert_wan(wan_state: Mapping[str, Tensor],
                target: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], WanConversion]:
    """Wan tensors renamed to MotionDiT keys where `target` (a MotionDiT state dict) has the
    key with the same shape, and the report."""
    report, out = WanConversion(), {}
    for wan_key, value in wan_state.items():
        key = motiondit_key(wan_key)
        if key not in target:
            report.unused.append(wan_key)
        elif tuple(target[key].shape) != tuple(value.shape):
            report.shape_mismatch.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            out[key] = value
            report.mapped.append((wan_key, key))
    report.missing = [k for k in target if k not in out]
    return out, report


@torch.no_grad()
def load_wan(model: nn.Module, wan_state: Mapping[str, Tensor]) -> WanConversion:
    """Copy the matching Wan tensors into `model` (a MotionDiT) in place."""
    params = model.state_dict()
    converted, report = convert_wan(wan_state, params)
    if not converted:
        raise InvalidInput("no Wan tensor matches this MotionDiT (is it a diffusers "
                           "WanTransformer3DModel state dict of the same dims?)")
    for key, value in converted.items():
        params[key].copy_(value)
    return report


def wan_config(config) -> dict:
    """`WanTransformer3DModel` keyword arguments with the backbone dims of a DiTConfig (and
    MotionDiT's text width), e.g. to build a matching random Wan in tests."""
    return {"patch_size": tuple(config.patch_size), "num_attention_heads": config.heads,
            "attention_head_dim": config.head_dim, "in_channels": config.latent_channels,
            "out_channels": config.latent_channels, "text_dim": config.text_dim,
            "freq_dim": config.freq_dim, "ffn_dim": config.ffn_dim, "num_layers": config.depth,
            "cross_attn_norm": config.cross_attn_norm, "qk_norm": "rms_norm_across_heads",
            "eps": config.eps}
