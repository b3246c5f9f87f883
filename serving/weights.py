"""The self-contained weights folder of `student_dit` (its model version folder), written
by the repository builder and read by the Triton model:

    dit.pt, vae.pt    {"state_dict", "meta"} as the training and distill flows save them
    text_encoder/     the MiniLM text encoder (copied from its package)
    served.json       registered model name, version, tags and the DiT meta
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from flows.registry import ModelBundle, model_from_weights
from models.assets import minilm_dir
from models.text import TextEncoder


def write_served_weights(bundle: ModelBundle, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": bundle.dit.state_dict(), "meta": bundle.meta}, folder / "dit.pt")
    torch.save({"state_dict": bundle.vae.state_dict(), "meta": bundle.vae_meta},
               folder / "vae.pt")
    shutil.copytree(minilm_dir(), folder / "text_encoder", dirs_exist_ok=True)
    (folder / "served.json").write_text(json.dumps(
        {"name": bundle.name, "version": bundle.version, "tags": bundle.tags,
         "meta": bundle.meta, "vae_meta": bundle.vae_meta}, indent=2, default=str))


def load_served_bundle(folder: Path) -> ModelBundle:
    served = json.loads((folder / "served.json").read_text())
    models = {}
    for part in ("dit", "vae"):
        blob = torch.load(folder / f"{part}.pt", map_location="cpu", weights_only=True)
        models[part] = model_from_weights(blob).eval()
    return ModelBundle(models["dit"], models["vae"], served["meta"], served["vae_meta"],
                       served["name"], int(served["version"]), served["tags"])


def load_served_pipeline(folder: Path, device: str = "cpu"):
    """The MotionControlPipeline of a student_dit folder on `device`, and its provenance
    (name, version)."""
    bundle = load_served_bundle(folder)
    bundle.dit.to(device)
    bundle.vae.to(device)
    return bundle.pipeline(text=TextEncoder(folder / "text_encoder")), \
        {"model": bundle.name, "version": bundle.version}

