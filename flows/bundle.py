"""A registered model version, loaded as a ready-to-run `MotionControlPipeline`.

Serving, evaluation and distillation start from the MLflow registry, never from a training
run's internals. A version of `motioncontrol-teacher` (a DiT stage) or `motioncontrol-student`
carries tags that name its weights in the object store:

    weights       the DiT's weights (`{"state_dict", "meta"}`, meta says how to build it)
    vae_weights   the stage-0 video VAE it was trained with

The weights' meta is self-describing (preset, stage, resolution, frames, and for a student its
sampler steps and the guidance scale it was distilled with), so a bundle needs nothing else.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch

from flows.errors import MotionControlError
from flows.settings import PROFILE_CLIPS, STUDENT_MODEL, TEACHER_MODEL, Settings
from flows.store import ObjectStore, open_store
from flows.tracking import _mlflow

# Sampling defaults of a teacher (a student's come from its meta).
TEACHER_STEPS = 20
TEACHER_TEXT_SCALE = 3.0
TEACHER_REFERENCE_SCALE = 1.5


@dataclass
class ModelBundle:
    """Everything needed to generate: the DiT, its VAE, the text encoder and how to sample."""

    name: str
    version: int
    tags: dict[str, str]
    dit: torch.nn.Module
    vae: torch.nn.Module
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "student" if self.name == STUDENT_MODEL else "teacher")

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def frames(self) -> int:
        return int(self.meta["frames"])

    @property
    def steps(self) -> int:
        return int(self.meta.get("sampler_steps", TEACHER_STEPS))

    def guidance(self, naive: bool = False):
        """The teacher's multi-condition guidance; a student needs none (one branch)."""
        from models.sampling import GuidanceConfig

        if self.kind == "student":
            return GuidanceConfig(text_scale=1.0, reference_scale=1.0)
        return GuidanceConfig(text_scale=TEACHER_TEXT_SCALE,
                              reference_scale=TEACHER_REFERENCE_SCALE, prune=not naive)

    def pipeline(self, text=None, **overrides):
        """A MotionControlPipeline over this bundle; `overrides` go to its constructor."""
        from models.pipeline import MotionControlPipeline
        from models.text import TextEncoder

        kwargs = {"size": self.resolution, "frames": self.frames, "steps": self.steps,
                  "guidance": self.guidance(), **overrides}
        return MotionControlPipeline(self.dit, self.vae, text or TextEncoder(), **kwargs)


def read_weights(store: ObjectStore, key: str) -> dict:
    """`{"state_dict", "meta"}` saved by the training worker."""
    if not store.exists(key):
        raise MotionControlError(f"weights {key!r} are missing from the object store; was "
                                 "the store (MC_STORE_*) changed since training?")
    return torch.load(io.BytesIO(store.get_bytes(key)), map_location="cpu", weights_only=False)


def build_dit_from_meta(meta: dict) -> torch.nn.Module:
    from models.dit import DiTConfig, MotionDiT

    config = DiTConfig.from_preset(meta["preset"], **meta.get("dit_overrides", {}))
    return MotionDiT(config, stage=int(meta["stage"]))


def build_vae_from_meta(meta: dict) -> torch.nn.Module:
    from models.vae import VideoVAE

    return VideoVAE(meta["preset"])


def resolve_version(settings: Settings, name: str, alias: str | None = None,
                    version: int | str | None = None):
    """The registry's ModelVersion for an alias or a number (exactly one)."""
    if (alias is None) == (version is None):
        raise MotionControlError("give exactly one of an alias or a version number")
    mlflow = _mlflow(settings)
    client = mlflow.MlflowClient()
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise MotionControlError(
            f"{name} has no {what} in the registry at {mlflow.get_tracking_uri()}; list them "
            "in the MLflow UI (make stack-up) or train/promote first") from None


def newest_version(settings: Settings, name: str, **tags: str) -> int | None:
    """The highest version of `name` whose tags include `tags` (None if there is none)."""
    client = _mlflow(settings).MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001  (no such registered model yet)
        return None
    found = [int(v.version) for v in versions
             if all(v.tags.get(k) == str(want) for k, want in tags.items())]
    return max(found, default=None)


def vae_key(settings: Settings, mv) -> str:
    """The VAE of a version: its tag, or (older teacher versions) its run's parameter."""
    key = mv.tags.get("vae_weights")
    if key:
        return key
    run_id = mv.tags.get("run_id") or mv.run_id
    key = _mlflow(settings).MlflowClient().get_run(run_id).data.params.get("vae_weights") \
        if run_id else None
    if not key:
        raise MotionControlError(f"{mv.name} version {mv.version} names no VAE (tag "
                                 "vae_weights); it is not a DiT stage or student")
    return key


def load_bundle(settings: Settings, name: str = TEACHER_MODEL, alias: str | None = None,
                version: int | str | None = None) -> ModelBundle:
    """Load a registered DiT version (teacher stage >= 1, or student) with its VAE."""
    mv = resolve_version(settings, name, alias, version)
    tags = dict(mv.tags)
    if tags.get("component") == "vae":
        raise MotionControlError(f"{name} version {mv.version} is the stage-0 VAE, not a "
                                 "generator: pick a stage-3 teacher or a student")
    if "weights" not in tags:
        raise MotionControlError(f"{name} version {mv.version} has no `weights` tag; it was "
                                 "not registered by the train or distill flow")
    store = open_store(settings)
    blob = read_weights(store, tags["weights"])
    meta = dict(blob["meta"])
    meta.setdefault("frames", PROFILE_CLIPS[settings.profile][1])
    dit = build_dit_from_meta(meta)
    dit.load_state_dict(blob["state_dict"])
    vae_blob = read_weights(store, vae_key(settings, mv))
    vae = build_vae_from_meta(vae_blob["meta"])
    vae.load_state_dict(vae_blob["state_dict"])
    return ModelBundle(name, int(mv.version), tags, dit.eval(), vae.eval(), meta)


def weights_key(run_id: str) -> str:
    """Where a run's final weights live in the object store."""
    return f"checkpoints/{run_id}/final/weights.pt"


def save_weights(store: ObjectStore, key: str, module: torch.nn.Module, meta: dict) -> None:
    """The `{"state_dict", "meta"}` blob that `read_weights` and `load_bundle` read."""
    buf = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "meta": meta}, buf)
    store.put_bytes(key, buf.getvalue())


def publish_version(settings: Settings, name: str, run_id: str, dit: torch.nn.Module,
                    meta: dict, vae_weights: str, tags: dict[str, str] | None = None) -> int:
    """Save a DiT's weights under the run's checkpoints, log it as the run's model and
    register it as a new version of `name` (tags: weights, vae_weights, run_id, + `tags`).
    Call inside the active MLflow run `run_id`; returns the version number."""
    from flows.tracking import register_version

    mlflow = _mlflow(settings)
    key = weights_key(run_id)
    save_weights(open_store(settings), key, dit, meta)
    info = mlflow.pytorch.log_model(dit, name="model", serialization_format="pickle",
                                    pip_requirements=[])
    return register_version(settings, info.model_uri, name,
                            tags={"weights": key, "vae_weights": vae_weights, "run_id": run_id,
                                  "component": "dit", **(tags or {})})
