"""One run config per profile: every number a profile trains and samples with, in one place.

Read one function top to bottom to know what a profile does (as torchtitan's
`llama3_debugmodel()` or nanoGPT's `config/train_shakespeare_char.py`):

    debug   unit tests: the smallest models that exercise every code path (diffusers-test-sized)
    tiny    2 CPU cores: the whole pipeline (`make demo`) within an hour
    small   one GPU
    base    a GPU cluster, Wan2.1-1.3B-sized DiT

`run_config(settings)` returns the profile's config with the user's overrides applied: first
an override file (`MC_RUN_CONFIG`, TOML or JSON, any RunConfig field, nested), then the
`MC_TRAIN__*` and `MC_CURATE__CLIP_*` settings. The train and distill flows put the whole
config into the plan they hand to the worker, so a worker (locally or in a pod) trains exactly
it. An override file, e.g. the base profile's code path at CPU size:

    # base-cpu.toml
    resolution = 64
    clip = {size = 64, frames = 9, fps = 12.0}
    vae = {latent_channels = 4}
    dit = {dim = 32, depth = 2, heads = 2, ffn_dim = 64, text_dim = 32}
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from flows.errors import MotionControlError
from models.data.sources import ClipSpec
from models.dit import DiTConfig
from models.losses import LossWeighting
from models.vae import VAEConfig

PROFILES = ("debug", "tiny", "small", "base")


@dataclass(frozen=True)
class StageConfig:
    steps: int
    lr: float
    batch_size: int  # per rank


@dataclass(frozen=True)
class SamplingConfig:
    """How a teacher samples (logged samples, evaluation, serving a teacher). A student
    samples with `student_steps` and one branch: its guidance is distilled into it."""

    teacher_steps: int = 20  # Euler steps; flow matching needs far fewer than DDPM
    text_scale: float = 3.0  # CFG on the prompt
    reference_scale: float = 1.5  # CFG on the reference image (identity)
    timestep_shift: float = 1.0  # SD3/Wan shift of the schedule towards noise; 1 = none
    student_steps: int = 4  # NFE of the distilled student (the report's >= 10x)


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation of every stage: what changes per stage is in `stages`."""

    stages: dict[int, StageConfig]  # 0 = the video VAE, 1 body, 2 + face, 3 + hands
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.99  # the EMA weights are what a stage registers
    zero_stage: int = 1  # DeepSpeed ZeRO: optimizer states sharded across ranks
    bf16: bool = False  # bf16 autocast of the forward on GPUs (ignored on CPUs: no fast bf16)
    activation_checkpointing: bool = False  # recompute the DiT blocks in backward: memory
    compile: bool = False  # torch.compile the model (DeepSpeed's engine.compile)
    log_every: int = 5
    val_every: int = 50
    val_batches: int = 2
    sample_every: int = 100
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    kl_weight: float = 1e-4  # stage 0: small, the latents only need to stay bounded
    region_alpha: float = 1.0  # MotionCharacter region-aware loss: moving pixels weigh more
    loss_weighting: LossWeighting = "velocity"  # or "clean" (models.losses.time_weights)
    id_every: int = 25  # ID-consistency loss (decodes frames: costly) every N steps
    id_weight: float = 0.05
    static_prob: float = 0.1  # still clips with zero intensity calibrate the intensity knob
    cross_identity: float = 0.5  # stage 3 and students: driver of another character


@dataclass(frozen=True)
class DistillConfig:
    """Distillation (flows/distill.py, models/distill.py): the guidance stage merges the
    teacher's CFG into the student, the steps stage cuts its sampling to `student_steps`."""

    guidance: StageConfig
    steps: StageConfig
    segment_steps: int = 48  # Euler steps of the guidance-stage model over the student's steps
    text_range: tuple[float, float] = (1.0, 4.0)  # guidance scales the student learns
    reference_range: tuple[float, float] = (1.0, 2.0)


@dataclass(frozen=True)
class RunConfig:
    profile: str
    clip: ClipSpec  # what curation writes
    resolution: int  # px, square: what the VAE and DiT see (clips are resized to it)
    vae: VAEConfig
    dit: DiTConfig
    train: TrainConfig
    distill: DistillConfig
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # The pretrained backbone the profile starts from (flows/backbone.py): "wan" = Wan2.x's
    # VAE registered as stage 0, its DiT weights under stage 1, its umT5 text encoder;
    # None = trained from scratch, MiniLM text.
    backbone: str | None = None


def _dit(vae: VAEConfig, sampling: SamplingConfig, **sizes) -> DiTConfig:
    """A DiT over `vae`'s latents; a student's default guidance is the teacher's."""
    return DiTConfig(latent_channels=vae.latent_channels,
                     temporal_factor=vae.temporal_factor, spatial_factor=vae.spatial_factor,
                     default_guidance=(sampling.text_scale, sampling.reference_scale), **sizes)


