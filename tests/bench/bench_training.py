"""Training-step throughput of the tiny teacher: data preparation in the step vs out of it.

Baseline ("prep in the step", how the loop ran before): every step renders the pose maps,
face codes and text of its batch and encodes the clips and references with the VAE, in the
training process. Candidate ("prep in a worker"): one DataLoader worker process prepares the
conditions (models.conditions.PrepareConditions) while the model trains, and the frozen VAE's
latents are cached by content (models.objectives.FrozenLatents), so after the first epoch the
step is the model's forward and backward. Both read the same shards of synthetic
cross-identity clips (rendered here, the tiny profile's clip spec), one training process with
one torch thread, as each rank of `make train-stage*` runs; the worker runs on the second
core. Also measured: the model's forward + backward + AdamW alone on one fixed batch (the
ceiling), its FLOPs (torch's FlopCounterMode) and this CPU's fp32 matmul peak on one thread.

Per profile (`profiles` in the report), the model-only step of tests/bench/train_step.py:
samples/s, GFLOP/s and MFU (against that matmul peak) of the tiny profile (the ceiling
above) and of the small profile's shapes (256² px, 49 frames, DiT dim 512 depth 12; random
weights, batch 1, ~30 s a step here). The base profile is not run on a CPU (GPU only:
scripts/gpu_train_bench.py).
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from flows.profiles import profile_config
from models.conditions import PrepareConditions
from models.data.dataset import ConditionDropout, Endless, ShardDataset, local_shard
from models.data.shards import write_shards
from models.data.sources import SyntheticJob, make_samples
from models.dit import MotionDiT
from models.objectives import FlowMatchingObjective, FrozenLatents
from models.sampling import GuidanceConfig
from models.text import TextEncoder
from models.vae import VideoVAE
from tests.bench.common import print_table, write_report
from tests.bench.train_step import matmul_peak, time_model_step, with_mfu

RUN = profile_config("tiny")
ACTIONS = ("wave", "clap", "walk", "jump", "bow", "dance")
STEPS, BATCH = 24, 4
# the model-only step per profile: (config, batch, timed steps, warm-up steps); the small
# profile's step takes ~30 s on one core here, base's would take far longer (GPU only)
PROFILE_STEPS = {"tiny": (RUN, BATCH, STEPS, 2), "small": (profile_config("small"), 1, 2, 1)}


def _dataset(tmp_path, transform=None) -> ShardDataset:
    shards = tmp_path / "shards"
    if not shards.exists():
        samples = [s for i, action in enumerate(ACTIONS) for s in make_samples(
            SyntheticJob(action, 0.7, i, (2 * i, 2 * i + 1), "static"), RUN.clip)]
        write_shards(samples, shards)
    return ShardDataset([local_shard(p) for p in sorted(shards.iterdir())],
                        cross_identity=0.5, static_prob=0.1, dropout=ConditionDropout(),
                        transform=transform)


def _objective(text: TextEncoder) -> FlowMatchingObjective:
    torch.manual_seed(0)
    return FlowMatchingObjective(VideoVAE(RUN.vae), text, RUN.resolution, steps=2,
                                 guidance=GuidanceConfig(), region_alpha=1.0, id_weight=0.0,
                                 id_every=0)


def _train(objective, data, steps: int) -> float:
    """Seconds per step of `steps` steps (data loading included), after 2 warm-up steps."""
    model = MotionDiT(RUN.dit)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = objective.loss(model, next(data), step=i)["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - start) / steps


def test_bench_training(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        text = TextEncoder()
        epoch = len(ACTIONS) * 2 // BATCH  # batches per pass over the clips

        # baseline: raw batches, conditions and latents computed in the step (no cache)
        baseline = _objective(text)
        baseline.latents = FrozenLatents(baseline.vae, max_bytes=0)  # keeps ~nothing
        raw = iter(DataLoader(Endless(_dataset(tmp_path)), batch_size=BATCH))
        before = _train(baseline, raw, STEPS)

        # candidate: a worker prepares; the latent cache is warm after one epoch
        candidate = _objective(text)
        prepared = iter(DataLoader(Endless(_dataset(tmp_path, PrepareConditions(
            RUN.resolution, motion=True))), batch_size=BATCH, num_workers=1, prefetch_factor=4))
        _train(candidate, prepared, epoch)  # fills the cache, as the first epoch of a run
        after = _train(candidate, prepared, STEPS)

        # ceiling: the model alone on one fixed random batch of the same shapes, and its
        # FLOPs; then the same step at the small profile's shapes
        model_steps = {name: time_model_step(run, batch_size=batch, steps=n, warmup=warmup)
                       for name, (run, batch, n, warmup) in PROFILE_STEPS.items()}
        peak = matmul_peak()
    finally:
        torch.set_num_threads(threads)

    flops, model_only = model_steps["tiny"]["gflop_per_step"] * 1e9, \
        model_steps["tiny"]["s_per_step"]

    def figures(seconds: float) -> dict:
        return {"s_per_step": seconds, "samples_per_s": BATCH / seconds,
                "gflop_per_s": flops / seconds / 1e9,
                "fraction_of_matmul_peak": flops / seconds / 1e9 / peak}

    results = {"prep_in_step": figures(before), "prep_in_worker": figures(after),
               "model_only": figures(model_only), "gflop_per_step": flops / 1e9,
               "matmul_peak_gflop_per_s": peak,
               "speedup_samples_per_s": before / after,
               "profiles": {name: with_mfu(step, peak, "fp32 matmul peak, 1 thread")
                            for name, step in model_steps.items()}}
    print_table(f"tiny teacher step, batch {BATCH}, 1 torch thread (matmul peak "
                f"{peak:.1f} GFLOP/s, {flops / 1e9:.2f} GFLOP a step)",
                ["step", "s/step", "samples/s", "GFLOP/s", "x vs prep in step"],
                [[name, results[name]["s_per_step"], results[name]["samples_per_s"],
                  results[name]["gflop_per_s"], before / results[name]["s_per_step"]]
                 for name in ("prep_in_step", "prep_in_worker", "model_only")])
    print_table("model-only step per profile, random weights, 1 torch thread, fp32 (MFU: "
                "of the matmul peak)", ["profile", "batch", "GFLOP/step", "s/step",
                                        "samples/s", "GFLOP/s", "MFU"],
                [[name, p["batch"], p["gflop_per_step"], p["s_per_step"], p["samples_per_s"],
                  p["gflop_per_s"], f"{p['mfu']:.1%}"] for name, p in results["profiles"].items()])
    profiles = {name: {"batch": batch, "timed_steps": n, "warmup_steps": warmup,
                       "resolution": run.resolution, "frames": run.clip.frames}
                for name, (run, batch, n, warmup) in PROFILE_STEPS.items()}
    profiles["base"] = "GPU only (a step at its shapes is far too slow for a CPU): " \
                       "scripts/gpu_train_bench.py"
    write_report("training", inputs={"profile": "tiny", "batch": BATCH, "steps": STEPS,
                                     "clips": len(ACTIONS) * 2, "resolution": RUN.resolution,
                                     "frames": RUN.clip.frames, "torch_threads": 1,
                                     "loader_workers": 1, "profiles": profiles},
                 baseline="prep in the step (conditions and VAE encodes in the training "
                          "process, no latent cache)", results=results)
    assert after < before
