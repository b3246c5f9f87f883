"""Prefect flow `pipeline` (`motionctl pipeline`, the first half of `make demo`): every stage
from data to a promoted model, each one reused when its inputs have not changed.

    curate -> train stages 0-3 -> distill (guidance stage, steps stage) -> evaluate
           -> promote (gates -> candidate) [-> champion]

It ends in the MLflow registry (docs/architecture.md section 2): serving starts from the alias.

In MLflow the pipeline is one run (experiment `pipeline`) with each stage's run nested under
it; every stage's run id is also a tag of it (`mc.stage.<stage>.run_id`), so a reused stage,
whose run an earlier pipeline made, is found the same way as a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows import ui
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, Alias, Settings, get_settings
from flows.tracking import pipeline_run, record_stage


@dataclass
class PipelineResult:
    dataset: str
    teacher_version: int
    student_version: int
    alias: str
    table: dict
    run_id: str  # the pipeline's MLflow run


def evaluation_run(settings: Settings, name: str, version: int) -> str | None:
    """The run that evaluated a model version (the evaluate flow tags it on the version)."""
    from flows.registry import resolve_version

    return resolve_version(settings, name, version=version).tags.get("eval.run_id")


@flow(name="pipeline")
def pipeline_flow(to: Alias = "champion") -> PipelineResult:
    """Every stage from curation to a promoted student, each reused when its inputs have not
    changed; the new student ends at alias `to`."""
    from flows.curate import run_curation
    from flows.distill import run_distillation
    from flows.evaluate import run_evaluation
    from flows.promote import run_promotion
    from flows.train import run_training

    settings = get_settings()
    with pipeline_run(settings) as run:
        ui.link_run(settings, "pipeline-mlflow-run", run.info.run_id,
                    "the pipeline's MLflow run, with each stage's run nested under it")
        data = run_curation(settings)
        record_stage(settings, "curate", data.mlflow_run_id)
        teacher = None
        for stage in (0, 1, 2, 3):
            teacher = run_training(settings, stage)
            record_stage(settings, f"stage{stage}", teacher.run_id)
        distilled = run_distillation(settings, teacher.version)
        record_stage(settings, "guidance", distilled.guidance.run_id)
        record_stage(settings, "steps", distilled.student.run_id)
        evaluation = run_evaluation(settings, teacher.version, distilled.student.version)
        for stage, name, version in (("evaluate-teacher", TEACHER_MODEL, teacher.version),
                                     ("evaluate-student", STUDENT_MODEL,
                                      distilled.student.version)):
            record_stage(settings, stage, evaluation_run(settings, name, version))
        run_promotion(settings, distilled.student.version, to="candidate")
        if to == "champion":
            run_promotion(settings, distilled.student.version, to="champion")
    return PipelineResult(f"{data.dataset}@{data.digest}", teacher.version,
                          distilled.student.version, to, evaluation["table"],
                          run.info.run_id)
