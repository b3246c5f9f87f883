"""Prefect flow `train` (`make train-stageN`, `motionctl train --stage N`).

Finds the dataset (the newest curated one) and the previous stage (through the MLflow
registry), opens or resumes the stage's MLflow run, launches the training worker
(flows/train_worker.py) under torchrun with a progress bar, and registers the result as a
version of `motioncontrol-teacher` tagged with its stage and dataset digest.

A stage already trained on the same inputs is reused; a stage whose run was killed resumes
from its last checkpoint in the object store. The reuse is the project's own (the finished
MLflow run tagged with the plan's key), not Prefect's result caching: what a stage makes is a
registered model version, which must be found from any Prefect server, including the
temporary one whose database is gone after the command.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Literal

from prefect import flow
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from flows.backbone import check_wan, load_wan_vae, uses_backbone, wan_folder, wan_vae_meta
from flows.datasets import dataset_ref, load_manifest
from flows.errors import MotionControlError
from flows.launch import launcher_for
from flows.profiles import run_config
from flows.registry import model_meta, model_uri, newest_version, register_version
from flows.settings import TEACHER_MODEL, Settings, get_settings
from flows.store import open_store
from flows.tracking import connect, ensure_experiment, start_run
from flows.train_plan import TrainPlan
from flows.ui import artifact_key, log, log_progress, report_run, say

Stage = Literal[0, 1, 2, 3]  # a choice in the Prefect UI's run form
STAGES = {
    0: "video VAE",
    1: "teacher: body",
    2: "teacher: body + face",
    3: "teacher: body + face + hands, cross-identity pairs",
}

RESUME_TAG = "mc.resume_key"
DONE_TAG = "mc.done"


@dataclass
class TrainResult:
    stage: int
    run_id: str
    version: int
    model_uri: str  # the registered version, `models:/<name>/<version>`: its weights
    reused: bool


def stage_version(settings: Settings, stage: int) -> int | None:
    """Newest registered teacher version of `stage`."""
    return newest_version(settings, TEACHER_MODEL, stage=str(stage))


def plan_stage(settings: Settings, stage: int) -> TrainPlan:
    if stage not in STAGES:
        raise MotionControlError(f"unknown stage {stage}; stages are {sorted(STAGES)}")
    run = run_config(settings)
    stage_cfg = run.train.stages[stage]
    manifest = load_manifest(open_store(settings), settings.curate.dataset)
    parent = vae = None
    if stage >= 1:
        found = stage_version(settings, 0)
        if found is None:
            raise MotionControlError("stage 0 (the video VAE) is not trained yet; run "
                                     "`make train-stage0` first")
        vae = model_uri(TEACHER_MODEL, version=found)
    if stage >= 2:
        found = stage_version(settings, stage - 1)
        if found is None:
            raise MotionControlError(f"stage {stage - 1} is not trained yet; run "
                                     f"`make train-stage{stage - 1}` first")
        parent = model_uri(TEACHER_MODEL, version=found)
    objective = "vae" if stage == 0 else "teacher"
    teacher = stage >= 1
    model = model_meta(run, objective, stage)
    steps = settings.train.steps or stage_cfg.steps
    backbone = None
    if uses_backbone(run) and stage <= 1:  # checked here: bad weights stop before the worker
        folder = wan_folder(settings)
        check_wan(folder, run)
        backbone = settings.train.wan_weights
        if stage == 0:  # the pretrained VAE is registered, not trained
            model, steps = wan_vae_meta(folder, run), 0
    return TrainPlan(
        objective=objective, stage=stage, run_id="", dataset=manifest["dataset"],
        dataset_digest=manifest["digest"], run=run, model=model, steps=steps, lr=stage_cfg.lr,
        batch_size=settings.train.batch_size or stage_cfg.batch_size,
        # stage 3 learns identity-agnostic motion from drivers of other characters
        cross_identity=run.train.cross_identity if stage == 3 else 0.0,
        static_prob=run.train.static_prob if teacher else 0.0,
        condition_dropout=teacher, parent_weights=parent, vae_weights=vae,
        backbone_weights=backbone, seed=settings.seed)


def resume_key(plan: TrainPlan) -> str:
    """Same key, same training: the plan without its run id."""
    return hashlib.sha256(dataclasses.replace(plan, run_id="").to_json().encode()).hexdigest()[:16]


def find_run(settings: Settings, key: str, experiment: str = "teacher"):
    mlflow = connect(settings)
    ensure_experiment(settings, experiment)
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list",
                              filter_string=f"tags.`{RESUME_TAG}` = '{key}'",
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def run_training(settings: Settings, stage: int, force: bool = False) -> TrainResult:
    plan_stage(settings, stage)  # a missing parent or dataset fails in one line, before Prefect
    return train_flow(stage=stage, force=force)


@flow(name="train")
def train_flow(stage: Stage, force: bool = False) -> TrainResult:
    """Train one stage of the teacher (0 the video VAE, 1 body, 2 + face, 3 + hands on
    cross-identity pairs) on the newest curated dataset; `force` trains again even when a
    run with the same inputs finished."""
    settings = get_settings()
    plan = plan_stage(settings, stage)
    return execute_plan(settings, plan, experiment="teacher", run_name=f"stage{stage}",
                        model_name=TEACHER_MODEL, title=f"stage {stage} ({STAGES[stage]})",
                        version_tags={"stage": str(stage),
                                      "component": "vae" if stage == 0 else "dit"},
                        force=force)


def execute_plan(settings: Settings, plan: TrainPlan, *, experiment: str, run_name: str,
                 model_name: str, title: str, version_tags: dict[str, str],
                 force: bool = False) -> TrainResult:
    """Run one plan to its registered version: reuse a finished run with the same inputs,
    resume a killed one from its last checkpoint, else start a run in `experiment`; launch
    the worker under a progress bar; register the run's model as a version of `model_name`
    (tags: dataset digest, run id, + `version_tags`)."""
    key = resume_key(plan)
    previous = None if force else find_run(settings, key, experiment)
    if previous is not None and previous.data.tags.get(DONE_TAG) == "true":
        tags = previous.data.tags
        say(f"{title} already trained on these inputs: run {previous.info.run_id}, "
              f"{model_name} version {tags['mc.version']} (reused)")
        version = int(tags["mc.version"])
        return TrainResult(plan.stage, previous.info.run_id, version,
                           model_uri(model_name, version=version), True)
    if previous is not None:
        plan.run_id = previous.info.run_id
        say(f"resuming {title}, run {plan.run_id}, from its last checkpoint")
    else:
        with start_run(settings, experiment, run_name=run_name,
                       dataset=dataset_ref(settings, plan.dataset, plan.dataset_digest),
                       tags={RESUME_TAG: key, "mc.stage": str(plan.stage),
                             "mc.objective": plan.objective},
                       params={"stage": plan.stage, "objective": plan.objective,
                               "steps": plan.steps, "lr": plan.lr,
                               "batch_size": plan.batch_size, "profile": plan.run.profile,
                               "resolution": plan.run.resolution,
                               "cross_identity": plan.cross_identity,
                               "parent_weights": plan.parent_weights or "",
                               "teacher_weights": plan.teacher_weights or "",
                               "vae_weights": plan.vae_weights or ""}) as run:
            plan.run_id = run.info.run_id
            # every number the run trains with, in one file (flows/profiles.py)
            connect(settings).log_dict(dataclasses.asdict(plan.run), "run_config.json")

    plan_path = settings.home / "tmp" / "train" / f"{plan.run_id}.json"
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(plan.to_json())
    if plan.objective == "vae" and plan.backbone_weights:
        done = _register_pretrained_vae(settings, plan)
    else:
        done = _run_with_progress(settings, plan, str(plan_path), run_name)

    version = register_version(
        settings, done["model_uri"], model_name,
        tags={"dataset_digest": plan.dataset_digest, "run_id": plan.run_id, **version_tags})
    client = connect(settings).MlflowClient()
    for tag, value in ((DONE_TAG, "true"), ("mc.version", str(version))):
        client.set_tag(plan.run_id, tag, value)
    say(f"{title}: registered {model_name} version {version}")
    metrics = connect(settings).MlflowClient().get_run(plan.run_id).data.metrics
    report_run(settings, artifact_key("training", run_name), plan.run_id,
               [{"figure": "registered", "value": f"{model_name} version {version}"},
                *({"figure": k, "value": f"{v:.6g}"} for k, v in sorted(metrics.items()))],
               f"{title}: the run's final figures")
    return TrainResult(plan.stage, plan.run_id, version, model_uri(model_name, version=version),
                       False)


def _register_pretrained_vae(settings: Settings, plan: TrainPlan) -> dict:
    """Stage 0 of a profile with a pretrained backbone: its VAE becomes the run's model, as
    a trained one would (the same files, so every later step reads it the same way)."""
    from flows.pyfunc_model import log_pipeline_model

    say(f"stage 0: registering the pretrained VAE of {plan.backbone_weights}")
    vae = load_wan_vae(wan_folder(settings, plan.backbone_weights))
    meta = {**plan.model, "frames": plan.run.clip.frames, "dataset_digest": plan.dataset_digest}
    mlflow = connect(settings)
    with mlflow.start_run(run_id=plan.run_id):
        mlflow.log_param("pretrained_vae", f"{plan.backbone_weights}/vae")
        info = log_pipeline_model({"vae": (vae, meta)})
    return {"model_uri": info.model_uri}


def _run_with_progress(settings: Settings, plan: TrainPlan, plan_path: str, label: str) -> dict:
    """Run the worker under a progress bar; returns its final ("done") event."""
    final: dict = {}
    columns = (TextColumn("[bold]{task.fields[label]}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("loss {task.fields[loss]:.4f}"),
               TextColumn("{task.fields[rate]:.2f} samples/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task("train", total=plan.steps, label=label, loss=float("nan"),
                                rate=0.0)

        def on_event(event: dict) -> None:
            if "step" in event:
                progress.update(bar, completed=event["step"])
            if event.get("event") == "step":
                progress.update(bar, loss=event["loss"], rate=event["samples_per_s"])
                log_progress(event["step"], plan.steps,
                             f"{label}: step {event['step']}/{plan.steps}, loss "
                             f"{event['loss']:.4f}, {event['samples_per_s']:.2f} samples/s")
            elif event.get("event") in ("resumed", "checkpoint"):
                progress.console.print(f"{event['event']} at step {event['step']}")
                log(f"{label}: {event['event']} at step {event['step']}")
            elif event.get("event") == "done":
                final.update(event)

        launcher_for(settings)(settings, plan.to_json(), plan_path,
                               settings.home / "tmp" / "train" / f"{plan.run_id}.log", on_event)
    if "model_uri" not in final:
        raise MotionControlError("the training worker ended without registering its model; "
                                 "see its log above")
    return final
