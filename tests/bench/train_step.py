"""One teacher training step with the model alone, at any profile's shapes, on any device.

The step: MotionDiT forward on noisy latents (flow matching's x_t = (1 - t) x0 + t noise),
the velocity loss (models.losses.flow_matching_loss), backward, AdamW; nothing of the data
pipeline (no VAE encode, no condition rendering, no text encoder). Its input is one fixed
random batch of the profile's shapes (`random_batch`: latents of the clip at the profile's
resolution, conditions from tests.tiny_models.random_conditions, nothing dropped) and the
model has fresh random weights, so the figures are the model's ceiling, not a run's.

FLOPs are torch's FlopCounterMode count of one step (forward and backward matmuls,
convolutions and attention; AdamW's element-wise work is not counted); MFU is the achieved
FLOP/s over a peak: on an H200 its datasheet's dense bf16 rate, elsewhere the matmul rate
`matmul_peak` measures on this device.

Used by tests/bench/bench_training.py (the tiny and small profiles on the CPU, in
reports/bench/training.json) and scripts/gpu_train_bench.py (`main`: a profile on a GPU in
bf16 autocast, or on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from flows.profiles import PROFILES, RunConfig, profile_config
from models.conditions import Conditions
from models.dit import MotionDiT
from models.losses import flow_matching_loss
from tests.bench.common import print_table, write_report
from tests.tiny_models import random_conditions

# NVIDIA's H200 datasheet (SXM): BF16 Tensor Core 1,979 TFLOP/s with sparsity, 989 dense
H200_BF16_PEAK_GFLOPS = 989e3

aten = torch.ops.aten
# torch's FlopCounterMode has no formula for the CPU kernel of scaled_dot_product_attention,
# so on the CPU attention counted 0 FLOPs (pytorch/pytorch#195460; torch 2.13's registry lacks it):
# the formulas of the CUDA kernels, whose leading arguments are the same.
_CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
    aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, q, k, v, *args, out_shape=None, **kwargs:
            sdpa_backward_flop_count(grad, q, k, v),
}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` by torch's FlopCounterMode, CPU attention included."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                n: int = 1024, repeats: int = 10, rounds: int = 5) -> float:
    """GFLOP/s of an n x n matmul in `dtype` on `device` (on the CPU: at the current torch
    threads), the best of `rounds` rounds of `repeats` products: other work on the machine
    only slows a round down."""
    device = torch.device(device)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = math.inf
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best / 1e9


class Batch(NamedTuple):
    """A fixed training batch: clean latents x0, noise, times t, x_t and the conditions."""

    x0: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    cond: Conditions


def latent_grid(run: RunConfig) -> tuple[int, int]:
    """(latent frames, latent side) of one of the profile's clips at its resolution."""
    c = run.dit
    return 1 + (run.clip.frames - 1) // c.temporal_factor, run.resolution // c.spatial_factor


def random_batch(run: RunConfig, batch_size: int, *, device: str | torch.device = "cpu",
                 seed: int = 0) -> Batch:
    """A random batch of `run`'s shapes: latents of its clips (frames, resolution) and every
    condition of its DiT (one reference frame, no subject library, a 6-token caption)."""
    frames, side = latent_grid(run)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch_size, run.dit.latent_channels, frames, side, side, generator=g)
    noise, t = torch.randn(x0.shape, generator=g), torch.rand(batch_size, generator=g)
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    cond = random_conditions(run.dit, batch_size, frames, side, seed=seed, device=device)
    return Batch(*(x.to(device) for x in (x0, noise, t, x_t)), cond)


