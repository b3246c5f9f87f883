"""Registered versions as runnable MLflow models: a pyfunc around MotionControlPipeline.

Every training run logs its model with `log_pipeline_model`, and the train and distill flows
register that model. Its `data/` folder is the one copy of the weights: the next stage,
distillation, evaluation, serving and `mlflow.pyfunc.load_model` all read it.

    meta.json          {"dit": ..., "vae": ...}: each part's `model_meta`, how to rebuild it
    dit.safetensors    the DiT (a teacher stage 1-3 or a student); absent in a stage-0 VAE
    vae.safetensors    the video VAE (a DiT's: the one it was trained with)
    text_encoder/      the text encoder and its tokenizer (DiT models only): MiniLM, or the
                       pretrained backbone's (umT5 for `base`)

Safetensors hold tensors only, so loading a model unpickles nothing. Use:

    model = mlflow.pyfunc.load_model("models:/motioncontrol-student@champion")
    [mp4] = model.predict({"reference_image": png_bytes, "driving_video": mp4_bytes,
                           "prompt": "a person waving", "seed": 1})

A stage-0 VAE takes only `driving_video` and returns its reconstruction. The models import
this project's code (`flows`, `models`): they run where it is installed, in an environment
made from their pip requirements (the project's own, pinned to the versions that trained them).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from packaging.requirements import Requirement
from safetensors.torch import load_file, save_file

from flows.errors import MotionControlError
from flows.registry import ModelBundle, build_model
from models.assets import minilm_dir, sample_data
from models.errors import InvalidInput
from models.extraction import check_driving, square
from models.frames import to_pixels, to_uint8
from models.video import encode_mp4, read_image, read_video

WEIGHTS = "weights"  # the folder's name under the MLflow model's data/
META_FILE = "meta.json"
TEXT_ENCODER = "text_encoder"

if TYPE_CHECKING:
    import pandas as pd

# A part of a model: the module and its meta (flows.registry.model_meta).
Part = tuple[torch.nn.Module, dict]


# --- the weights folder ------------------------------------------------------------------


def save_parts(folder: Path, parts: dict[str, Part], text=None) -> None:
    """Write `{"dit": (module, meta), "vae": ...}` as the folder above (a DiT's with the
    text encoder it conditions on: `text`, a TextEncoder; None: the bundled MiniLM)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (module, _) in parts.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, folder / f"{name}.safetensors")
    (folder / META_FILE).write_text(json.dumps(
        {name: meta for name, (_, meta) in parts.items()}, indent=2))
    if "dit" in parts and text is not None:
        text.save(folder / TEXT_ENCODER)
    elif "dit" in parts:
        shutil.copytree(minilm_dir(), folder / TEXT_ENCODER, dirs_exist_ok=True)


def read_part(folder: Path, name: str) -> Part:
    """The module (in eval mode) and meta of part `name` ("dit" or "vae") of a weights
    folder."""
    meta = _metas(folder, [name])[name]
    model = build_model(meta)
    model.load_state_dict(load_file(folder / f"{name}.safetensors"))
    return model.eval(), meta


def read_bundle(folder: Path) -> ModelBundle:
    """The DiT, VAE, text encoder and sampling meta of a weights folder (no registry
    provenance)."""
    from models.text import TextEncoder

    (dit, meta), (vae, vae_meta) = read_part(folder, "dit"), read_part(folder, "vae")
    text = TextEncoder(folder / TEXT_ENCODER) if (folder / TEXT_ENCODER).is_dir() else None
    return ModelBundle(dit, vae, meta, vae_meta, text=text)


def download_part(model_uri: str, name: str) -> Part:
    """Part `name` of a registered model (`models:/<name>/<version>` or `@<alias>`),
    fetching only its files: what a training run starts from."""
    with tempfile.TemporaryDirectory(prefix="mc-part-") as tmp:
        return read_part(_download(model_uri, [name], Path(tmp)), name)


