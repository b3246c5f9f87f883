"""End to end at the profiles' shapes: naive teacher, dual-branch teacher, student.

`MotionControlPipeline` from a real photo and real footage to frames (MediaPipe motion
extraction and retargeting, identity and conditions, sampling, VAE decode), with random
weights at each profile's shapes (the DiT and VAE of `tiny` and of `small`: 256² px, 49
frames, a 77 M-parameter DiT): speed does not depend on the weights. The trained tiny models
are measured the same way in bench_distillation.py.

Baseline: the naive teacher (3 branches x 50 Euler steps), in the same run, on the same
inputs and seed; then the dual-branch teacher (2 branches x 50 + 1) and the student (the
profile's 4 steps, one branch: guidance distilled into it). One torch thread by default, as
each served model process. Target (issue "Serving for real clients"): student >= 10x the naive teacher
end to end at `small` shapes.

    MC_BENCH_E2E_PROFILES=tiny (default) or tiny,small: at `small` shapes one DiT forward
    takes 5-6 s and one VAE decode ~50 s in bfloat16 (92-104 s in float32) on this CPU
    (2 threads, quiet), the whole run ~30 min (MC_BENCH_THREADS=2; one thread under load:
    several times that).
    MC_BENCH_E2E_METHODS=naive_teacher,student skips the dual-branch teacher (11 min at
    `small`). MC_BENCH_THREADS sets torch's threads, MC_BENCH_DEVICE the device (default: the GPU if
    there is one), MC_BENCH_DECODE_DTYPE the decode precision (default auto, as serving's
    MC_SERVE__DECODE_DTYPE: bfloat16 on this CPU). The float32 and bfloat16 decodes of one
    clip are also timed side by side, with the difference of their frames.
    Writes reports/bench/end_to_end.json.
"""

from __future__ import annotations

import copy
import os
import time

import pytest
import torch

from flows.profiles import profile_config
from models.assets import sample_data
from models.dit import MotionDiT
from models.pipeline import MotionControlPipeline
from models.sampling import GuidanceConfig
from models.text import TextEncoder
from models.vae import VideoVAE, decode_dtype_for
from models.video import read_image, read_video
from tests.bench.common import print_table, write_report

PROFILES = os.environ.get("MC_BENCH_E2E_PROFILES", "tiny").split(",")
METHODS = os.environ.get("MC_BENCH_E2E_METHODS", "naive_teacher,dual_teacher,student").split(",")
THREADS = int(os.environ.get("MC_BENCH_THREADS", "1"))
# A lent GPU runs the DiT and VAE (MediaPipe stays on the CPU). The totals are exact there;
# the split between sampling and decode is not (CUDA runs the sampler's kernels ahead).
DEVICE = os.environ.get("MC_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
DECODE_DTYPE = decode_dtype_for(os.environ.get("MC_BENCH_DECODE_DTYPE", "auto"), DEVICE)
TEACHER_STEPS = 50


def methods(run) -> dict[str, tuple[int, GuidanceConfig]]:
    """name: (Euler steps, guidance) with the profile's CFG scales."""
    scales = dict(text_scale=run.sampling.text_scale, reference_scale=run.sampling.reference_scale)
    return {"naive_teacher": (TEACHER_STEPS, GuidanceConfig(**scales, prune=False)),
            "dual_teacher": (TEACHER_STEPS, GuidanceConfig(**scales, dual=True)),
            "student": (run.sampling.student_steps, GuidanceConfig())}


def decode_precision(vae: VideoVAE, pipe: MotionControlPipeline) -> dict:
    """Seconds of one clip's float32 and bfloat16 decodes (same latents), and how far apart
    their frames are in 8-bit grey levels."""
    z = torch.randn(pipe.latent_shape(), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    frames, seconds = {}, {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        pipe.vae = copy.deepcopy(vae).set_decode_dtype(dtype)
        start = time.perf_counter()
        frames[name] = pipe.decode(z).astype(float)
        seconds[name] = time.perf_counter() - start
    diff = abs(frames["float32"] - frames["bfloat16"])
    return {"float32_s": seconds["float32"], "bfloat16_s": seconds["bfloat16"],
            "speedup": seconds["float32"] / seconds["bfloat16"],
            "mean_abs_diff_grey_levels": float(diff.mean()),
            "max_abs_diff_grey_levels": float(diff.max())}


@pytest.mark.timeout(4 * 3600)
def test_bench_end_to_end():
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    reference = read_image(sample_data("opencv-doc/basketball1.png").read_bytes())
    footage = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=64).frames
    text = TextEncoder()
    results, rows = {}, []
    for profile in PROFILES:
        run = profile_config(profile)
        dit = MotionDiT(run.dit, stage=3).to(DEVICE)
        vae = VideoVAE(run.vae).to(DEVICE)
        served_vae = copy.deepcopy(vae).set_decode_dtype(DECODE_DTYPE)
        driving = footage[:run.clip.frames]
        e2e = {}
        chosen = {k: v for k, v in methods(run).items() if k in METHODS}
        for name, (steps, guidance) in reversed(chosen.items()):  # student first
            pipe = MotionControlPipeline(dit, served_vae, text, size=run.resolution,
                                         frames=run.clip.frames, steps=steps,
                                         guidance=guidance)
            if not results and name == "student":  # once: imports, MediaPipe, first calls
                pipe(reference, driving, seed=0)
            out = pipe(reference, driving, seed=0)
            assert out.frames.shape == (run.clip.frames, run.resolution, run.resolution, 3)
            e2e[name] = {"total_s": sum(out.timings.values()), **out.timings, "nfe": out.nfe}
            print(f"{profile} {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in e2e[name].items()),
                  flush=True)  # a small-shape run takes long: each method's figures as it ends
        precision = decode_precision(vae, pipe)
        print(f"{profile} decode: {precision}", flush=True)
        naive = e2e["naive_teacher"]["total_s"]
        results[profile] = {
            "decode_precision": precision,
            "shapes": {"resolution": run.resolution, "frames": run.clip.frames,
                       "dit_parameters": sum(p.numel() for p in dit.parameters())},
            "end_to_end": e2e,
            "speedup_student_vs_naive": naive / e2e["student"]["total_s"]}
        if "dual_teacher" in e2e:
            results[profile]["speedup_student_vs_dual"] = \
                e2e["dual_teacher"]["total_s"] / e2e["student"]["total_s"]
            results[profile]["speedup_dual_vs_naive"] = naive / e2e["dual_teacher"]["total_s"]
        stages = [k for k in e2e["student"] if k not in ("total_s", "nfe")]
        rows += [[profile, m, e2e[m]["nfe"], *[e2e[m][k] for k in stages], e2e[m]["total_s"],
                  naive / e2e[m]["total_s"]] for m in e2e]
        assert e2e["naive_teacher"]["nfe"] == 3 * TEACHER_STEPS
        assert e2e["student"]["nfe"] == run.sampling.student_steps
    print_table("end to end (MotionControlPipeline, random weights), seconds",
                ["profile", "method", "NFE", *stages, "total", "x vs naive"], rows)
    write_report("end_to_end",
                 inputs={"profiles": PROFILES, "methods": METHODS, "teacher_steps": TEACHER_STEPS,
                         "reference": "opencv-doc/basketball1.png",
                         "driving": "opencv-doc/vtest.avi", "torch_threads": THREADS,
                         "device": DEVICE, "decode_dtype": str(DECODE_DTYPE)},
                 baseline="naive teacher: 3 branches x 50 Euler steps", results=results)
