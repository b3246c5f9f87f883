"""Acceleration: naive three-branch teacher vs dual-branch teacher vs few-step student.

Baseline: the naive teacher (3 branches x 50 Euler steps), in the same run, on the same
held-out synthetic cross-identity pairs (characters and motions kept out of training, with
the ground-truth render of the reference character performing the motion) and the same seeds.

- sampling: denoising + VAE decode from precomputed conditions;
- end to end: MotionControlPipeline from the reference image and the driving frames (motion
  extraction with MediaPipe, retargeting, identity and conditions, sampling, decode);
- quality against the ground truth: SSIM, PSNR, pose PCK (MediaPipe on the generated frames
  vs the retargeted driving keypoints); dual vs naive output difference on the same noise.

Needs a trained stage-3 teacher and a distilled student in the registry of the current
settings (make train-stage0 ... train-stage3 && make distill). Writes
reports/bench/distillation.json.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flows.datasets import load_manifest, shard_dataset
from flows.registry import load_bundle, newest_version
from flows.runtime import configure
from flows.settings import STUDENT_MODEL, TEACHER_MODEL
from flows.store import open_store
from models.frames import resize_frames, to_uint8
from models.metrics import keypoint_metrics, psnr, ssim
from models.motion import HolisticExtractor
from models.objectives import LatentObjective
from models.sampling import FlowMatchSampler
from models.text import TextEncoder
from tests.bench.common import print_table, timeit, write_report

PAIRS = 4  # held-out cross-identity pairs
TEACHER_STEPS = 50



@pytest.fixture(scope="module")
def models():
    settings = configure()
    teacher_v = newest_version(settings, TEACHER_MODEL, stage="3")
    student_v = newest_version(settings, STUDENT_MODEL, distill_stage="steps")
    if teacher_v is None or student_v is None:
        pytest.fail("needs a stage-3 teacher and a student in the registry: run "
                    "make train-stage0 ... make train-stage3 && make distill first")
    teacher = load_bundle(settings, TEACHER_MODEL, version=teacher_v)
    student = load_bundle(settings, STUDENT_MODEL, version=student_v)
    manifest = load_manifest(open_store(settings), settings.curate.dataset,
                             teacher.tags.get("dataset_digest"))
    data = shard_dataset(settings, manifest, "eval", seed=1234, shuffle_buffer=1,
                         cross_identity=1.0, dropout=None)
    pairs = [b for _, b in zip(range(PAIRS), DataLoader(data, batch_size=1), strict=False)]
    return settings, teacher, student, pairs


def test_bench_distillation(models):
    settings, teacher, student, pairs = models
    torch.set_num_threads(1)
    text = TextEncoder()
    size = teacher.resolution
    methods = {  # name: (model, steps, guidance)
        "naive_teacher": (teacher.dit, TEACHER_STEPS, teacher.guidance(naive=True)),
        "dual_teacher": (teacher.dit, TEACHER_STEPS, replace(teacher.guidance(), dual=True)),
        "student": (student.dit, student.steps, student.guidance()),
    }
    prepare = LatentObjective(teacher.vae, text, size, steps=teacher.steps,
                              guidance=teacher.guidance()).prepare
    sampler = FlowMatchSampler()
    times = {m: [] for m in methods}
    quality = {m: [] for m in methods}
    nfe, dual_diff = {}, []
    with HolisticExtractor() as extractor:
        for i, batch in enumerate(pairs):
            x0, cond, _ = prepare(batch)
            truth = resize_frames(batch["frames"], size)[0]
            outputs = {}
            for name, (dit, steps, guidance) in methods.items():
                def run(dit=dit, steps=steps, guidance=guidance, cond=cond, shape=x0.shape,
                        seed=i):
                    with torch.no_grad():
                        latents = sampler.sample(dit, cond, shape, steps=steps,
                                                 guidance=guidance,
                                                 generator=torch.Generator().manual_seed(seed))
                        return teacher.vae.decode_latents(latents)

                times[name].append(timeit(run, repeats=2, warmup=0 if i else 1)["median_s"])
                nfe[name] = sampler.last_nfe
                outputs[name] = frames = to_uint8(run())[0]
                kps = keypoint_metrics(frames, np.asarray(batch["keypoints"][0]),
                                       extractor=extractor)
                quality[name].append({"ssim": ssim(frames, truth), "psnr": psnr(frames, truth),
                                      "pose_pck": kps["pose_pck"]})
            dual_diff.append(float(np.abs(outputs["dual_teacher"].astype(np.float32)
                                          - outputs["naive_teacher"]).mean()))

    # End to end on the first pair: reference image + driving frames -> clip.
    batch = pairs[0]
    reference = np.asarray(batch["reference"][0])
    driving = np.asarray(batch["driver_frames"][0])
    e2e = {}
    for name, (_, steps, guidance) in methods.items():
        bundle = student if name == "student" else teacher
        pipe = bundle.pipeline(text=text, steps=steps, guidance=guidance)
        pipe(reference, driving, seed=0)  # warm-up
        out = pipe(reference, driving, seed=0)
        e2e[name] = {"total_s": sum(out.timings.values()), **out.timings, "nfe": out.nfe}

    sampling = {m: float(np.median(t)) for m, t in times.items()}
    mean = {m: {k: float(np.nanmean([q[k] for q in rows])) for k in rows[0]}
            for m, rows in quality.items()}
    results = {
        "sampling_s": sampling, "nfe": nfe, "quality": mean, "end_to_end": e2e,
        "speedup_sampling_vs_naive": sampling["naive_teacher"] / sampling["student"],
        "speedup_sampling_vs_dual": sampling["dual_teacher"] / sampling["student"],
        "speedup_dual_vs_naive": sampling["naive_teacher"] / sampling["dual_teacher"],
        "speedup_end_to_end_vs_dual": e2e["dual_teacher"]["total_s"]
        / e2e["student"]["total_s"],
        "speedup_end_to_end_vs_naive": e2e["naive_teacher"]["total_s"]
        / e2e["student"]["total_s"],
        "dual_vs_naive_mean_abs_diff_uint8": float(np.mean(dual_diff)),
        "ssim_teacher": mean["naive_teacher"]["ssim"],
        "ssim_dual_teacher": mean["dual_teacher"]["ssim"],
        "ssim_student": mean["student"]["ssim"],
        "teacher_version": teacher.version, "student_version": student.version,
    }
    print_table("sampling (denoising + VAE decode), held-out cross-identity pairs",
                ["method", "NFE", "seconds", "x vs naive", "SSIM", "PSNR", "pose PCK"],
                [[m, nfe[m], sampling[m], sampling["naive_teacher"] / sampling[m],
                  mean[m]["ssim"], mean[m]["psnr"], mean[m]["pose_pck"]] for m in methods])
    stages = [k for k in e2e["student"] if k not in ("total_s", "nfe")]
    print_table("end to end (MotionControlPipeline), seconds", ["method", *stages, "total"],
                [[m, *[e2e[m][k] for k in stages], e2e[m]["total_s"]] for m in methods])
    write_report("distillation",
                 inputs={"pairs": PAIRS, "teacher_steps": TEACHER_STEPS,
                         "student_steps": student.steps, "resolution": size,
                         "frames": teacher.frames, "torch_threads": 1,
                         "guidance": teacher.guidance().__dict__},
                 baseline="naive teacher: 3 branches x 50 Euler steps", results=results)
    assert nfe["student"] == student.steps <= 4
    assert nfe["naive_teacher"] == 3 * TEACHER_STEPS
    assert nfe["dual_teacher"] == 2 * TEACHER_STEPS + 1
