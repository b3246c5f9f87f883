"""Prefect flow `distill` (`make distill`, `motionctl distill`): teacher -> few-step student.

The guidance stage merges the teacher's three-branch guidance into a student (one evaluation
per step); the steps stage distils that student into `student_steps` steps
(models/distill.py says how and why). Each stage is a run in the MLflow experiment
`distillation`, trained by the same worker and launcher as the teacher (checkpoints, resume,
samples, progress bar), and registered as a version of `motioncontrol-student` tagged with
its teacher version and distillation stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from prefect import flow

from flows.datasets import load_manifest
from flows.errors import MotionControlError
from flows.profiles import run_config
from flows.registry import model_meta, model_uri, resolve_version
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, Settings, get_settings
from flows.store import open_store
from flows.train import TrainResult, execute_plan, stage_version
from flows.train_plan import TrainPlan
from flows.ui import say


@dataclass
class DistillResult:
    teacher_version: int
    guidance: TrainResult  # the guidance stage's student (one branch, teacher's steps)
    student: TrainResult  # the steps stage's: the few-step student


def find_teacher(settings: Settings, version: int | None = None):
    """The teacher to distil: a given version, else the newest stage-3 one."""
    if version is not None:
        mv = resolve_version(settings, TEACHER_MODEL, version=version)
        if mv.tags.get("component") != "dit":
            raise MotionControlError(f"{TEACHER_MODEL} version {version} is not a DiT stage; "
                                     "give a stage 1-3 version")
        return int(mv.version), dict(mv.tags)
    found = stage_version(settings, 3)
    if found is None:
        raise MotionControlError("no stage-3 teacher is registered yet; run `make "
                                 "train-stage3` first (or pass --teacher-version)")
    return found, dict(resolve_version(settings, TEACHER_MODEL, version=found).tags)


def plan_distillation(settings: Settings, teacher_version: int | None = None) -> TrainPlan:
    """The guidance stage's plan; the steps stage's is derived from it once the guidance
    stage's weights exist."""
    version, tags = find_teacher(settings, teacher_version)
    teacher = model_uri(TEACHER_MODEL, version=version)  # its DiT, and the VAE it uses
    run = run_config(settings)
    stage = run.distill.guidance
    teacher_stage = int(tags["stage"])
    manifest = load_manifest(open_store(settings), settings.curate.dataset,
                             tags.get("dataset_digest"))
    return TrainPlan(
        objective="guidance", stage=teacher_stage, run_id="", dataset=manifest["dataset"],
        dataset_digest=manifest["digest"], run=run,
        model=model_meta(run, "guidance", teacher_stage),
        steps=settings.train.steps or stage.steps, lr=stage.lr,
        batch_size=settings.train.batch_size or stage.batch_size,
        # the student learns on the pairs its teacher was trained for (stage 3: cross-identity)
        cross_identity=run.train.cross_identity if teacher_stage == 3 else 0.0,
        parent_weights=teacher, teacher_weights=teacher, vae_weights=teacher,
        seed=settings.seed,
        extra={"teacher_version": version})


def run_distillation(settings: Settings, teacher_version: int | None = None,
                     force: bool = False) -> DistillResult:
    plan_distillation(settings, teacher_version)  # no teacher fails in one line, before Prefect
    return distill_flow(teacher_version=teacher_version, force=force)


@flow(name="distill")
def distill_flow(teacher_version: int | None = None, force: bool = False) -> DistillResult:
    """Distil a teacher (default: the newest stage-3 one) into a few-step student without
    CFG: the guidance stage, then the steps stage; `force` trains both again."""
    settings = get_settings()
    guidance_plan = plan_distillation(settings, teacher_version)
    teacher = int(guidance_plan.extra["teacher_version"])
    student_steps = guidance_plan.run.sampling.student_steps
    tags = {"teacher_version": str(teacher), "teacher_stage": str(guidance_plan.stage),
            "component": "dit"}
    guidance = execute_plan(
        settings, guidance_plan, experiment="distillation", run_name="guidance",
        model_name=STUDENT_MODEL, title="distillation: guidance stage",
        version_tags={**tags, "distill_stage": "guidance"}, force=force)

    stage = guidance_plan.run.distill.steps
    steps_plan = dataclasses.replace(
        guidance_plan, run_id="", objective="steps",
        model=model_meta(guidance_plan.run, "steps", guidance_plan.stage), lr=stage.lr,
        steps=settings.train.steps or stage.steps,
        batch_size=settings.train.batch_size or stage.batch_size,
        parent_weights=guidance.model_uri, teacher_weights=guidance.model_uri)
    student = execute_plan(
        settings, steps_plan, experiment="distillation", run_name="steps",
        model_name=STUDENT_MODEL,
        title=f"distillation: steps stage ({student_steps}-step student)",
        version_tags={**tags, "distill_stage": "steps",
                      "guidance_version": str(guidance.version),
                      "nfe": str(student_steps)}, force=force)
    say(f"student: {STUDENT_MODEL} version {student.version} ({student_steps} steps, no "
          f"CFG) from {TEACHER_MODEL} version {teacher}")
    return DistillResult(teacher, guidance, student)