def debug() -> RunConfig:
    """Unit and integration tests: every path in milliseconds, sized like diffusers' test
    models. Not meant to learn."""
    vae = VAEConfig(latent_channels=4, base_channels=4, channel_mult=(1, 1, 1),
                    spatial_down=(True, True), temporal_down=(True, True), patch_size=2,
                    num_res_blocks=1, attention=False, norm_groups=4)
    sampling = SamplingConfig(teacher_steps=2, student_steps=2)
    return RunConfig(
        profile="debug", clip=ClipSpec(size=64, frames=9, fps=12.0), resolution=64,
        vae=vae,
        dit=_dit(vae, sampling, patch_size=(1, 2, 2), dim=32, depth=2, heads=2, ffn_dim=64,
                 face_every=1, freq_dim=32, pose_width=4, appearance_width=4),
        train=TrainConfig(stages={s: StageConfig(4, 1e-3, 2) for s in range(4)},
                          warmup_steps=1, val_every=2, sample_every=4, checkpoint_every=2,
                          log_every=1, id_every=2),
        distill=DistillConfig(guidance=StageConfig(2, 1e-3, 2), steps=StageConfig(2, 1e-3, 2),
                              segment_steps=4),
        sampling=sampling)


def tiny() -> RunConfig:
    """2 CPU cores, two ranks with batch 4: the whole demo within an hour. Clips are curated
    at 128 px (curation and MediaPipe need the detail) and trained at 64 px.

    The design that made the tiny model animate (docs/training.md#the-tiny-design), measured
    on held-out pairs: the VAE halves space only (x4 and x8 lose the pose: the ground truth
    through them scores pose PCK 0), and the DiT starts from the reference warped to the
    target pose (`reference_prior = "warp"`, the TPS baseline through the VAE) and learns
    what one smooth warp cannot draw. From scratch the same budget drew grey ghosts, and
    starting from the still reference drew the reference, unmoved."""
    # The residual shortcut is what makes the VAE learn in minutes (exact pixels, averaged
    # over each group of 4 frames, in its first 12 channels): after 60 steps the ground truth
    # through it keeps SSIM 0.93 on the held-out pairs. 17 x 64² clips -> 12 x 5 x 32 x 32.
    vae = VAEConfig(latent_channels=12, base_channels=16, channel_mult=(1, 2, 4),
                    spatial_down=(False, False), temporal_down=(True, True), patch_size=2,
                    num_res_blocks=1, attention=False, norm_groups=8, shortcut=True)
    sampling = SamplingConfig()
    return RunConfig(
        profile="tiny", clip=ClipSpec(size=128, frames=17, fps=12.0), resolution=64,
        vae=vae,
        # 5 x 8 x 8 tokens a clip (patch 4 on 32² latents): 2.2M parameters. still_sigma
        # 0.01: the sampler's noise is what the prior's spread lets through to the output,
        # and this budget does not teach the network to remove it. Benchmark SSIM / LPIPS /
        # pose PCK: 0.1 -> 0.60 / 0.39 / 0.65 (a whole demo); after 300 stage-1 steps,
        # 0.03 -> 0.79 / 0.28 / 0.76, 0.01 -> 0.81 / 0.21 / 0.79 (TPS 0.78 / 0.23 / 0.38,
        # static 0.76 / 0.24 / 0.61; docs/training.md).
        dit=_dit(vae, sampling, patch_size=(1, 4, 4), dim=128, depth=4, heads=4, ffn_dim=512,
                 face_every=2, reference_skip=True, reference_prior="warp", still_sigma=0.01),
        train=TrainConfig(
            # Starting from the warp, held-out samples are best early, so the stages stay
            # short, and stages 2-3 only fine-tune: at lr 1e-3 they took the benchmark
            # SSIM / LPIPS from 0.81 / 0.21 after stage 1 to 0.73 / 0.35; at 2e-4 to
            # 0.805 / 0.24 (docs/training.md#the-priors-spread-still_sigma-001).
            stages={0: StageConfig(60, 5e-4, 4), 1: StageConfig(400, 1e-3, 4),
                    2: StageConfig(200, 2e-4, 4), 3: StageConfig(300, 2e-4, 4)},
            # The plain velocity loss weighs the nearly clean times 1/t² more: there the
            # network learned to copy x_t, seams of its 4x4 patches and all, and its samples
            # wore a patch grid (stage 1, held-out LPIPS 0.244). Weighing the clean-clip
            # error equally at every t: 0.185, the warp prior's 0.168
            # (docs/training.md#the-loss-weighting-clean).
            loss_weighting="clean",
            val_every=100, sample_every=300, checkpoint_every=100),
        distill=DistillConfig(guidance=StageConfig(100, 5e-4, 4),
                              steps=StageConfig(150, 5e-4, 4)),
        sampling=sampling)


