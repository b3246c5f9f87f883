"""The training loop of every stage, one plain loop under DeepSpeed.

Run by the `train` flow through torchrun (locally) or in the pods of a Kubernetes job:

    python -m torch.distributed.run --standalone --nproc_per_node=N -m flows.train_worker PLAN.json

Each rank streams its share of the dataset shards from the object store. Rank 0 logs to the
MLflow run named in the plan, reports progress to the launcher, checkpoints to the store every
`checkpoint_every` steps (a killed run resumes from the newest one) and, at the end, writes the
EMA weights that the next stage starts from.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from flows.bundle import (
    build_dit_from_meta,
    build_vae_from_meta,
    read_weights,
    save_weights,
    weights_key,
)
from flows.checkpoints import (
    commit_checkpoint,
    download_checkpoint,
    latest_checkpoint,
    step_tag,
    upload_checkpoint_files,
)
from flows.datasets import load_manifest, shard_dataset
from flows.launch import emit
from flows.runtime import configure
from flows.store import ObjectStore, open_store
from flows.train_config import TrainPlan
from models.data.dataset import ConditionDropout

# --- models ---------------------------------------------------------------------------------


def dit_meta(plan: TrainPlan) -> dict:
    """How to rebuild this run's DiT (the weights' meta; flows/bundle.py reads it)."""
    cfg = plan.config
    meta = {"kind": "teacher", "stage": plan.stage, "preset": cfg.model_preset,
            "resolution": cfg.resolution}
    if plan.task != "teacher":
        meta |= {"kind": "student", "distill_stage": plan.task,
                 "dit_overrides": {"guidance_embed": True},
                 "sampler_steps": cfg.student_steps if plan.task == "distill_steps"
                 else cfg.sample_steps}
    return meta


def load_weights(store: ObjectStore, key: str, module: torch.nn.Module,
                 strict: bool = True) -> dict:
    blob = read_weights(store, key)
    module.load_state_dict(blob["state_dict"], strict=strict)
    return blob["meta"]


# --- data -----------------------------------------------------------------------------------


def batches(dataset, batch_size: int):
    """Endless batches, a new shard order every epoch."""
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        got = False
        for batch in DataLoader(dataset, batch_size=batch_size, drop_last=True):
            got = True
            yield batch
        if not got:
            raise RuntimeError("the dataset yields no full batch; curate more clips or lower "
                               "the batch size")
        epoch += 1


# --- schedule -------------------------------------------------------------------------------


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def deepspeed_config(plan: TrainPlan) -> dict:
    cfg = plan.config
    return {
        "train_micro_batch_size_per_gpu": plan.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.bf16},
        "steps_per_print": 10**9,  # progress goes through the launcher, not DeepSpeed's log
        "wall_clock_breakdown": False,
    }


# --- models and objectives ------------------------------------------------------------------


def build_dit_and_objective(plan: TrainPlan, store: ObjectStore):
    """The DiT to train and its objective: a teacher stage (flow matching from the previous
    stage) or a distillation stage (a student imitating a frozen model)."""
    from models.teacher import TeacherObjective
    from models.text import TextEncoder

    cfg = plan.config
    vae = build_vae_from_meta({"preset": cfg.model_preset})
    load_weights(store, plan.vae_weights, vae)
    teacher_objective = TeacherObjective(
        vae, TextEncoder(), cfg.resolution, region_alpha=cfg.region_alpha,
        id_weight=cfg.id_weight, timestep_shift=cfg.timestep_shift)
    model = build_dit_from_meta(dit_meta(plan))
    if plan.parent_weights:  # the previous stage or the teacher: new parts start at zero
        load_weights(store, plan.parent_weights, model, strict=False)
    if plan.task == "teacher":
        return model, teacher_objective

    from models.distill import BatchDistillation, GuidanceDistillation, StepDistillation
    from models.sampling import GuidanceConfig

    frozen = build_dit_from_meta(read_weights(store, plan.teacher_weights)["meta"])
    load_weights(store, plan.teacher_weights, frozen)
    if plan.task == "distill_guidance":
        loss = GuidanceDistillation(frozen, shift=cfg.timestep_shift)
        steps = cfg.sample_steps
    else:
        loss = StepDistillation(frozen, student_steps=cfg.student_steps,
                                teacher_steps=cfg.teacher_steps, shift=cfg.timestep_shift)
        steps = cfg.student_steps
    # samples of a student: its own steps, one branch (the guidance is in the model)
    return model, BatchDistillation(teacher_objective, loss, steps,
                                    GuidanceConfig(text_scale=1.0, reference_scale=1.0))


# --- the loop -------------------------------------------------------------------------------


def main(plan_path: str) -> None:
    settings = configure()
    plan = TrainPlan.from_json(Path(plan_path).read_text())
    cfg = plan.config
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(settings.train.threads)
    torch.manual_seed(plan.seed + rank)
    generator = torch.Generator().manual_seed(plan.seed + rank)
    store = open_store(settings)
    manifest = load_manifest(store, plan.dataset, plan.dataset_digest)
    device = torch.device("cpu")  # deepspeed's accelerator decides on GPUs; tiny runs on CPU

    teaching = plan.task == "teacher" and plan.stage >= 1  # condition dropout, static clips
    train_data = shard_dataset(
        settings, manifest, "train", seed=plan.seed,
        cross_identity=cfg.cross_identity if plan.stage >= 3 else 0.0,
        static_prob=cfg.static_prob if teaching else 0.0,
        dropout=ConditionDropout() if teaching else None)
    val_data = shard_dataset(settings, manifest, "eval", seed=1234, shuffle_buffer=1,
                             distributed=False,
                             cross_identity=1.0 if plan.stage >= 3 else 0.0, dropout=None)
    val = [b for _, b in zip(range(cfg.val_batches),
                             DataLoader(val_data, batch_size=plan.batch_size), strict=False)]

    if plan.stage == 0:
        from models.teacher import vae_loss

        model = build_vae_from_meta({"preset": cfg.model_preset})
        objective = None
    else:
        model, objective = build_dit_and_objective(plan, store)

    # The EMA copy is taken before DeepSpeed wraps the model, so it stays a plain module
    # (picklable for the registry, no hooks into the process group).
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.warmup_steps, plan.steps, cfg.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=scheduler,
                                           config=deepspeed_config(plan))

    def loss_of(module, batch, **kw):
        if plan.stage == 0:
            return vae_loss(module, batch, cfg.resolution, cfg.kl_weight)
        return objective(module, batch, device=device, **kw)

    def validate(module) -> float:
        """Fixed batches, fixed t and noise: comparable across steps and stages."""
        module.eval()
        losses = []
        with torch.no_grad():
            for i, batch in enumerate(val):
                if plan.stage == 0:
                    losses.append(float(loss_of(module, batch)["recon_l1"]))
                    continue
                g = torch.Generator().manual_seed(i)
                b, frames = batch["frames"].shape[:2]
                t = torch.linspace(0.2, 0.8, b)
                shape = (b, *objective.vae.latent_shape(frames, cfg.resolution, cfg.resolution))
                noise = torch.randn(shape, generator=g)
                losses.append(float(loss_of(module, batch, fixed_t=t, noise=noise)
                                    ["total"]))
        module.train()
        return float(np.mean(losses)) if losses else float("nan")

    start = resume(engine, ema, store, plan, rank)
    run = _mlflow_run(settings, plan) if rank == 0 else None
    if rank == 0:
        emit({"event": "start", "step": start, "total": plan.steps, "stage": plan.stage})
        if start == 0:
            _log({"val_loss": validate(engine.module)}, 0)
    data = batches(train_data, plan.batch_size)
    started, seen = time.perf_counter(), 0
    for step in range(start, plan.steps):
        batch = next(data)
        with_id = teaching and cfg.id_every and (step + 1) % cfg.id_every == 0
        losses = loss_of(engine, batch, generator=generator, **({"with_id": True}
                                                                 if with_id else {}))
        engine.backward(losses["total"])
        engine.step()
        ema.update_parameters(engine.module)
        seen += plan.batch_size * world
        done = step + 1
        if rank == 0:
            rate = seen / (time.perf_counter() - started)
            emit({"event": "step", "step": done, "total": plan.steps,
                  "loss": float(losses["total"]), "samples_per_s": rate})
            if done % cfg.log_every == 0 or done == plan.steps:
                _log({**{f"loss_{k}": float(v) for k, v in losses.items()},
                      "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}, done)
            if done % cfg.val_every == 0 or done == plan.steps:
                _log({"val_loss": validate(engine.module), "val_loss_ema": validate(ema.module)},
                     done)
            if plan.stage >= 1 and (done % cfg.sample_every == 0 or done == plan.steps):
                from flows.train_samples import log_samples

                log_samples(ema.module, objective, val[0] if val else batch, cfg, done)
        if done % cfg.checkpoint_every == 0 or done == plan.steps:
            save_checkpoint(engine, ema, store, plan, done, rank)

    if rank == 0:
        final = ema.module
        if plan.stage == 0:  # latent statistics so the DiT sees ~unit-variance latents
            with torch.no_grad():
                from models.teacher import to_pixels

                final.fit_latent_stats([final.encode(to_pixels(b["frames"], cfg.resolution))
                                        .mode() for b in val])
        meta = {"kind": "vae", "preset": cfg.model_preset, "resolution": cfg.resolution} \
            if plan.stage == 0 else dit_meta(plan)
        save_weights(store, weights_key(plan.run_id), final,
                     {**meta, "frames": manifest["clip_spec"]["frames"],
                      "dataset_digest": plan.dataset_digest})
        import mlflow

        # The registry entry: the EMA model itself, loadable with mlflow.pytorch.load_model.
        info = mlflow.pytorch.log_model(final, name="model", serialization_format="pickle",
                                        pip_requirements=[])
        emit({"event": "done", "step": plan.steps, "weights": weights_key(plan.run_id),
              "model_uri": info.model_uri})
        if run is not None:
            mlflow.end_run()
    dist.barrier()


def resume(engine, ema, store: ObjectStore, plan: TrainPlan, rank: int) -> int:
    """Continue from the run's newest checkpoint in the store, if any; returns the step."""
    tag = latest_checkpoint(store, plan.run_id)
    if tag is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="mc-resume-") as tmp:
        folder = download_checkpoint(store, plan.run_id, tag, Path(tmp))
        _, client = engine.load_checkpoint(str(folder.parent), tag=tag)
        ema.load_state_dict(torch.load(folder / "ema.pt", map_location="cpu"))
    step = int(client["step"])
    if rank == 0:
        print(f"resumed {plan.run_id} from {tag} (step {step})", flush=True)
        emit({"event": "resumed", "step": step})
    return step


def save_checkpoint(engine, ema, store: ObjectStore, plan: TrainPlan, step: int,
                    rank: int) -> None:
    """Every rank writes and uploads its own part (ZeRO shards live on their rank's node);
    once all have, rank 0 moves `latest`, so a resume never finds half a checkpoint."""
    tag = step_tag(step)
    with tempfile.TemporaryDirectory(prefix="mc-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=tag, client_state={"step": step})
        if rank == 0:
            torch.save(ema.state_dict(), Path(tmp) / tag / "ema.pt")
        upload_checkpoint_files(store, plan.run_id, tag, Path(tmp) / tag)
        dist.barrier()
        if rank == 0:
            commit_checkpoint(store, plan.run_id, tag, keep=plan.config.keep_checkpoints)
            emit({"event": "checkpoint", "step": step, "tag": tag})
        dist.barrier()


def _mlflow_run(settings, plan: TrainPlan):
    import mlflow

    from flows.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(settings))
    return mlflow.start_run(run_id=plan.run_id)


def _log(metrics: dict, step: int) -> None:
    import mlflow

    mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)}, step=step)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as exc:  # the launcher shows this line instead of torchrun's traceback
        traceback.print_exc()
        emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
