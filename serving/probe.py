"""Probe: send N valid requests to each served `motion_control` and check every answer.

    python -m serving.probe --url mc-canary:8001 --url mc-stable:8001 --requests 20

The inputs need no file: a synthetic character rendered in its neutral pose is the
reference, and the same character waving for a short clip is the driving video
(models/synthetic, deterministic by --seed; MediaPipe finds the person in both, as curation
does on these renders). Requests go through the SDK (serving/client.py), one after another
to each URL and to all URLs at once, so a slow spell of the machine falls on every track
alike, which keeps their latencies comparable (the rollout analysis divides canary p99 by
stable p99).

One line per URL: requests ok / failed, p50 / p99 seconds. Exit 0 only when every request
to every URL got an mp4 carrying the MotionControl watermark and provenance tags; 1
otherwise (a URL that does not answer included); 2 for bad arguments. This is the load
step of the chart's rollout analysis (the `probe` metric's Job) and works against a local
`motionctl serve` too.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from flows.errors import MotionControlError

FRAMES = 9  # a short clip: one window of the tiny student, a fraction of a real one
SIZE = 128  # pixels: enough for MediaPipe to find the body, small enough to send quickly
PROMPT = "a person waving"


@dataclass(frozen=True)
class ProbeInputs:
    reference_png: bytes
    driving_mp4: bytes


def probe_inputs(seed: int = 0) -> ProbeInputs:
    """A synthetic character (reference) and it waving (driving video), same seed, same bytes."""
    import cv2

    from models.synthetic import make_motion, render_clip, sample_character
    from models.video import encode_mp4

    clip = render_clip(sample_character(seed),
                       make_motion("wave", frames=FRAMES, fps=12, intensity=0.8), size=SIZE)
    png = cv2.imencode(".png", cv2.cvtColor(clip.reference_image, cv2.COLOR_RGB2BGR))[1]
    return ProbeInputs(png.tobytes(), encode_mp4(clip.frames, clip.fps))


@dataclass
class UrlReport:
    url: str
    seconds: list[float] = field(default_factory=list)  # every request's round trip
    failures: int = 0
    first_error: str = ""
    unreachable: str = ""

    @property
    def ok(self) -> int:
        return len(self.seconds) - self.failures

    def fail(self, error: str) -> None:
        self.failures += 1
        self.first_error = self.first_error or " ".join(error.split())  # one line

    def line(self, requests: int) -> str:
        if self.unreachable:
            return f"{self.url}: unreachable: {self.unreachable}"
        p50, p99 = np.percentile(self.seconds, [50, 99]) if self.seconds else (np.nan, np.nan)
        text = (f"{self.url}: {self.ok}/{requests} ok, {self.failures} failed, "
                f"p50 {p50:.2f} s, p99 {p99:.2f} s")
        return text + (f" (first failure: {self.first_error})" if self.first_error else "")

    def passed(self, requests: int) -> bool:
        return not self.unreachable and self.ok == requests


def check_answer(video: bytes) -> str:
    """Why this answer is not a verified MotionControl mp4; empty when it is."""
    from serving.client import verify

    try:
        check = verify(video)
    except MotionControlError as exc:
        return f"the answer is not a readable video: {exc}"
    if not check.watermark.found:
        return f"no watermark in the answer ({check})"
    if not check.provenance:
        return "the answer has no provenance tags"
    return ""


def probe_url(url: str, requests: int, inputs: ProbeInputs, *, timeout_s: float | None,
              seed: int) -> UrlReport:
    """`requests` requests one after another to one URL."""
    from serving.client import MotionControlClient

    report = UrlReport(url)
    with MotionControlClient(url, timeout_s=timeout_s) as client:
        try:
            client.ready()
        except MotionControlError as exc:
            report.unreachable = str(exc)
            return report
        for _ in range(requests):
            start = time.perf_counter()
            try:
                video = client.animate(inputs.reference_png, inputs.driving_mp4, PROMPT,
                                       seed=seed)
                error = ""
            except MotionControlError as exc:
                video, error = b"", str(exc)
            report.seconds.append(time.perf_counter() - start)
            error = error or check_answer(video)
            if error:
                report.fail(error)
    return report


def run_probe(urls: list[str], requests: int, *, timeout_s: float | None = None,
              seed: int = 0) -> list[UrlReport]:
    """Every URL probed at the same time (a thread each), so that the tracks share the
    machine's slow and fast spells alike and their latencies stay comparable."""
    inputs = probe_inputs(seed)
    with ThreadPoolExecutor(len(urls), thread_name_prefix="probe") as pool:
        return list(pool.map(lambda url: probe_url(url, requests, inputs,
                                                   timeout_s=timeout_s, seed=seed), urls))


def host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. mc-canary:8001)")
    return text


def positive(kind: type[int] | type[float]):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < math.inf:  # NaN fails the comparison too
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {kind.__name__}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.probe",
        description="Send N valid requests to each MotionControl gRPC URL; exit 0 only when "
                    "every one got a verified mp4.")
    p.add_argument("--url", action="append", required=True, type=host_port,
                   help="Triton gRPC HOST:PORT (repeat for each track)")
    p.add_argument("--requests", required=True, type=positive(int),
                   help="requests per URL")
    p.add_argument("--timeout", type=positive(float), default=None, metavar="S",
                   help="deadline of one request in seconds (default MC_SERVE__REQUEST_TIMEOUT_S)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    reports = run_probe(args.url, args.requests, timeout_s=args.timeout, seed=args.seed)
    for report in reports:
        print(report.line(args.requests), flush=True)
    return 0 if all(r.passed(args.requests) for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
