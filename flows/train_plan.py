"""The plan of one training run: written by the train and distill flows, read by every
worker rank (a JSON file, so the same worker runs under torchrun here and in a pod)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import TypeAdapter

from flows.profiles import RunConfig

# What a run optimises (models/objectives.py; flows/train_worker.py RUNS builds each):
#   vae        stage 0: the video VAE
#   teacher    stages 1-3: the teacher DiT (body, + face, + hands)
#   guidance   distillation, guidance stage: the teacher's CFG merged into a student
#   steps      distillation, steps stage: a few-step student
Objective = Literal["vae", "teacher", "guidance", "steps"]


@dataclass
class TrainPlan:
    objective: Objective
    stage: int  # the teacher stage trained, or (distillation) the teacher's stage
    run_id: str  # MLflow run id; checkpoints live under checkpoints/<run_id>/
    dataset: str
    dataset_digest: str
    run: RunConfig  # the profile's config, overrides applied
    model: dict  # what the run trains and saves: flows.registry.model_meta
    steps: int
    lr: float
    batch_size: int  # per rank
    # The data the objective sees. Cross-identity pairs (the driver is another character
    # doing the same motion) teach identity-agnostic motion: stage 3 and the students.
    cross_identity: float = 0.0
    static_prob: float = 0.0  # still clips with zero intensity (teacher stages)
    condition_dropout: bool = False  # per-condition dropout for CFG (teacher stages)
    # Registered models (`models:/<name>/<version>`, flows/pyfunc_model.py) whose weights
    # the run reads:
    parent_weights: str | None = None  # the DiT the model starts from
    vae_weights: str | None = None  # the VAE (DiT runs): stage 0's, or the teacher's
    teacher_weights: str | None = None  # distillation: the frozen DiT to imitate
    # The pretrained backbone (MC_TRAIN__WAN_WEIGHTS, flows/backbone.py) stage 0 registers
    # and stage 1 starts from, with its text encoder; later runs read their parent's.
    backbone_weights: str | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return _ADAPTER.dump_json(self, indent=1).decode()

    @classmethod
    def from_json(cls, text: str) -> TrainPlan:
        return _ADAPTER.validate_json(text)


_ADAPTER = TypeAdapter(TrainPlan)
