"""The model-only training-step measurement (tests/bench/train_step.py) that
bench_training.py and scripts/gpu_train_bench.py run: on the debug profile, on the CPU."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

from flows.profiles import profile_config
from tests.bench.train_step import count_flops, latent_grid, main, random_batch


def test_main_measures_a_debug_step_on_the_cpu(tmp_path):
    out = tmp_path / "step.json"
    figures = main(["--device", "cpu", "--profile", "debug", "--steps", "2", "--warmup", "1",
                    "--out", str(out)])

    report = json.loads(out.read_text())
    assert report.keys() >= {"machine", "inputs", "baseline", "results"}
    results = report["results"]
    assert results["profile"] == "debug" and results["timed_steps"] == 2
    assert results["batch"] == profile_config("debug").train.stages[1].batch_size
    for key in ("s_per_step", "samples_per_s", "gflop_per_step", "gflop_per_s",
                "peak_gflop_per_s", "mfu"):
        assert math.isfinite(results[key]) and results[key] > 0, key
        assert results[key] == figures[key]
    assert results["mfu"] < 1  # achieved FLOP/s under the measured matmul peak
    assert results["peak_memory_gib"] is None  # CUDA only


def test_random_batch_has_the_profile_shapes():
    run = profile_config("small")
    frames, side = latent_grid(run)
    assert (frames, side) == (13, 32)  # 49 frames at 256² through a 4x temporal, 8x spatial VAE
    batch = random_batch(profile_config("debug"), 2)
    assert batch.x_t.shape == batch.x0.shape == (2, 4, 3, 8, 8) and batch.t.shape == (2,)


def test_count_flops_counts_attention_on_the_cpu():
    """torch's FlopCounterMode alone counts 0 for the CPU attention kernel."""
    q = torch.randn(2, 3, 16, 8, requires_grad=True)
    b, h, s, d = q.shape
    forward = 2 * (2 * b * h * s * s * d)  # q k^T and p v
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == forward
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward()) \
        == 3.5 * forward  # backward: 2.5x the forward (sdpa_backward_flop_count)
