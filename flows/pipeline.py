"""Prefect flow `pipeline` (`motionctl pipeline`, the first half of `make demo`): every stage
from data to a promoted model, each one reused when its inputs have not changed.

    curate -> train stages 0-3 -> distill (guidance stage, steps stage) -> evaluate
           -> promote (gates -> candidate) [-> champion]

It ends in the MLflow registry (docs/architecture.md section 2): serving starts from the alias.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.settings import get_settings


@dataclass
class PipelineResult:
    dataset: str
    teacher_version: int
    student_version: int
    alias: str
    table: dict


@flow(name="pipeline")
def pipeline_flow(to: str = "champion") -> PipelineResult:
    from flows.curate import run_curation
    from flows.distill import run_distillation
    from flows.evaluate import run_evaluation
    from flows.promote import run_promotion
    from flows.train import run_training

    settings = get_settings()
    data = run_curation(settings)
    teacher = None
    for stage in (0, 1, 2, 3):
        teacher = run_training(settings, stage)
    distilled = run_distillation(settings, teacher.version)
    evaluation = run_evaluation(settings, teacher.version, distilled.student.version)
    run_promotion(settings, distilled.student.version, to="candidate")
    if to == "champion":
        run_promotion(settings, distilled.student.version, to="champion")
    return PipelineResult(f"{data.dataset}@{data.digest}", teacher.version,
                          distilled.student.version, to, evaluation["table"])
