"""Prefect flow `distill` (`make distill`, `motionctl distill`): teacher -> few-step student.

Stage A merges the teacher's three-branch guidance into a student (one evaluation per step);
stage B distils stage A into `student_steps` steps (models/distill.py says how and why). Each
stage is a run in the MLflow experiment `distillation`, trained by the same worker and
launcher as the teacher (checkpoints, resume, samples, progress bar), and registered as a
version of `motioncontrol-student` tagged with its teacher version and distillation stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from prefect import flow

from flows.bundle import resolve_version, vae_key
from flows.datasets import load_manifest
from flows.errors import MotionControlError
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, Settings, get_settings
from flows.store import open_store
from flows.train import TrainResult, execute_plan, stage_version, train_config
from flows.train_config import TrainPlan

DISTILL_STAGES = {"guidance": "distill_guidance", "steps": "distill_steps"}


@dataclass
class DistillResult:
    teacher_version: int
    guidance: TrainResult  # stage A
    student: TrainResult  # stage B, the few-step student


def find_teacher(settings: Settings, version: int | None = None):
    """The teacher to distil: a given version, else the newest stage-3 one."""
    if version is not None:
        mv = resolve_version(settings, TEACHER_MODEL, version=version)
        if mv.tags.get("component") != "dit":
            raise MotionControlError(f"{TEACHER_MODEL} version {version} is not a DiT stage; "
                                     "give a stage 1-3 version")
        return int(mv.version), dict(mv.tags), mv
    found = stage_version(settings, 3)
    if found is None:
        raise MotionControlError("no stage-3 teacher is registered yet; run `make "
                                 "train-stage3` first (or pass --teacher-version)")
    return found[0], found[1], resolve_version(settings, TEACHER_MODEL, version=found[0])


def plan_distillation(settings: Settings, teacher_version: int | None = None) -> TrainPlan:
    """Stage A's plan; stage B's is derived from it once A's weights exist."""
    version, tags, mv = find_teacher(settings, teacher_version)
    cfg = train_config(settings)
    stage = cfg.distill_stages["guidance"]
    manifest = load_manifest(open_store(settings), settings.curate.dataset,
                             tags.get("dataset_digest"))
    return TrainPlan(stage=int(tags["stage"]), run_id="", dataset=manifest["dataset"],
                     dataset_digest=manifest["digest"], config=cfg,
                     steps=settings.train.steps or stage.steps, lr=stage.lr,
                     batch_size=settings.train.batch_size or stage.batch_size,
                     parent_weights=tags["weights"], teacher_weights=tags["weights"],
                     vae_weights=vae_key(settings, mv), seed=settings.seed,
                     task=DISTILL_STAGES["guidance"], extra={"teacher_version": version})


def run_distillation(settings: Settings, teacher_version: int | None = None,
                     force: bool = False) -> DistillResult:
    plan = plan_distillation(settings, teacher_version)  # fails in one line, before Prefect
    return distill_flow(plan_json=plan.to_json(), force=force)


@flow(name="distill")
def distill_flow(plan_json: str, force: bool = False) -> DistillResult:
    settings = get_settings()
    plan_a = TrainPlan.from_json(plan_json)
    teacher = int(plan_a.extra["teacher_version"])
    tags = {"teacher_version": str(teacher), "teacher_stage": str(plan_a.stage),
            "component": "dit"}
    guidance = execute_plan(
        settings, plan_a, experiment="distillation", run_name="A-guidance-merge",
        model_name=STUDENT_MODEL, title="distillation A (guidance merge)",
        version_tags={**tags, "distill_stage": "guidance"}, force=force)

    stage = plan_a.config.distill_stages["steps"]
    plan_b = dataclasses.replace(
        plan_a, run_id="", task=DISTILL_STAGES["steps"], lr=stage.lr,
        steps=settings.train.steps or stage.steps,
        batch_size=settings.train.batch_size or stage.batch_size,
        parent_weights=guidance.weights, teacher_weights=guidance.weights)
    student = execute_plan(
        settings, plan_b, experiment="distillation", run_name="B-few-steps",
        model_name=STUDENT_MODEL,
        title=f"distillation B ({plan_a.config.student_steps}-step student)",
        version_tags={**tags, "distill_stage": "steps",
                      "guidance_version": str(guidance.version),
                      "nfe": str(plan_a.config.student_steps)}, force=force)
    print(f"student: {STUDENT_MODEL} version {student.version} "
          f"({plan_a.config.student_steps} steps, no CFG) from {TEACHER_MODEL} "
          f"version {teacher}")
    return DistillResult(teacher, guidance, student)
