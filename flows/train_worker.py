"""The training loop of every stage, one plain loop under DeepSpeed.

Run by the `train` flow through torchrun (locally) or in the pods of a Kubernetes job:

    python -m torch.distributed.run --standalone --nproc_per_node=N -m flows.train_worker PLAN.json

Each rank trains on one GPU with NCCL when torch sees CUDA (`MC_TRAIN__DEVICE`), the forward
in bf16 autocast when the run config asks; else on the CPU with gloo. Each rank streams its
share of the dataset shards from the object store. Rank 0 logs to the
MLflow run named in the plan, reports progress to the launcher, checkpoints to the store every
`checkpoint_every` steps (a killed run resumes from the newest one) and, at the end, writes the
EMA weights that the next stage starts from.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from flows.backbone import init_from_wan, wan_folder
from flows.checkpoints import (
    commit_checkpoint,
    download_checkpoint,
    latest_checkpoint,
    step_tag,
    upload_checkpoint_files,
)
from flows.datasets import load_manifest, shard_dataset
from flows.launch import emit
from flows.pyfunc_model import download_part, download_text_encoder, log_pipeline_model
from flows.registry import build_model
from flows.runtime import configure
from flows.store import ObjectStore, open_store
from flows.tracking import connect
from flows.train_plan import TrainPlan
from flows.train_samples import log_samples
from models.conditions import PrepareConditions
from models.data.dataset import ConditionDropout, Endless
from models.distill import GuidanceDistillation, StepDistillation
from models.objectives import DistillationObjective, FlowMatchingObjective, VAEObjective
from models.sampling import GuidanceConfig
from models.text import TextEncoder

# --- the model and its objective, chosen once per run ---------------------------------------


def vae_run(plan: TrainPlan, device: torch.device, text: TextEncoder | None):
    return build_model(plan.model), VAEObjective(plan.run.resolution, plan.run.train.kl_weight,
                                                 device=device)


def teacher_run(plan: TrainPlan, device: torch.device, text: TextEncoder):
    """A teacher stage starts from the previous one (its new condition paths at zero)."""
    run, cfg = plan.run, plan.run.train
    model = _start_from_parent(plan)
    objective = FlowMatchingObjective(
        _part(plan.vae_weights, "vae"), text, run.resolution,
        steps=run.sampling.teacher_steps,
        # samples as the naive three-branch sampler draws them: what the teacher learned
        guidance=GuidanceConfig(text_scale=run.sampling.text_scale,
                                reference_scale=run.sampling.reference_scale, prune=False),
        shift=run.sampling.timestep_shift, region_alpha=cfg.region_alpha,
        loss_weighting=cfg.loss_weighting, id_weight=cfg.id_weight, id_every=cfg.id_every,
        device=device)
    return model, objective


def guidance_run(plan: TrainPlan, device: torch.device, text: TextEncoder):
    """The guidance stage: a student learns the teacher's guided velocity at random scales."""
    run = plan.run
    loss = GuidanceDistillation(_part(plan.teacher_weights, "dit").to(device),
                                text_range=run.distill.text_range,
                                reference_range=run.distill.reference_range,
                                shift=run.sampling.timestep_shift)
    return _student(plan, loss, device, text)


def steps_run(plan: TrainPlan, device: torch.device, text: TextEncoder):
    """The steps stage: one student step per segment of the guidance-stage model's path."""
    run = plan.run
    loss = StepDistillation(_part(plan.teacher_weights, "dit").to(device),
                            student_steps=run.sampling.student_steps,
                            teacher_steps=run.distill.segment_steps,
                            shift=run.sampling.timestep_shift)
    return _student(plan, loss, device, text)


RUNS = {"vae": vae_run, "teacher": teacher_run, "guidance": guidance_run, "steps": steps_run}


def _student(plan: TrainPlan, loss, device: torch.device, text: TextEncoder):
    """A student starts as the model it imitates (plus a zero-initialised guidance input)."""
    objective = DistillationObjective(_part(plan.vae_weights, "vae"), text,
                                      plan.run.resolution, distill=loss,
                                      steps=plan.model["sampler_steps"],
                                      shift=plan.run.sampling.timestep_shift, device=device)
    return _start_from_parent(plan), objective


