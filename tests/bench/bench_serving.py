"""Serving load and overhead: the real tritonserver with the repository of a tiny student
(random weights: the serving path is measured, not quality) against the same work in
process, on the same inputs (a real photo, 17 frames of vtest.avi: one window). Every
request has a prompt of its own, so the enhancer's cache of seen prompts never answers.

    triton      the SDK over gRPC to `motion_control` (BLS over the four models), at
                concurrency 1 (12 requests, with Triton's own split by model), 2 and 4:
                throughput and p50/p99 latency
    in-process  `serving.inprocess.InProcessAnimator`: the same stages (decode and checks,
                MediaPipe, identity, SmolLM2, sampling, watermark, mp4) in one process,
                one request at a time: Triton's overhead is triton p50 / this p50
    pipeline    `MotionControlPipeline.__call__` on the decoded inputs (decode included):
                the model path alone, without prompt enhancer, watermark and mp4

For the overhead, the in-process, pipeline and Triton paths run in turn, round after round
(`triton_interleaved`), so that they share the load of this shared machine; the latency
runs at concurrency 1, 2 and 4 follow, with nothing else running in this process.

Every process uses one torch thread (MC_SERVE__TORCH_THREADS), as the server does.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from models.assets import sample_data
from models.text import TextEncoder
from models.video import encode_mp4, read_image, read_video
from serving.client import MotionControlClient
from serving.inprocess import InProcessAnimator
from serving.server import TritonServer
from serving.weights import load_served_bundle
from tests.bench.common import print_table, write_report

REPEATS = 6
FRAMES = 17  # the tiny profile's clip: one window
SUBJECTS = ("a person", "a dancer in a red dress", "an old man with a cane", "a child",
            "a knight in armour", "a woman in a raincoat")
SCENES = ("walking in the street, the camera pans left", "on a beach at sunset",
          "in a busy office", "on a rainy night, the camera zooms in", "in a forest clearing",
          "on a theatre stage")
STYLES = ("", ", filmed in black and white")
_prompts = itertools.count()


def next_prompt() -> str:
    """A prompt no request has had before (72 of them; ~50 requests are made)."""
    i = next(_prompts)
    return (f"{SUBJECTS[i % len(SUBJECTS)]} {SCENES[i // len(SUBJECTS) % len(SCENES)]}"
            f"{STYLES[i // (len(SUBJECTS) * len(SCENES)) % len(STYLES)]}")
CONCURRENCY = {1: 12, 2: 6, 4: 8}  # concurrency -> requests measured


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def latency_stats(latencies: list[float], wall_s: float) -> dict:
    return {"requests": len(latencies), "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99), "mean_s": statistics.mean(latencies),
            "throughput_rps": len(latencies) / wall_s, "latencies_s": latencies}


def measure_interleaved(calls: dict, repeats: int = REPEATS) -> dict:
    """Each path once per round, in turn, so that all see the same load on a shared
    machine (other work runs here); a warm-up round first (caches, lazy imports)."""
    latencies = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if round_:
                latencies[name].append(time.perf_counter() - t0)
    return {name: latency_stats(values, sum(values)) for name, values in latencies.items()}


def model_stats(client: MotionControlClient) -> dict[str, dict[str, float]]:
    """Triton's own cumulative figures per model: requests, and seconds queued and computing."""
    stats = client.client.get_inference_statistics(as_json=True)["model_stats"]
    return {m["name"]: {"requests": int(m["inference_stats"]["success"].get("count", 0)),
                        "queue_s": int(m["inference_stats"]["queue"].get("ns", 0)) / 1e9,
                        "compute_s": sum(int(m["inference_stats"][k].get("ns", 0))
                                         for k in ("compute_input", "compute_infer",
                                                   "compute_output")) / 1e9}
            for m in stats}


