"""Synthetic render speed: frames/s of `render_clip` at 64, 128 and 256 px on one core.

Baseline: real time at 30 fps (the rate the clips play at), measured in the same run as
the candidate, so the table's ratio reads "how many times faster than real time". The
static camera reuses one background view; the zoom_in camera warps the background every
frame, so both are measured. Each figure is end to end: forward kinematics, projection,
depth ordering, drawing, the reference image and the keypoints.

The pose maps the teacher is conditioned on (`render_pose_map`, one per part: body, hands,
face) are rendered from keypoints for every training clip, so they are measured too, on the
same baseline: per frame, all three parts.
"""

from __future__ import annotations

import cv2

from models.motion import render_pose_maps
from models.synthetic import make_motion, render_clip, sample_character
from tests.bench.common import print_table, timeit, write_report

FRAMES, FPS = 120, 30
SIZES = (64, 128, 256)
CAMERAS = ("static", "zoom_in")
REAL_TIME_FPS = 30.0


def test_bench_render():
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core, as the figures claim
    results, rows = {}, []

    def measure(what: str, key: str, size: int, render) -> None:
        timing = timeit(render, repeats=5)
        fps = FRAMES / timing["median_s"]
        results[f"{key}_{size}px"] = {**timing, "frames_per_s": fps,
                                      "x_real_time": fps / REAL_TIME_FPS}
        rows.append([what, f"{size}", fps, fps / REAL_TIME_FPS,
                     fps / results[f"{key}_64px"]["frames_per_s"]])

    try:
        motion = make_motion("dance", frames=FRAMES, fps=FPS, intensity=1.0)
        character = sample_character(5)
        for camera in CAMERAS:
            for size in SIZES:
                measure(f"clip, {camera} camera", camera, size,
                        lambda s=size, c=camera: render_clip(character, motion, size=s, camera=c))
        keypoints = render_clip(character, motion, size=64).keypoints
        for size in SIZES:
            measure("pose maps (3 parts)", "pose_maps", size,
                    lambda s=size: [render_pose_maps(k, (s, s)) for k in keypoints])
    finally:
        cv2.setNumThreads(threads)
    print_table("render_clip and pose maps, one core",
                ["what", "size", "frames/s", "x real time (30 fps)", "x vs 64 px"], rows)
    write_report("render", inputs={"frames": FRAMES, "fps": FPS, "sizes": SIZES,
                                   "cameras": CAMERAS, "action": "dance", "character_seed": 5,
                                   "cv2_threads": 1},
                 baseline=f"real time at {REAL_TIME_FPS:g} fps", results=results)
    assert all(r["frames_per_s"] > REAL_TIME_FPS for r in results.values())
