"""The self-contained weights folder of `student_dit` (its model version folder), written
by the repository builder and read by the Triton model. It is the registered version's
MLflow weights folder (flows/pyfunc_model.py) plus where it came from:

    dit.safetensors, vae.safetensors, meta.json   the weights and how to rebuild each part
    text_encoder/     the text encoder the DiT was trained with (MiniLM, or base's umT5);
                      MiniLM also traced to TorchScript, which the served model loads
                      without importing transformers (models/text.py)
    served.json       registered model name, version and tags
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from flows.pyfunc_model import TEXT_ENCODER, load_pipeline, read_bundle, save_parts
from flows.registry import ModelBundle
from models.vae import decode_dtype_for


def write_served_weights(bundle: ModelBundle, folder: Path) -> None:
    save_parts(folder, {"dit": (bundle.dit, bundle.meta), "vae": (bundle.vae, bundle.vae_meta)},
               bundle.text)
    from models.text import TextEncoder

    text = bundle.text or TextEncoder(folder / TEXT_ENCODER)
    if text.traceable:
        text.save_traced(folder / TEXT_ENCODER)
    (folder / "served.json").write_text(json.dumps(
        {"name": bundle.name, "version": bundle.version, "tags": bundle.tags}, indent=2))


def load_served_bundle(folder: Path) -> ModelBundle:
    served = json.loads((folder / "served.json").read_text())
    return dataclasses.replace(read_bundle(folder), name=served["name"],
                               version=int(served["version"]), tags=served["tags"])


def load_served_pipeline(folder: Path, device: str = "cpu", decode_dtype: str = "float32"):
    """The MotionControlPipeline of a student_dit folder on `device`, decoding in
    `decode_dtype` (`ServeSettings.decode_dtype`), and its provenance (name, version)."""
    bundle = load_served_bundle(folder)
    bundle.vae.set_decode_dtype(decode_dtype_for(decode_dtype, device))
    return load_pipeline(folder, device, bundle), \
        {"model": bundle.name, "version": bundle.version}