def download_text_encoder(model_uri: str, dest: Path) -> Path:
    """The text encoder folder of a registered DiT model, downloaded under `dest`."""
    return _download(model_uri, [], dest, [TEXT_ENCODER]) / TEXT_ENCODER


def download_bundle(model_uri: str) -> ModelBundle:
    """The DiT, VAE and text encoder of a registered model (`models:/<name>/<version>` or
    `@<alias>`)."""
    with tempfile.TemporaryDirectory(prefix="mc-model-") as tmp:
        return read_bundle(_download(model_uri, ["dit", "vae"], Path(tmp), [TEXT_ENCODER]))


def _download(model_uri: str, names: list[str], dest: Path,
              folders: tuple[str, ...] | list[str] = ()) -> Path:
    """The meta and the weights of parts `names` (and the sub`folders`) of a model's weights
    folder, under `dest`; returns the local weights folder."""
    import mlflow

    for file in (META_FILE, *(f"{name}.safetensors" for name in names), *folders):
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri}/data/{WEIGHTS}/{file}", dst_path=str(dest)))
        except mlflow.exceptions.MlflowException as exc:
            raise MotionControlError(
                f"{model_uri} has no data/{WEIGHTS}/{file} ({exc.message.splitlines()[0]}): "
                "it was logged before registered versions were MLflow pyfunc models with "
                "safetensors weights; retrain it (make train-stage0 ... / make distill)"
            ) from None
        if file == META_FILE:
            _metas(local.parent, names)  # a missing part says so, not a missing file
    return local.parent


def _metas(folder: Path, names: list[str]) -> dict:
    metas = json.loads((folder / META_FILE).read_text())
    missing = [name for name in names if name not in metas]
    if missing:
        raise MotionControlError(f"the model has no {' or '.join(missing)} part (it has "
                                 f"{', '.join(sorted(metas))}): a stage-0 VAE is not a "
                                 "generator; pick a teacher stage 1-3 or a student")
    return metas


# --- the pyfunc --------------------------------------------------------------------------


class PipelineModel:
    """predict: one row per clip (reference_image, driving_video, prompt, seed?) -> mp4
    bytes of the `frames` generated frames, size² px, at the driving video's frame rate."""

    def __init__(self, folder: Path):
        self.pipeline = load_pipeline(folder)

    def predict(self, model_input, params=None) -> list[bytes]:
        return [self._one(row) for row in _rows(model_input)]

    def _one(self, row: dict) -> bytes:
        reference = read_image(_bytes(row, "reference_image"), label="reference image")
        clip = read_video(_bytes(row, "driving_video"), max_frames=self.pipeline.frames,
                          label="driving video")
        out = self.pipeline(reference, clip.frames, _present(row.get("prompt")) or "",
                            seed=_present(row.get("seed")))
        return encode_mp4(out.frames, clip.fps)