def stage_split(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Mean seconds per request of each model between two `model_stats`."""
    split = {}
    for name, end in after.items():
        start = before.get(name, {"requests": 0, "queue_s": 0.0, "compute_s": 0.0})
        n = end["requests"] - start["requests"]
        if n:
            split[name] = {"requests": n,
                           "queue_s": (end["queue_s"] - start["queue_s"]) / n,
                           "compute_s": (end["compute_s"] - start["compute_s"]) / n}
    return split


def measure_concurrent(url: str, settings, args: tuple, concurrency: int, requests: int) -> dict:
    clients = [MotionControlClient(url, settings=settings) for _ in range(concurrency)]

    def one(i: int) -> float:
        t0 = time.perf_counter()
        clients[i % concurrency].animate(*args, next_prompt(), seed=i)
        return time.perf_counter() - t0

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: one request per client
        start = time.perf_counter()
        latencies = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return latency_stats(latencies, wall)


def test_bench_serving(served):
    settings, version, repository = served
    torch.set_num_threads(settings.serve.torch_threads)
    reference = sample_data("opencv-doc/basketball1.png").read_bytes()
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=FRAMES)
    driving = encode_mp4(clip.frames, clip.fps)
    args = (reference, driving)

    bundle = load_served_bundle(Path(repository) / "student_dit" / "1")
    pipeline = bundle.pipeline(text=TextEncoder(Path(repository) / "student_dit" / "1" /
                                                "text_encoder"))

    def pipeline_call():
        image = read_image(reference)
        frames = read_video(driving).frames
        return pipeline(image, frames, next_prompt(), seed=0)

    animator = InProcessAnimator(settings, repository)
    start = time.perf_counter()
    with TritonServer(settings, repository) as server:
        startup = time.perf_counter() - start
        client = MotionControlClient(server.grpc_url, settings=settings)
        results = measure_interleaved({
            "pipeline": pipeline_call,
            "in_process": lambda: animator(*args, next_prompt(), seed=0),
            "triton_interleaved": lambda: client.animate(*args, next_prompt(), seed=0)})
        results["in_process"]["stage_s"] = animator.timings
        for concurrency, requests in CONCURRENCY.items():
            before = model_stats(client)
            results[f"triton_c{concurrency}"] = measure_concurrent(
                server.grpc_url, settings, args, concurrency, requests)
            if concurrency == 1:  # Triton's split (its warm-up request included): the
                # entry's time holds its children's; the stages side by side overlap
                results["triton_c1"]["stage_s"] = stage_split(before, model_stats(client))
        client.close()
    triton = results["triton_interleaved"]["p50_s"]
    results["ratio_p50_triton_vs_in_process"] = triton / results["in_process"]["p50_s"]
    results["ratio_p50_triton_vs_pipeline"] = triton / results["pipeline"]["p50_s"]
    results["server_startup_s"] = startup

    rows = [[name, r["requests"], r["p50_s"], r["p99_s"], r["throughput_rps"],
             r["p50_s"] / results["in_process"]["p50_s"]]
            for name, r in results.items() if isinstance(r, dict) and "p50_s" in r]
    print_table("Triton's split at concurrency 1 (mean s per request)",
                ["model", "requests", "queue s", "compute s"],
                [[name, v["requests"], v["queue_s"], v["compute_s"]]
                 for name, v in results["triton_c1"]["stage_s"].items()])
    print_table(f"serving: latency and throughput (tiny student, {FRAMES} frames, "
                "1 torch thread)",
                ["path", "requests", "p50 s", "p99 s", "req/s", "p50 / in-process"], rows)
    write_report("serving", inputs={
        "model": f"tiny student version {version} (random weights), 64² -> 256² output",
        "reference": "opencv-doc/basketball1.png", "driving": f"vtest.avi, {FRAMES} frames",
        "prompts": "one of its own per request (SUBJECTS x SCENES x STYLES)",
        "torch_threads": settings.serve.torch_threads,
        "concurrency_requests": CONCURRENCY, "cpu_count": os.cpu_count()},
        baseline="InProcessAnimator (the same stages in one process, one request at a time); "
                 "also MotionControlPipeline.__call__ alone", results=results)
    assert results["ratio_p50_triton_vs_in_process"] < 1.2
