"""The `base` profile's pretrained backbone: Wan2.x weights in diffusers layout.

    MC_TRAIN__WAN_WEIGHTS/          e.g. Wan2.1-T2V-1.3B-Diffusers
        transformer/   config.json + *.safetensors   WanTransformer3DModel: stage 1 starts from it
        vae/           config.json + *.safetensors   AutoencoderKLWan: registered as stage 0
        text_encoder/  config.json + *.safetensors   umT5's encoder: the text of every DiT run
        tokenizer/                                    its tokenizer

The setting is a local folder or `store:<prefix>` in the object store (downloaded once into
`MC_HOME/cache/wan/<prefix>/`, each file checked against its SHA-256 by the store).
`check_wan` compares the folder's configs with the run config when a run is planned, so
missing or mismatched weights stop it at start in one line, before any training process.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flows.errors import MotionControlError
from flows.profiles import RunConfig
from flows.registry import model_meta
from flows.settings import Settings
from flows.store import STORE_PREFIX, open_store

PARTS = ("transformer", "vae", "text_encoder", "tokenizer")
WEIGHTS = ("transformer", "vae", "text_encoder")  # the parts with safetensors


def uses_backbone(run: RunConfig) -> bool:
    return run.backbone == "wan"


def wan_folder(settings: Settings, source: str | None = None) -> Path:
    """The local folder of the Wan weights `source` or the settings name (downloaded from
    the store on first use)."""
    source = source or settings.train.wan_weights
    if not source:
        raise MotionControlError(
            f"profile {settings.profile} starts from pretrained Wan2.x weights: set "
            "MC_TRAIN__WAN_WEIGHTS to their diffusers folder (e.g. Wan2.1-T2V-1.3B-Diffusers) "
            "or to store:<prefix> of a copy in the object store")
    if source.startswith(STORE_PREFIX):
        folder = _download(settings, source.removeprefix(STORE_PREFIX).strip("/"))
    else:
        folder = Path(source).expanduser()
    missing = [part for part in PARTS if not (folder / part).is_dir()]
    missing += [f"{part}/config.json" for part in WEIGHTS
                if (folder / part).is_dir() and not (folder / part / "config.json").is_file()]
    missing += [f"{part}/*.safetensors" for part in WEIGHTS
                if (folder / part).is_dir() and not list((folder / part).glob("*.safetensors"))]
    if missing:
        raise MotionControlError(
            f"MC_TRAIN__WAN_WEIGHTS={source} is not a Wan2.x diffusers folder: no "
            f"{', '.join(missing)} (expected {', '.join(f'{p}/' for p in PARTS)})")
    return folder


def _download(settings: Settings, prefix: str) -> Path:
    store = open_store(settings)
    folder = settings.home / "cache" / "wan" / prefix
    if not store.get_prefix(prefix + "/", folder, keep_complete=True):
        raise MotionControlError(f"MC_TRAIN__WAN_WEIGHTS=store:{prefix}: nothing under "
                                 f"{store.uri(prefix + '/')}; upload the diffusers folder "
                                 "there (transformer/, vae/, text_encoder/, tokenizer/)")
    return folder


def _config(folder: Path, part: str) -> dict:
    return json.loads((folder / part / "config.json").read_text())


def check_wan(folder: Path, run: RunConfig) -> None:
    """Stop, in one line, when the Wan weights do not have the run config's dimensions."""
    from models.convert_wan import wan_config

    transformer, vae = _config(folder, "transformer"), _config(folder, "vae")
    text = _config(folder, "text_encoder")
    dims = wan_config(run.dit)
    expected = {("transformer", k): v for k, v in dims.items()}
    expected |= {("vae", "z_dim"): run.vae.latent_channels,
                 ("vae", "scale_factor_spatial"): run.vae.spatial_factor,
                 ("vae", "scale_factor_temporal"): run.vae.temporal_factor,
                 ("text_encoder", "d_model"): run.dit.text_dim}
    # diffusers' defaults for keys older config.json files leave out
    found = {("transformer", k): transformer.get(k) for k in dims}
    found |= {("vae", "z_dim"): vae.get("z_dim"),
              ("vae", "scale_factor_spatial"): vae.get("scale_factor_spatial", 8),
              ("vae", "scale_factor_temporal"): vae.get("scale_factor_temporal", 4),
              ("text_encoder", "d_model"): text.get("d_model", text.get("hidden_size"))}
    wrong = [f"{part} {key} {_plain(found[part, key])} (the run config needs {_plain(want)})"
             for (part, key), want in expected.items() if _plain(found[part, key]) != _plain(want)]
    if wrong:
        raise MotionControlError(
            f"the Wan weights at {folder} do not fit profile {run.profile}: {'; '.join(wrong)}. "
            "Use the checkpoint the profile is sized for (Wan2.1-T2V-1.3B) or change the run "
            "config to match (MC_RUN_CONFIG)")


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def wan_vae_meta(folder: Path, run: RunConfig) -> dict:
    """The stage-0 model meta of the pretrained Wan VAE (flows.registry.build_model)."""
    return {**model_meta(run, "vae", 0), "arch": "wan", "config": _config(folder, "vae")}


def load_wan_vae(folder: Path):
    """The pretrained Wan VAE behind the VideoVAE interface."""
    from models.vae import WanVAEAdapter

    return WanVAEAdapter.from_pretrained(folder / "vae").eval()


def init_from_wan(model: torch.nn.Module, folder: Path):
    """Copy the Wan DiT's weights into a MotionDiT (models/convert_wan.py); its condition
    branches keep their zero initialisation, so it starts as the pretrained backbone.
    Returns the conversion report."""
    from safetensors.torch import load_file

    from models.convert_wan import load_wan

    state = {}
    for shard in sorted((folder / "transformer").glob("*.safetensors")):
        state.update(load_file(shard))
    report = load_wan(model, state)
    if report.shape_mismatch or report.unused:
        raise MotionControlError(f"the Wan DiT at {folder / 'transformer'} does not map onto "
                                 f"MotionDiT: {report.summary()}")
    return report
