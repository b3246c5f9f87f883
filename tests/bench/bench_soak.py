"""Soak: does tritonserver hold its memory and its error codes over many requests?

The real tritonserver with a tiny student's repository (tests/bench/conftest.py `served`).
After a warm-up (10 good requests, every kind of bad request 10 times) the resident memory
of the server and all its model processes is taken; then 10 rounds of 100 malformed requests
(the catalogue of tests/serving_requests.py, in turn) and 10 good ones, and the memory again.

    good requests   perf_analyzer, Triton's own load generator (tests/bench/perf.py), on a
                    real photo and 9 frames of vtest.avi: its latency figures are reported
    bad requests    tritonclient's gRPC client, so every status code is counted: each
                    must be INVALID_ARGUMENT (perf_analyzer cannot tell error codes apart)

Targets (issue "Serving for real clients"): < 5 % RSS growth after the warm-up; 0 errors
other than INVALID_ARGUMENT.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from models.assets import sample_data
from models.video import encode_mp4, read_video
from serving.server import TritonServer
from tests.bench.common import print_table, write_report
from tests.bench.perf import request_data, run_perf_analyzer
from tests.serving_requests import bad_requests, raw_request

ROUNDS, BAD_PER_ROUND, GOOD_PER_ROUND = 10, 100, 10
PROMPT = "a person walking in the street, the camera pans left"


def server_rss(server: TritonServer) -> dict[str, int]:
    """Resident bytes of tritonserver and of each model's processes (Python stubs, named by
    the model folder in their command line), and their total."""
    root = server.process
    rss = {"tritonserver": root.memory_info().rss}
    for child in root.children(recursive=True):
        model = next((Path(arg).parent.parent.name for arg in child.cmdline()
                      if arg.endswith("model.py")), child.name())
        rss[model] = rss.get(model, 0) + child.memory_info().rss
    return {**rss, "total": sum(rss.values())}


def send_bad(url: str, client, cases: list, count: int, codes: Counter) -> None:
    for i in range(count):
        image, video, prompt, _ = cases[i % len(cases)]
        try:
            raw_request(url, image, video, prompt, client=client)
            codes["OK (expected an error)"] += 1
        except InferenceServerException as exc:
            codes[str(exc.status()).removeprefix("StatusCode.")] += 1


@pytest.mark.timeout(3600)  # ~20 min on 2 cores: the malformed requests that reach MediaPipe
def test_bench_soak(served, tmp_path):
    settings, version, repository = served
    reference = sample_data("opencv-doc/basketball1.png").read_bytes()
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=9)
    driving = encode_mp4(clip.frames, clip.fps)
    cases = list(bad_requests(reference, driving, clip.frames, clip.fps,
                              settings.serve.max_image_side).values())
    good = [request_data(reference, driving, PROMPT, seed) for seed in range(3)]

    with TritonServer(settings, repository) as server:
        url = server.grpc_url
        client = grpcclient.InferenceServerClient(url)
        warmup = Counter()
        run_perf_analyzer(url, "motion_control", good, 10, tmp_path / "warmup")
        send_bad(url, client, cases, 10 * len(cases), warmup)
        before = server_rss(server)
        pids = sorted(p.pid for p in server.process.children(recursive=True))

        codes, rounds, start = Counter(), [], time.perf_counter()
        for i in range(ROUNDS):
            send_bad(url, client, cases, BAD_PER_ROUND, codes)
            result = run_perf_analyzer(url, "motion_control", good, GOOD_PER_ROUND,
                                       tmp_path / f"round{i}")
            rounds.append({"rss_bytes": server_rss(server)["total"],
                           "good_p50_s": float(result["row"]["p50 latency"]) / 1e6,
                           "good_p99_s": float(result["row"]["p99 latency"]) / 1e6,
                           "good_rps": float(result["row"]["Inferences/Second"])})
        wall = time.perf_counter() - start
        after = server_rss(server)
        restarted = sorted(p.pid for p in server.process.children(recursive=True)) != pids
        client.close()

    growth = (after["total"] - before["total"]) / before["total"]
    by_model = {name: after[name] - before.get(name, 0) for name in after if name != "total"}
    other_errors = sum(n for code, n in codes.items() if code != "INVALID_ARGUMENT")
    results = {"rss_before_bytes": before["total"], "rss_after_bytes": after["total"],
               "rss_growth": growth, "rss_growth_bytes_by_process": by_model,
               "bad_requests": sum(codes.values()), "status_codes": dict(codes),
               "non_invalid_argument_errors": other_errors,
               "good_requests": ROUNDS * GOOD_PER_ROUND, "model_process_restarted": restarted,
               "rounds": rounds, "wall_s": wall, "warmup_status_codes": dict(warmup)}
    print_table("soak: 1,000 malformed + 100 good requests (tiny student)",
                ["figure", "value"],
                [["RSS after warm-up", f"{before['total'] / 2**20:.0f} MiB"],
                 ["RSS after the soak", f"{after['total'] / 2**20:.0f} MiB"],
                 ["growth", f"{growth:+.2%}"],
                 ["growth by process", ", ".join(f"{k} {v / 2**20:+.0f} MiB"
                                                 for k, v in sorted(by_model.items()))],
                 ["status codes of the malformed requests", str(dict(codes))],
                 ["errors other than INVALID_ARGUMENT", other_errors],
                 ["good requests' p50 (first / last round)",
                  f"{rounds[0]['good_p50_s']:.2f} / {rounds[-1]['good_p50_s']:.2f} s"],
                 ["a model process restarted", restarted], ["wall", f"{wall:.0f} s"]])
    write_report("soak", inputs={
        "model": f"tiny student version {version} (random weights)",
        "good": "basketball1.png + 9 frames of vtest.avi, by perf_analyzer, concurrency 1",
        "bad": f"{len(cases)} kinds of malformed request (tests/serving_requests.py), in turn",
        "rounds": ROUNDS, "bad_per_round": BAD_PER_ROUND, "good_per_round": GOOD_PER_ROUND,
        "warmup": "10 good, 10 of each bad kind"},
        baseline="the server's RSS after the warm-up", results=results)
    assert other_errors == 0, codes
    assert not restarted