def _start_from_parent(plan: TrainPlan) -> torch.nn.Module:
    model = build_model(plan.model)
    if plan.parent_weights:  # parts the parent lacks keep their (zero) initialisation
        model.load_state_dict(_part(plan.parent_weights, "dit").state_dict(), strict=False)
    return model


def _part(model_uri: str, name: str) -> torch.nn.Module:
    """The "dit" or "vae" of a registered model a run starts from or learns against."""
    return download_part(model_uri, name)[0]


def text_encoder_dir(plan: TrainPlan, settings) -> Path | None:
    """Where a DiT run's text encoder is: its parent version's (what that DiT was trained
    with; kept in MC_HOME/cache), else the pretrained backbone's (stage 1 of `base`), else
    None: the bundled MiniLM. A folder, so the DataLoader workers load it too."""
    if plan.parent_weights:
        name = plan.parent_weights.removeprefix("models:/").replace("/", "-").replace("@", "-")
        folder = settings.home / "cache" / "text_encoder" / name
        if not folder.is_dir():  # fetched whole into a temporary folder, then renamed
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
            download_text_encoder(plan.parent_weights, tmp).rename(folder)
            shutil.rmtree(tmp)
        return folder
    if plan.backbone_weights:
        return wan_folder(settings, plan.backbone_weights)
    return None


