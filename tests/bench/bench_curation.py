"""Curation throughput on a local Ray: clips/s with 2 workers per stage (candidate) against
1 worker per stage (baseline), on the same jobs in one run, with each stage's clips/s per
worker, Ray's start-up and the peak memory of every Ray process (proportional set size, so
the shared object store is counted once). Writes reports/bench/curation.json."""

from __future__ import annotations

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
                try:
                    total += proc.memory_full_info().pss
                except psutil.Error:
                    pass  # gone between listing and reading
            self.peak_bytes = max(self.peak_bytes, total)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(jobs, spec, settings, workers: int) -> dict:
    settings = settings.model_copy(update={"curate": settings.curate.model_copy(
        update={"workers": workers})})
    stats = PipelineStats()
    with PeakMemory() as memory, ray_session(settings) as ray_info:
        start = time.perf_counter()
        rows = run_pipeline(jobs, spec, settings, f"datasets/bench/staging/{workers}",
                            stats=stats)
        seconds = time.perf_counter() - start
    return {"clips": len(rows), "kept": sum(r["kept"] for r in rows), "seconds": seconds,
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
    results = {f"workers_{w}": run(jobs, spec, settings, w) for w in (1, 2)}
    one, two = results["workers_1"], results["workers_2"]
    assert two["digests"] == one["digests"] and one["clips"] > 0  # the same dataset
    results["speedup_2_workers_vs_1"] = two["clips_per_s"] / one["clips_per_s"]
    stages = one["stages"]
    total = sum(s["seconds"] for s in stages.values())
    print_table("curation stages (1 worker each)",
                ["stage", "items", "seconds", "items/s per worker", "share"],
                [[name, s["items"], s["seconds"], s["items_per_s_per_worker"],
                  f"{100 * s['seconds'] / total:.0f}%"] for name, s in stages.items()])
    print_table("curation throughput on local Ray",
                ["workers per stage", "clips", "clips/s", "vs 1 worker", "Ray start (s)",
                 "peak Ray memory (GiB)"],
                [[w, r["clips"], r["clips_per_s"], r["clips_per_s"] / one["clips_per_s"],
                  r["ray_start_s"], r["peak_pss_gib"]]
                 for w, r in ((1, one), (2, two))])
    for r in (one, two):
        del r["digests"]
    write_report("curation", inputs={"clip_spec": vars(spec), "jobs": len(jobs),
                                     "sources": sorted({j.source for j in jobs})},
                 baseline="1 worker per stage (local Ray)", results=results)
