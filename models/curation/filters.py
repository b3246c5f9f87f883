"""All curation filters on one clip, sharing the optical flow between the motion filters."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.curation.annotate import annotate
from models.curation.base import CurationThresholds, FilterResult, check_frames
from models.curation.coverage import keypoint_coverage_filter
from models.curation.identity import appearance_filter, identity_filter
from models.curation.optical_flow import (
    ClipFlow,
    clip_flow,
    fluency_filter,
    motion_amplitude_filter,
)
from models.curation.quality import (
    exposure_filter,
    resolution_filter,
    sharpness_filter,
    static_filter,
)


def run_filters(frames: np.ndarray, keypoints: np.ndarray | None,
                reference_image: np.ndarray | None, thresholds: CurationThresholds,
                timings: dict[str, float] | None = None,
                flow: ClipFlow | None = None,
                identity: FilterResult | None = None) -> list[FilterResult]:
    """Run every filter on one clip, in a fixed order, cheapest first. A clip is kept when
    every result passed. `reference_image` may also be its precomputed `face_embedding`
    (see `identity_filter`); `identity` may be the identity filter's result, computed
    elsewhere (the curation pipeline runs dlib in a stage of its own). If `timings` is given,
    it receives the seconds spent per filter (and in `optical_flow`, computed once for the
    motion filters)."""
    frames = check_frames(frames, min_frames=2)
    th = thresholds
    timings = {} if timings is None else timings

    def timed(name: str, fn: Callable, *args):
        start = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - start
        return out

    if flow is None:
        flow = timed("optical_flow", clip_flow, frames, th)
    steps = [
        ("resolution", resolution_filter, frames, th),
        ("sharpness", sharpness_filter, frames, th),
        ("exposure", exposure_filter, frames, th),
        ("static", static_filter, flow, th),
        ("motion_amplitude", motion_amplitude_filter, flow, th),
        ("fluency", fluency_filter, flow, th),
        ("keypoint_coverage", keypoint_coverage_filter, keypoints, th),
        ("appearance", appearance_filter, frames, th, keypoints),
        ("identity", identity_filter, frames, reference_image, th) if identity is None
        else ("identity", lambda: identity),
    ]
    return [timed(name, fn, *args) for name, fn, *args in steps]


def kept(results: list[FilterResult]) -> bool:
    """Whether a clip passed every filter."""
    return all(r.passed for r in results)


@dataclass(frozen=True)
class Verdict:
    """What curation decided about one clip, and everything it measured on the way."""

    kept: bool
    reason: str  # "" when kept, else the failed filters' reasons joined
    failed: tuple[str, ...]  # names of the filters that failed
    scores: dict[str, float]  # "<filter>.<score>" -> value
    annotations: dict
    timings: dict[str, float]


def curate_clip(frames: np.ndarray, keypoints: np.ndarray | None,
                reference: np.ndarray | None, thresholds: CurationThresholds,
                action_phrase: str | None = None,
                identity: FilterResult | None = None) -> Verdict:
    """Filters and annotations of one clip, sharing one optical-flow computation (and, if
    given, the identity filter's result computed elsewhere)."""
    frames = check_frames(frames, min_frames=2)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    flow = clip_flow(frames, thresholds)
    timings["optical_flow"] = time.perf_counter() - start
    results = run_filters(frames, keypoints, reference, thresholds, timings, flow=flow,
                          identity=identity)
    start = time.perf_counter()
    annotations = annotate(frames, keypoints, thresholds, action_phrase=action_phrase, flow=flow)
    timings["annotate"] = time.perf_counter() - start
    scores = {f"{r.name}.{k}": float(v) for r in results for k, v in r.scores.items()}
    reason = "; ".join(f"{r.name}: {r.reason}" for r in results if not r.passed)
    failed = tuple(r.name for r in results if not r.passed)
    return Verdict(kept(results), reason, failed, scores, annotations, timings)
