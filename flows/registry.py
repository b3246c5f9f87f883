"""The model registry: registered versions, aliases, and a version loaded ready to run.

Serving, evaluation and distillation start from the MLflow registry, never from a training
run's internals. A version of `motioncontrol-teacher` (a VAE or DiT stage) or
`motioncontrol-student` is an MLflow pyfunc model that holds its own weights
(flows/pyfunc_model.py): safetensors, and for each part a meta that says how to rebuild it
(`model_meta` writes it, `build_model` reads it). The meta is self-describing (kind, stage,
model config, resolution, frames, sampler steps and guidance), so a loaded version needs
nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from pydantic import TypeAdapter

from flows.errors import MotionControlError
from flows.profiles import RunConfig
from flows.settings import ALIASES, TEACHER_MODEL, Settings
from flows.tracking import connect

PREVIOUS_TAG = "previous_{alias}"  # model-level tag: the version an alias pointed to before


def model_uri(name: str, alias: str | None = None, version: int | str | None = None) -> str:
    if (alias is None) == (version is None):
        raise ValueError("give exactly one of alias or version")
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"


def register_version(
    settings: Settings, model_uri_or_run: str, name: str, tags: dict[str, str] | None = None,
) -> int:
    """Register a logged model (`runs:/<run_id>/<name>` or `models:/m-…`) as a new version
    of `name`; returns its number."""
    mlflow = connect(settings)
    mv = mlflow.register_model(model_uri_or_run, name, tags=tags or {})
    return int(mv.version)


def logged_model_id(mv) -> str | None:
    """The logged model (`m-…`) a registry version was made from: what metrics link to.
    MLflow 3.17's SQL registry does not store ModelVersion.model_id (it reads back None); the
    id is in the version's source, `models:/m-…`, as `register_version` was given it."""
    if mv.model_id:
        return mv.model_id
    return mv.source.removeprefix("models:/") if mv.source.startswith("models:/m-") else None