def small() -> RunConfig:
    """One GPU: 256² px, 49 frames; Wan 2.1's VAE layout at 2/3 of its width."""
    vae = VAEConfig(latent_channels=16, base_channels=64)
    sampling = SamplingConfig()
    return RunConfig(
        profile="small", clip=ClipSpec(size=256, frames=49, fps=24.0), resolution=256,
        vae=vae,
        dit=_dit(vae, sampling, patch_size=(1, 2, 2), dim=512, depth=12, heads=8,
                 ffn_dim=2048, face_every=3, pose_width=32, appearance_width=32,
                 appearance_grid=3, identity_tokens=4, library_tokens=4, face_tokens=4),
        train=TrainConfig(
            stages={0: StageConfig(20_000, 2e-4, 8), 1: StageConfig(30_000, 1e-4, 8),
                    2: StageConfig(20_000, 1e-4, 8), 3: StageConfig(30_000, 1e-4, 8)},
            zero_stage=2, bf16=True, val_every=500, sample_every=2000, checkpoint_every=1000,
            log_every=20, id_every=100),
        distill=DistillConfig(guidance=StageConfig(5_000, 5e-5, 8),
                              steps=StageConfig(10_000, 5e-5, 8)),
        sampling=sampling)


def base() -> RunConfig:
    """A GPU cluster: Wan2.1-T2V-1.3B's DiT dimensions (its blocks, patch and time
    embeddings load through models/convert_wan.py) and Wan 2.1's VAE sizes."""
    vae = VAEConfig()
    sampling = SamplingConfig()
    return RunConfig(
        profile="base", clip=ClipSpec(size=512, frames=81, fps=24.0), resolution=512,
        vae=vae,
        dit=_dit(vae, sampling, patch_size=(1, 2, 2), dim=1536, depth=30, heads=12,
                 ffn_dim=8960, text_dim=4096, face_every=5, pose_width=64, appearance_width=64,
                 appearance_grid=4, identity_tokens=4, library_tokens=8, face_tokens=8),
        train=TrainConfig(
            stages={0: StageConfig(0, 0.0, 1), 1: StageConfig(50_000, 5e-5, 32),
                    2: StageConfig(30_000, 5e-5, 32), 3: StageConfig(50_000, 5e-5, 32)},
            zero_stage=2, bf16=True, activation_checkpointing=True, compile=True,
            val_every=1000, sample_every=5000, checkpoint_every=1000, log_every=50,
            id_every=200),
        distill=DistillConfig(guidance=StageConfig(10_000, 2e-5, 32),
                              steps=StageConfig(20_000, 2e-5, 32)),
        sampling=sampling, backbone="wan")


def profile_config(name: str) -> RunConfig:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {PROFILES}")
    return globals()[name]()


def run_config(settings) -> RunConfig:
    """The profile's config with the user's overrides: the `MC_RUN_CONFIG` file's, then
    MC_TRAIN__* and MC_CURATE__CLIP_*."""
    run = profile_config(settings.profile)
    if settings.run_config is not None:
        run = apply_overrides(run, read_overrides(settings.run_config))
    t, c = settings.train, settings.curate
    train_overrides = {k: v for k, v in t.model_dump().items()
                       if v is not None and k in {f.name for f in dataclasses.fields(TrainConfig)}}
    sampling = dataclasses.replace(run.sampling, teacher_steps=t.sample_steps) \
        if t.sample_steps else run.sampling
    clip = ClipSpec(size=c.clip_size or run.clip.size, frames=c.clip_frames or run.clip.frames,
                    fps=c.clip_fps or run.clip.fps)
    return dataclasses.replace(run, clip=clip, sampling=sampling,
                               train=dataclasses.replace(run.train, **train_overrides))


def read_overrides(path: Path) -> dict:
    """The nested dict of an override file (TOML, or JSON by its suffix)."""
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return tomllib.loads(path.read_text())
    except (ValueError, OSError) as exc:  # tomllib's and json's decode errors are ValueErrors
        raise MotionControlError(f"MC_RUN_CONFIG={path} is not valid "
                                 f"{'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None


_RUN = TypeAdapter(RunConfig)


def apply_overrides(run: RunConfig, overrides: dict) -> RunConfig:
    """`run` with `overrides` (nested like RunConfig) merged in, checked field by field. The
    DiT's latent channels and compression factors follow the VAE's: they are one choice."""
    merged = _merge(_RUN.dump_python(run, mode="json"), overrides, "")
    try:
        new = _RUN.validate_python(merged, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MotionControlError(f"MC_RUN_CONFIG: {where}: {first['msg']}") from None
    except ValueError as exc:  # a config's own checks (e.g. DiTConfig's head split)
        raise MotionControlError(f"MC_RUN_CONFIG: {exc}") from None
    return dataclasses.replace(new, dit=dataclasses.replace(
        new.dit, latent_channels=new.vae.latent_channels,
        temporal_factor=new.vae.temporal_factor, spatial_factor=new.vae.spatial_factor))


def _merge(base: dict, overrides: dict, where: str) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        key = str(key)
        if key not in out:
            raise MotionControlError(f"MC_RUN_CONFIG: {where}{key} is not a run-config field "
                                     f"(fields here: {', '.join(sorted(out))})")
        out[key] = _merge(out[key], value, f"{where}{key}.") \
            if isinstance(value, dict) and isinstance(out[key], dict) else value
    return out
