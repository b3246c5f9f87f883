"""Training hyperparameters: one typed preset per profile, a stage table, and the plan that the
train flow hands to the worker (a JSON file, so the same worker runs locally and in a pod)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

TASKS = {
    "teacher": "a teacher stage (flows/train.py)",
    "distill_guidance": "distillation A: guidance merged into the student",
    "distill_steps": "distillation B: a few-step student",
}
STAGES = {
    0: "video VAE",
    1: "teacher: body",
    2: "teacher: body + face",
    3: "teacher: body + face + hands, cross-identity pairs",
}


@dataclass(frozen=True)
class StageConfig:
    steps: int
    lr: float
    batch_size: int


@dataclass(frozen=True)
class TrainConfig:
    """Everything a stage's training run needs besides its data and parent."""

    model_preset: str  # DIT_PRESETS / VAE_PRESETS key
    resolution: int  # px, square; clips are resized to it
    stages: dict[int, StageConfig]
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    zero_stage: int = 1
    bf16: bool = False  # CPUs here lack fast bf16; True on GPUs
    log_every: int = 5
    val_every: int = 50
    val_batches: int = 2
    sample_every: int = 100
    sample_steps: int = 20  # Euler steps of the 3-branch CFG sampler for logged samples
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    kl_weight: float = 1e-4  # stage 0
    region_alpha: float = 1.0  # MotionCharacter region-aware weighting
    id_every: int = 25  # ID-consistency loss on decoded frames every N steps
    id_weight: float = 0.05
    static_prob: float = 0.1  # zero-intensity calibration clips
    cross_identity: float = 0.5  # stage 3
    text_scale: float = 3.0  # sampling guidance
    reference_scale: float = 1.5
    timestep_shift: float = 1.0
    # Distillation (flows/distill.py): stage A merges guidance, stage B cuts the steps.
    distill_stages: dict[str, StageConfig] = field(default_factory=lambda: {
        "guidance": StageConfig(150, 5e-4, 4), "steps": StageConfig(200, 5e-4, 4)})
    student_steps: int = 4  # NFE of the student
    teacher_steps: int = 48  # Euler steps of the stage-A model over the student's segments


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # 2 CPU cores (two ranks, batch 4 each): stages 0-3 within 45 minutes and the whole demo
    # within 60 on 64² px, 17-frame clips. The DiT is far from converged at this budget, so
    # its stages get most of the time at a high constant-ish lr: 1200 steps at 1e-3 from
    # scratch took held-out sample SSIM to 0.36, where 300/200/300 steps at 1e-3/5e-4/5e-4
    # gave 0.11. The VAE gains little over its residual shortcut in minutes (L1 0.0887 ->
    # 0.0867 in 300 steps), so stage 0 stays short.
    "tiny": TrainConfig(
        model_preset="tiny", resolution=64,
        stages={0: StageConfig(150, 5e-4, 4), 1: StageConfig(1000, 1e-3, 4),
                2: StageConfig(500, 1e-3, 4), 3: StageConfig(800, 1e-3, 4)},
        val_every=100, sample_every=400, checkpoint_every=100,
        distill_stages={"guidance": StageConfig(100, 5e-4, 4), "steps": StageConfig(150, 5e-4, 4)},
    ),
    "small": TrainConfig(
        model_preset="small", resolution=256, zero_stage=2, bf16=True,
        stages={0: StageConfig(20_000, 2e-4, 8), 1: StageConfig(30_000, 1e-4, 8),
                2: StageConfig(20_000, 1e-4, 8), 3: StageConfig(30_000, 1e-4, 8)},
        val_every=500, sample_every=2000, checkpoint_every=1000, log_every=20, id_every=100,
        distill_stages={"guidance": StageConfig(5_000, 5e-5, 8),
                        "steps": StageConfig(10_000, 5e-5, 8)},
    ),
    "base": TrainConfig(
        model_preset="base", resolution=512, zero_stage=2, bf16=True,
        stages={0: StageConfig(0, 0.0, 1), 1: StageConfig(50_000, 5e-5, 32),
                2: StageConfig(30_000, 5e-5, 32), 3: StageConfig(50_000, 5e-5, 32)},
        val_every=1000, sample_every=5000, checkpoint_every=1000, log_every=50, id_every=200,
        distill_stages={"guidance": StageConfig(10_000, 2e-5, 32),
                        "steps": StageConfig(20_000, 2e-5, 32)},
    ),
}


@dataclass
class TrainPlan:
    """What one run of one stage does; written by the flow, read by every worker rank."""

    stage: int
    run_id: str  # MLflow run id; checkpoints live under checkpoints/<run_id>/
    dataset: str
    dataset_digest: str
    config: TrainConfig
    steps: int
    lr: float
    batch_size: int
    parent_weights: str | None = None  # object-store key of the previous stage's weights
    vae_weights: str | None = None  # object-store key of the stage-0 VAE (stages >= 1)
    task: str = "teacher"  # or "distill_guidance", "distill_steps" (TASKS)
    teacher_weights: str | None = None  # distillation: the frozen model to imitate
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainPlan:
        data = json.loads(text)
        cfg = data.pop("config")
        cfg["stages"] = {int(k): StageConfig(**v) for k, v in cfg["stages"].items()}
        cfg["distill_stages"] = {k: StageConfig(**v) for k, v in cfg["distill_stages"].items()}
        return cls(config=TrainConfig(**cfg), **data)