def load_pipeline(folder: Path, device: str | None = None,
                  bundle: ModelBundle | None = None):
    """The MotionControlPipeline of a weights folder (or of `bundle` read from it) with the
    folder's text encoder, on `device` (default: the GPU if there is one)."""
    from models.text import TextEncoder

    bundle = bundle or read_bundle(folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bundle.dit.to(device)
    bundle.vae.to(device)
    return bundle.pipeline(text=bundle.text or TextEncoder(folder / TEXT_ENCODER))


class VAEModel:
    """predict: one row per clip (driving_video) -> mp4 bytes of the VAE's reconstruction of
    its first `frames` frames, centre-cropped to size²."""

    def __init__(self, folder: Path):
        self.vae, self.meta = read_part(folder, "vae")

    def predict(self, model_input, params=None) -> list[bytes]:
        size, frames = int(self.meta["resolution"]), int(self.meta["frames"])
        videos = []
        for row in _rows(model_input):
            clip = read_video(_bytes(row, "driving_video"), max_frames=frames,
                              label="driving video")
            driving = check_driving(clip.frames, frames)
            pixels = to_pixels(np.stack([square(f, size) for f in driving])[None], size)
            with torch.no_grad():
                videos.append(encode_mp4(to_uint8(self.vae(pixels)[0])[0], clip.fps))
        return videos


def _load_pyfunc(data_path: str):
    """MLflow's entry point (loader_module) for a model logged by `log_pipeline_model`."""
    folder = Path(data_path)
    metas = json.loads((folder / META_FILE).read_text())
    return PipelineModel(folder) if "dit" in metas else VAEModel(folder)


def _rows(model_input) -> list[dict]:
    """A DataFrame's rows, or one dict, as dicts (MLflow hands a DataFrame to predict)."""
    import pandas as pd  # here: the serving image loads these weights without pandas

    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict("records")
    if isinstance(model_input, dict):
        return [model_input]
    raise InvalidInput(f"predict takes a pandas DataFrame or a dict, got "
                       f"{type(model_input).__name__}")


def _present(value):
    """None for a missing cell (pandas fills one with NaN or None)."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _bytes(row: dict, column: str) -> bytes:
    value = _present(row.get(column))
    if not isinstance(value, bytes | bytearray):
        raise InvalidInput(f"{column} must be the file's bytes, got {type(value).__name__}")
    return bytes(value)


# --- logging -----------------------------------------------------------------------------


def signature(generator: bool):
    """Inputs -> mp4 bytes; a generator's (reference_image, driving_video, prompt, seed?),
    a VAE's (driving_video)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    video = ColSpec("binary", "driving_video")
    inputs = [ColSpec("binary", "reference_image"), video, ColSpec("string", "prompt"),
              ColSpec("long", "seed", required=False)] if generator else [video]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("binary")]))


def input_example(frames: int, generator: bool) -> pd.DataFrame:
    """A real photo and `frames` frames of real footage (288 px high, to stay small)."""
    import pandas as pd

    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=frames, size=288)
    row = {"driving_video": encode_mp4(clip.frames, clip.fps, quality=5)}
    if generator:
        row = {"reference_image": sample_data("opencv-doc/basketball1.png").read_bytes(),
               **row, "prompt": "a person walking", "seed": 0}
    return pd.DataFrame([row])


def pip_requirements() -> list[str]:
    """The project's requirements (its installed metadata, from pyproject.toml: core +
    `models`) pinned to the versions installed here (torch without its local build label, so
    a CUDA wheel satisfies it). Read from the metadata, not the file: an image installs the
    project as a wheel, without its pyproject.toml."""
    pinned = []
    for spec in metadata.requires("motioncontrol") or []:
        requirement = Requirement(spec)
        marker = requirement.marker
        if marker is not None and not marker.evaluate({"extra": "models"}):
            continue  # another extra's (train, serve, dev, …)
        try:
            pinned.append(f"{requirement.name}=="
                          f"{metadata.version(requirement.name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pinned.append(str(requirement).split(";")[0].strip())
    return pinned


def log_pipeline_model(parts: dict[str, Part], name: str = "model", text=None):
    """Log `{"dit": (module, meta), "vae": (module, meta)}` (a VAE run: only "vae") and a
    DiT's TextEncoder `text` (None: MiniLM) as a pyfunc model of the active run; returns
    MLflow's ModelInfo (`.model_uri` to register).
    MLflow loads the logged model and runs it on its input example before returning (a
    failure is logged as a warning): one clip's generation."""
    import mlflow.pyfunc

    generator = "dit" in parts
    frames = int(parts["dit" if generator else "vae"][1]["frames"])
    with tempfile.TemporaryDirectory(prefix="mc-log-") as tmp:
        folder = Path(tmp) / WEIGHTS
        save_parts(folder, parts, text)
        return mlflow.pyfunc.log_model(
            name=name, loader_module=__name__, data_path=str(folder),
            signature=signature(generator), input_example=input_example(frames, generator),
            pip_requirements=pip_requirements())