# --- where a rank trains ---------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    device: torch.device
    backend: str  # of torch.distributed: nccl between GPUs, gloo between CPU processes
    bf16: bool  # the forward in bf16 autocast (fp32 weights and optimizer states)

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def placement(requested: str, bf16: bool) -> Placement:
    """One GPU per rank (torchrun's LOCAL_RANK) with NCCL when CUDA is wanted and there,
    else the CPU with gloo; bf16 only on a GPU (this machine's CPUs have no fast bf16)."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return Placement(torch.device("cpu"), "gloo", False)
    if not torch.cuda.is_available():
        raise RuntimeError("MC_TRAIN__DEVICE=cuda but torch sees no GPU: check the node's "
                           "driver and that this is the CUDA image (VARIANT=cuda make images), "
                           "or set MC_TRAIN__DEVICE=auto")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    return Placement(torch.device("cuda", local_rank), "nccl", bf16)


# --- data -----------------------------------------------------------------------------------


def batches(dataset, batch_size: int, workers: int, pin_memory: bool):
    """Endless batches, a new shard order every epoch, their conditions prepared by
    `workers` DataLoader processes (0: in this one) while the model trains; pinned for a
    faster copy to the GPU."""
    return iter(DataLoader(Endless(dataset), batch_size=batch_size, num_workers=workers,
                           prefetch_factor=2 if workers else None, pin_memory=pin_memory))


# --- schedule -------------------------------------------------------------------------------


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def deepspeed_config(plan: TrainPlan) -> dict:
    cfg = plan.run.train
    return {
        "train_micro_batch_size_per_gpu": plan.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        # bf16 is autocast in the loop (Placement): DeepSpeed keeps fp32 weights, so the EMA
        # copy and the frozen VAE/teacher stay in the precision they were saved in.
        "bf16": {"enabled": False},
        "steps_per_print": 10**9,  # progress goes through the launcher, not DeepSpeed's log
        "wall_clock_breakdown": False,
    }


# --- the loop -------------------------------------------------------------------------------


def main(plan_path: str) -> None:
    settings = configure()
    # after configure(): DeepSpeed and MLflow read the environment when imported
    import deepspeed

    mlflow = connect(settings)  # every rank reads the registered models it starts from

    plan = TrainPlan.from_json(Path(plan_path).read_text())
    cfg = plan.run.train

    def log(metrics: dict, step: int) -> None:
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)}, step=step)

    where = placement(settings.train.device, cfg.bf16)
    deepspeed.init_distributed(dist_backend=where.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(settings.train.threads)
    torch.manual_seed(plan.seed + rank)
    generator = torch.Generator().manual_seed(plan.seed + rank)
    store = open_store(settings)
    manifest = load_manifest(store, plan.dataset, plan.dataset_digest)

    # one copy of the text encoder per machine: the first rank there fetches it
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and plan.objective != "vae":
        text_encoder_dir(plan, settings)
    dist.barrier()
    text_dir = None if plan.objective == "vae" else text_encoder_dir(plan, settings)
    train_data = shard_dataset(
        settings, manifest, "train", seed=plan.seed, cross_identity=plan.cross_identity,
        static_prob=plan.static_prob,
        dropout=ConditionDropout() if plan.condition_dropout else None,
        transform=None if plan.objective == "vae" else PrepareConditions(
            plan.run.resolution, motion=plan.run.train.region_alpha > 0, text_dir=text_dir,
            warp=plan.run.dit.skip_prior == "warp"))
    # validation on held-out pairs of the kind the run trains on, the same every step
    val_data = shard_dataset(settings, manifest, "eval", seed=1234, shuffle_buffer=1,
                             distributed=False, cross_identity=float(plan.cross_identity > 0),
                             dropout=None)
    val = [b for _, b in zip(range(cfg.val_batches),
                             DataLoader(val_data, batch_size=plan.batch_size), strict=False)]

    model, objective = RUNS[plan.objective](
        plan, where.device, None if plan.objective == "vae" else TextEncoder(text_dir))
    conversion = None
    if plan.objective == "teacher" and plan.backbone_weights and not plan.parent_weights:
        # stage 1 of a backbone profile starts as the pretrained DiT (a resumed run then
        # loads its checkpoint over it)
        conversion = init_from_wan(model, wan_folder(settings, plan.backbone_weights))
    model.to(where.device)
    if cfg.activation_checkpointing and hasattr(model, "gradient_checkpointing"):
        model.gradient_checkpointing = True
    # The EMA copy is taken before DeepSpeed wraps the model, so it stays a plain module
    # (no hooks into the process group).
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.warmup_steps, plan.steps, cfg.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=scheduler,
                                           config=deepspeed_config(plan))
    if cfg.compile:
        engine.compile()

    start = resume(engine, ema, store, plan, rank)
    if rank == 0:
        # CPU, memory, disk, network and (when present) GPU as `system/…` metrics, every
        # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's default: 10)
        mlflow.start_run(run_id=plan.run_id, log_system_metrics=True)
        emit({"event": "start", "step": start, "total": plan.steps, "stage": plan.stage})
        if conversion is not None:
            mlflow.log_text(conversion.summary(), "wan_conversion.txt")
        if start == 0:
            log({"val_loss": objective.validate(engine.module, val)}, 0)
    data = batches(train_data, plan.batch_size, settings.train.loader_workers,
                   pin_memory=where.device.type == "cuda")
    started, seen = time.perf_counter(), 0
    for step in range(start, plan.steps):
        with where.autocast():
            losses = objective.loss(engine, next(data), step=step, generator=generator)
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
                log({**{f"loss_{k}": float(v) for k, v in losses.items()},
                      "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}, done)
            if done % cfg.val_every == 0 or done == plan.steps:
                log({"val_loss": objective.validate(engine.module, val),
                      "val_loss_ema": objective.validate(ema.module, val)}, done)
            if val and (done % cfg.sample_every == 0 or done == plan.steps):
                log_samples(ema.module, objective, val[0], plan.run.resolution,
                            plan.run.clip.fps, done, curve=plan.objective != "vae")
        if done % cfg.checkpoint_every == 0 or done == plan.steps:
            save_checkpoint(engine, ema, store, plan, done, rank)

    if rank == 0:
        final = ema.module
        objective.finalize(final, val)
        final = final.cpu()  # saved weights load anywhere
        meta = {**plan.model, "frames": manifest["clip_spec"]["frames"],
                "dataset_digest": plan.dataset_digest}
        # The run's model, the one copy of its weights: a DiT with the VAE it was trained
        # with, runnable with mlflow.pyfunc.load_model (flows/pyfunc_model.py).
        parts = {"vae": (final, meta)} if plan.objective == "vae" else \
            {"dit": (final, meta), "vae": download_part(plan.vae_weights, "vae")}
        info = log_pipeline_model(parts, text=getattr(objective, "text", None))
        emit({"event": "done", "step": plan.steps, "model_uri": info.model_uri})
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
        ema.load_state_dict(torch.load(folder / "ema.pt", map_location=engine.device))
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
            commit_checkpoint(store, plan.run_id, tag, keep=plan.run.train.keep_checkpoints)
            emit({"event": "checkpoint", "step": step, "tag": tag})
        dist.barrier()


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as exc:  # the launcher shows this line instead of torchrun's traceback
        traceback.print_exc()
        emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