def set_alias(settings: Settings, name: str, alias: str, version: int | str) -> int | None:
    """Point `alias` at `version`; returns the version it pointed to before (or None), and
    records that one in the model tag `previous_<alias>` so a rollback is one call."""
    if alias not in ALIASES:
        raise MotionControlError(f"unknown alias {alias!r}; expected one of {ALIASES}")
    mlflow = connect(settings)
    client = mlflow.MlflowClient()
    previous = alias_version(settings, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    if previous is not None and previous != int(version):
        client.set_registered_model_tag(name, PREVIOUS_TAG.format(alias=alias), str(previous))
    return previous


def rollback_alias(settings: Settings, name: str, alias: str) -> int:
    """Move `alias` back to the version recorded before the last move."""
    mlflow = connect(settings)
    client = mlflow.MlflowClient()
    previous = client.get_registered_model(name).tags.get(PREVIOUS_TAG.format(alias=alias))
    if previous is None:
        raise MotionControlError(f"{name}@{alias} has no recorded previous version to roll "
                                 "back to")
    set_alias(settings, name, alias, previous)
    return int(previous)


def alias_version(settings: Settings, name: str, alias: str) -> int | None:
    mlflow = connect(settings)
    try:
        return int(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def load_model(settings: Settings, name: str, alias: str | None = None,
               version: int | str | None = None, flavor: str = "pyfunc"):
    """Load a registered model by alias or version (`flavor`: pyfunc, pytorch, …)."""
    mlflow = connect(settings)
    uri = model_uri(name, alias=alias, version=version)
    try:
        return getattr(mlflow, flavor).load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise MotionControlError(f"cannot load {uri}: {exc.message}") from None


# --- model versions as runnable models ------------------------------------------------

@dataclass
class ModelBundle:
    """Everything needed to generate: the DiT, its VAE, the text encoder and how to sample;
    and which registered version it is (empty for a model not registered yet)."""

    dit: torch.nn.Module
    vae: torch.nn.Module
    meta: dict = field(default_factory=dict)  # the DiT's (model_meta)
    vae_meta: dict = field(default_factory=dict)
    text: object | None = None  # the TextEncoder the DiT was trained with; None: MiniLM
    name: str = ""
    version: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    model_id: str | None = None  # the version's logged model (`m-…`): metrics link to it

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def frames(self) -> int:
        return int(self.meta["frames"])

    @property
    def steps(self) -> int:
        return int(self.meta["sampler_steps"])

    def guidance(self, naive: bool = False):
        """The teacher's multi-condition guidance (its profile's scales); a student's is
        (1, 1): one branch, the guidance is distilled into it."""
        from models.sampling import GuidanceConfig

        text_scale, reference_scale = self.meta["guidance"]
        return GuidanceConfig(text_scale=text_scale, reference_scale=reference_scale,
                              prune=not naive)

    def pipeline(self, text=None, **overrides):
        """A MotionControlPipeline over this bundle; `overrides` go to its constructor."""
        from models.pipeline import MotionControlPipeline
        from models.sampling import FlowMatchSampler
        from models.text import TextEncoder

        kwargs = {"size": self.resolution, "frames": self.frames, "steps": self.steps,
                  "guidance": self.guidance(),
                  "sampler": FlowMatchSampler(shift=self.meta["timestep_shift"]), **overrides}
        text = text or self.text or TextEncoder()
        if text.dim != self.dit.config.text_dim:
            raise MotionControlError(
                f"the text encoder gives {text.dim}-d tokens but the DiT reads "
                f"{self.dit.config.text_dim}-d: use the text encoder its version carries")
        return MotionControlPipeline(self.dit, self.vae, text, **kwargs)


def model_meta(run: RunConfig, objective: str, stage: int) -> dict:
    """How to rebuild and run the model a training run of `objective` makes: "vae" (stage
    0), "teacher" (stages 1-3), or a student from the "guidance" or "steps" distillation
    stage. Saved with its weights; `build_model` reads it."""
    if objective == "vae":
        return {"kind": "vae", "stage": 0, "config": _plain(run.vae),
                "resolution": run.resolution}
    teacher = objective == "teacher"
    # A student takes its guidance scales as an input (guidance_embed) and samples with one
    # branch; after the steps stage also with the student's few steps.
    dit = run.dit if teacher else dataclasses.replace(run.dit, guidance_embed=True)
    steps = run.sampling.student_steps if objective == "steps" else run.sampling.teacher_steps
    guidance = [run.sampling.text_scale, run.sampling.reference_scale] if teacher else [1.0, 1.0]
    return {"kind": "teacher" if teacher else "student", "stage": stage,
            "config": _plain(dit), "resolution": run.resolution,
            "frames": run.clip.frames, "sampler_steps": steps, "guidance": guidance,
            "timestep_shift": run.sampling.timestep_shift,
            **({} if teacher else {"distill_stage": objective})}


def _plain(config) -> dict:
    """A model config as JSON values (what a plan file or a served.json holds)."""
    return TypeAdapter(type(config)).dump_python(config, mode="json")


def build_model(meta: dict) -> torch.nn.Module:
    """A freshly initialised VideoVAE (a pretrained Wan VAE's architecture when the meta's
    `arch` is "wan": flows/backbone.py) or MotionDiT as `meta` describes it."""
    from models.dit import DiTConfig, MotionDiT
    from models.vae import VAEConfig, VideoVAE, WanVAEAdapter

    if meta["kind"] == "vae" and meta.get("arch") == "wan":
        return WanVAEAdapter.from_config(meta["config"])
    if meta["kind"] == "vae":
        return VideoVAE(TypeAdapter(VAEConfig).validate_python(meta["config"]))
    return MotionDiT(TypeAdapter(DiTConfig).validate_python(meta["config"]),
                     stage=int(meta["stage"]))


def resolve_version(settings: Settings, name: str, alias: str | None = None,
                    version: int | str | None = None):
    """The registry's ModelVersion for an alias or a number (exactly one)."""
    if (alias is None) == (version is None):
        raise MotionControlError("give exactly one of an alias or a version number")
    mlflow = connect(settings)
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
    client = connect(settings).MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001  (no such registered model yet)
        return None
    found = [int(v.version) for v in versions
             if all(v.tags.get(k) == str(want) for k, want in tags.items())]
    return max(found, default=None)


def load_bundle(settings: Settings, name: str = TEACHER_MODEL, alias: str | None = None,
                version: int | str | None = None) -> ModelBundle:
    """Load a registered DiT version (teacher stage >= 1, or student) with its VAE."""
    from flows.pyfunc_model import download_bundle

    mv = resolve_version(settings, name, alias, version)
    if mv.tags.get("component") == "vae":
        raise MotionControlError(f"{name} version {mv.version} is the stage-0 VAE, not a "
                                 "generator: pick a stage-3 teacher or a student")
    bundle = download_bundle(model_uri(name, version=mv.version))
    return dataclasses.replace(bundle, name=name, version=int(mv.version), tags=dict(mv.tags),
                               model_id=logged_model_id(mv))