def time_model_step(run: RunConfig, *, batch_size: int, steps: int | None = None,
                    seconds: float | None = None, warmup: int = 1, stage: int = 3,
                    device: str | torch.device = "cpu", bf16: bool = False,
                    seed: int = 0) -> dict:
    """Time the model-only training step of `run` (module docstring) on `device`.

    The first warm-up step (there is always one) counts the FLOPs; then timed steps run
    until `steps` are done or `seconds` have passed (whichever comes first; at least one
    step). bf16: the forward and
    loss in bf16 autocast, as the train worker runs on GPUs (fp32 weights and AdamW states).
    The model trains `stage`'s paths (1 body, 2 + face, 3 + hands) and recomputes its blocks
    in backward where the profile asks (train.activation_checkpointing; then the FLOPs
    include the recomputation). Returns seconds and samples a second, FLOPs and FLOP/s,
    the parameters and, on CUDA, the peak memory."""
    if steps is None and seconds is None:
        raise ValueError("give steps or seconds")
    device, warmup = torch.device(device), max(warmup, 1)
    torch.manual_seed(seed)
    with torch.device(device):
        model = MotionDiT(run.dit, stage=stage)
    model.gradient_checkpointing = run.train.activation_checkpointing
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=run.train.weight_decay)
    batch = random_batch(run, batch_size, device=device, seed=seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 \
                else contextlib.nullcontext():
            loss = flow_matching_loss(model(batch.x_t, batch.t, batch.cond), batch.x0,
                                      batch.noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    flops = count_flops(step)
    for _ in range(warmup - 1):
        step()
    _sync(device)
    done, start = 0, time.perf_counter()
    while True:
        step()
        done += 1
        if seconds is not None:
            _sync(device)
            if time.perf_counter() - start >= seconds:
                break
        if steps is not None and done >= steps:
            break
    _sync(device)
    per_step = (time.perf_counter() - start) / done
    return {
        "profile": run.profile, "stage": stage, "batch": batch_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": "bf16 autocast" if bf16 else "fp32", "warmup_steps": warmup,
        "timed_steps": done, "parameters": sum(p.numel() for p in model.parameters()),
        "dit": {"dim": run.dit.dim, "depth": run.dit.depth, "heads": run.dit.heads},
        "latents": list(batch.x0.shape[1:]), "s_per_step": per_step,
        "samples_per_s": batch_size / per_step, "gflop_per_step": flops / 1e9,
        "gflop_per_s": flops / per_step / 1e9,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda" else None,
    }


def with_mfu(figures: dict, peak_gflop_per_s: float, peak_source: str) -> dict:
    """`figures` of time_model_step plus the peak and MFU (achieved FLOP/s / peak)."""
    return {**figures, "peak_gflop_per_s": peak_gflop_per_s, "peak_source": peak_source,
            "mfu": figures["gflop_per_s"] / peak_gflop_per_s}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the command (scripts/gpu_train_bench.py) -------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_train_bench.py", description="Samples/s, FLOP/s, MFU and peak memory of "
        "one teacher training step (the model alone, random weights and inputs).")
    p.add_argument("--profile", choices=PROFILES, default="small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--stage", type=int, choices=(1, 2, 3), default=1)
    p.add_argument("--batch", type=int, help="default: the profile's per-rank batch size "
                   "of the stage")
    p.add_argument("--steps", type=int, help="timed steps (default: 2 on the CPU)")
    p.add_argument("--seconds", type=float, help="time steps for this long (default: 60 on "
                   "a GPU)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps, the first counts "
                   "the FLOPs")
    p.add_argument("--threads", type=int, help="torch threads on the CPU")
    p.add_argument("--out", type=Path, required=True, help="the JSON report")
    args = p.parse_args(argv)
    if args.steps is None and args.seconds is None:
        if torch.device(args.device).type == "cuda":
            args.seconds = 60.0
        else:
            args.steps = 2
    return args


def main(argv: list[str] | None = None) -> dict:
    """Measure, print a table and write the JSON report at --out; returns the figures."""
    args = _args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = profile_config(args.profile)
    gpu = device.type == "cuda"
    batch = args.batch or run.train.stages[args.stage].batch_size
    figures = time_model_step(run, batch_size=batch, steps=args.steps, seconds=args.seconds,
                              warmup=args.warmup, stage=args.stage, device=device, bf16=gpu)
    if gpu:
        measured = matmul_peak(device, torch.bfloat16, n=8192, repeats=20)
        # the datasheet's peak is the H200 SXM's (nvidia-smi: "NVIDIA H200"; the NVL's is lower)
        if figures["device"] == "NVIDIA H200":
            figures = with_mfu(figures, H200_BF16_PEAK_GFLOPS, "NVIDIA H200 datasheet, dense "
                               "bf16")
        else:
            figures = with_mfu(figures, measured, "measured bf16 matmul, 8192²")
        figures["matmul_peak_gflop_per_s"] = measured
        figures["mfu_of_matmul_peak"] = figures["gflop_per_s"] / measured
    else:
        figures = with_mfu(figures, matmul_peak(device), "measured fp32 matmul, 1024², "
                           f"{torch.get_num_threads()} torch threads")

    scale, unit = (1e3, "TFLOP") if gpu else (1.0, "GFLOP")
    rows = [["step", f"{run.profile} profile, stage {args.stage}, batch {batch}, "
             f"{figures['dtype']}, latents {figures['latents']}"],
            ["device", figures["device"]],
            ["parameters (M)", figures["parameters"] / 1e6],
            ["timed steps", f"{figures['timed_steps']} after {args.warmup} warm-up"],
            ["s/step", figures["s_per_step"]],
            ["samples/s", figures["samples_per_s"]],
            [f"{unit} a step", figures["gflop_per_step"] / scale],
            [f"achieved {unit}/s", figures["gflop_per_s"] / scale],
            [f"peak {unit}/s", f"{figures['peak_gflop_per_s'] / scale:.4g} "
             f"({figures['peak_source']})"],
            ["MFU", f"{figures['mfu']:.1%}"]]
    if gpu:
        rows += [[f"measured bf16 matmul {unit}/s", figures["matmul_peak_gflop_per_s"] / scale],
                 ["peak memory allocated (GiB)", figures["peak_memory_gib"]]]
    print_table("training step, model only (random weights and inputs)", ["", "value"], rows)
    write_report("train_step", path=args.out,
                 inputs={"profile": run.profile, "stage": args.stage, "batch": batch,
                         "device": str(device), "bf16_autocast": gpu,
                         "steps": args.steps, "seconds": args.seconds, "warmup": args.warmup,
                         "resolution": run.resolution, "frames": run.clip.frames},
                 baseline=f"peak: {figures['peak_source']}", results=figures)
    return figures
