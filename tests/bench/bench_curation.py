"""Curation throughput on a local Ray, on the same jobs in one run: 1 worker per stage held
to one core (baseline: what one worker does), 1 worker per stage on every core (the stages
overlap), and 2 workers per stage on every core (candidate). The cores are set by CPU
affinity, which Ray's processes inherit. With each stage's clips/s per worker, Ray's start-up
and the peak memory of every Ray process (proportional set size, so the shared object store
is counted once). Writes reports/bench/curation.json."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

from flows.curate import clip_spec, plan_jobs
from flows.curation_pipeline import PipelineStats, ray_session, run_pipeline
from flows.settings import load_settings
from tests.bench.common import print_table, write_report


class PeakMemory:
    """The largest total PSS of this process's descendants (raylet, GCS, the workers) while
    the block runs, sampled every half second."""

    def __init__(self):
        self.peak_bytes, self._stop = 0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            total = 0
            for proc in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):  # gone between listing and reading
                    total += proc.memory_full_info().pss
            self.peak_bytes = max(self.peak_bytes, total)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(jobs, spec, settings, workers: int, cores: set[int]) -> dict:
    settings = settings.model_copy(update={"curate": settings.curate.model_copy(
        update={"workers": workers})})
    stats = PipelineStats()
    every_core = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)  # before Ray starts: its processes inherit it
    try:
        with PeakMemory() as memory, ray_session(settings) as ray_info:
            start = time.perf_counter()
            rows = run_pipeline(jobs, spec, settings, f"datasets/bench/staging/{workers}",
                                stats=stats)
            seconds = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, every_core)
    return {"workers_per_stage": workers, "cores": len(cores),
            "clips": len(rows), "kept": sum(r["kept"] for r in rows), "seconds": seconds,
            "clips_per_s": len(rows) / seconds, "ray_start_s": ray_info["start_s"],
            "peak_pss_gib": memory.peak_bytes / 2**30, "stages": stats.per_stage(),
            "digests": sorted(r.get("digest", "") for r in rows)}


def test_bench_curation():
    settings = load_settings(home=Path(tempfile.mkdtemp(prefix="bench-curation-")))
    spec = clip_spec(settings)
    by_source = defaultdict(list)
    for job in plan_jobs(settings, spec):
        by_source[job.source].append(job)
    jobs = by_source["synthetic"][::6] + by_source["mocap"][:2] + by_source["video"][:1]
    cores = sorted(os.sched_getaffinity(0))
    results = {"workers_1_one_core": run(jobs, spec, settings, 1, set(cores[:1])),
               "workers_1": run(jobs, spec, settings, 1, set(cores)),
               "workers_2": run(jobs, spec, settings, 2, set(cores))}
    base = results["workers_1_one_core"]
    for r in results.values():
        assert r["digests"] == base["digests"] and r["clips"] > 0  # the same dataset
        r["vs_baseline"] = r["clips_per_s"] / base["clips_per_s"]
    results["speedup_2_workers_vs_1_one_core"] = results["workers_2"]["vs_baseline"]
    stages = base["stages"]
    total = sum(s["seconds"] for s in stages.values())
    print_table("curation stages (1 worker each, one core)",
                ["stage", "items", "seconds", "items/s per worker", "share"],
                [[name, s["items"], s["seconds"], s["items_per_s_per_worker"],
                  f"{100 * s['seconds'] / total:.0f}%"] for name, s in stages.items()])
    print_table("curation throughput on local Ray",
                ["run", "cores", "clips", "clips/s", "vs baseline", "Ray start (s)",
                 "peak Ray memory (GiB)"],
                [[name, r["cores"], r["clips"], r["clips_per_s"], r["vs_baseline"],
                  r["ray_start_s"], r["peak_pss_gib"]]
                 for name, r in results.items() if isinstance(r, dict)])
    for r in results.values():
        if isinstance(r, dict):
            del r["digests"]
    write_report("curation", inputs={"clip_spec": vars(spec), "jobs": len(jobs),
                                     "sources": sorted({j.source for j in jobs})},
                 baseline="1 worker per stage on one core (local Ray)", results=results)
