"""Curation throughput: clips/s with 2 workers (candidate) against 1 worker (baseline), on
the same jobs in one run, with the time split by stage (rendering or decoding, MediaPipe
extraction, optical flow, each filter, annotation). Writes reports/bench/curation.json."""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from flows.curate import clip_spec, plan_jobs
from flows.settings import load_settings
from models.curation.filters import curate_clip
from models.data.sources import make_samples
from tests.bench.common import print_table, write_report


def run_job(job, spec, thresholds, stages):
    start = time.perf_counter()
    samples = make_samples(job, spec)
    stages[f"make_{job.source}"] += time.perf_counter() - start
    for sample in samples:
        if sample["keypoints"] is None:
            continue
        verdict = curate_clip(sample["frames"], sample["keypoints"], sample["references"][0],
                              thresholds, sample["annotations"].get("action_phrase"))
        for name, seconds in verdict.timings.items():
            stages[name] += seconds
    return len(samples)


def run_all(jobs, spec, thresholds, workers):
    stages = defaultdict(float)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        clips = sum(pool.map(lambda job: run_job(job, spec, thresholds, stages), jobs))
    return clips, time.perf_counter() - start, dict(stages)


def test_bench_curation():
    settings = load_settings()
    spec = clip_spec(settings)
    all_jobs = plan_jobs(settings, spec)
    by_source = defaultdict(list)
    for job in all_jobs:
        by_source[job.source].append(job)
    jobs = by_source["synthetic"][::6] + by_source["mocap"][:2] + by_source["video"][:1]
    run_all(jobs[:2], spec, settings.curation, 1)  # warm-up: model loading, JIT of OpenCV
    results = {}
    for workers in (1, 2):
        clips, seconds, stages = run_all(jobs, spec, settings.curation, workers)
        results[f"workers_{workers}"] = {"clips": clips, "seconds": seconds,
                                         "clips_per_s": clips / seconds,
                                         "stage_seconds": stages}
    speedup = results["workers_2"]["clips_per_s"] / results["workers_1"]["clips_per_s"]
    results["speedup_2_workers_vs_1"] = speedup
    stages = results["workers_1"]["stage_seconds"]
    total = sum(stages.values())
    print_table("curation stages (1 worker)", ["stage", "seconds", "share"],
                [[k, v, f"{100 * v / total:.0f}%"] for k, v in
                 sorted(stages.items(), key=lambda kv: -kv[1])])
    print_table("curation throughput", ["workers", "clips", "clips/s", "vs 1 worker"],
                [[w, results[f"workers_{w}"]["clips"], results[f"workers_{w}"]["clips_per_s"],
                  results[f"workers_{w}"]["clips_per_s"] / results["workers_1"]["clips_per_s"]]
                 for w in (1, 2)])
    write_report("curation", inputs={"clip_spec": vars(spec), "jobs": len(jobs),
                                     "sources": sorted({j.source for j in jobs})},
                 baseline="1 worker (serial)", results=results)
    assert results["workers_2"]["clips"] == results["workers_1"]["clips"] > 0
