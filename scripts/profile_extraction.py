"""Where MediaPipe's time goes in the extractor, per frame and per request.

    PYTHONPATH=$PWD .venv/bin/python scripts/profile_extraction.py [--baseline OLD_TREE]

1. per frame: MediaPipe's own graph profiler (calculator run times) on the crops the
   tracker is fed for 17 frames of vtest.avi (a small pedestrian) and for a portrait (a
   visible face), with and without the face mesh refinement;
2. per frame, CPU ms: the same crops resized (input size), tracking vs static Holistic,
   static pose-only (the search);
3. graph life cycle: creation, first frame after creation or restart, a warm frame;
4. per request (`extract_motion`: basketball1.png + 17 frames of vtest.avi, the serving
   benchmark's inputs): this tree's extractor against the one of `--baseline` (a checkout
   of an older commit), interleaved, with a pause between requests as a server has while
   the request's later stages run.

CPU figures are process CPU time (MediaPipe works in its own threads); wall times on a shared
machine are noisy, so every comparison runs its variants in turn, round after round.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib.util
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
from mediapipe.framework import calculator_profile_pb2
from mediapipe.python import solution_base
from mediapipe.python.solutions.holistic import Holistic
from mediapipe.python.solutions.pose import Pose
from skimage.data import astronaut

from models.assets import sample_data
from models.extraction import extract_motion
from models.motion import extract as E
from models.video import read_image, read_video

FRAMES = 17


def cpu_ms(fn) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def tracker_crops(clip: np.ndarray) -> list[np.ndarray]:
    """The images the extractor's tracking graph is given for `clip`."""
    crops = []
    with E.HolisticExtractor() as extractor:
        tracker = extractor._graph("track")
        process = tracker.process
        tracker.process = lambda image: (crops.append(image.copy()), process(image))[1]
        extractor.extract(clip)
    return crops


def calculator_split(frames: list[np.ndarray], refine: bool, repeats: int = 3) -> dict:
    """ms per frame of each part of a tracking Holistic graph, from MediaPipe's profiler."""
    folder = tempfile.mkdtemp(prefix="mp-profile-")
    graph_class = solution_base.calculator_graph.CalculatorGraph

    def profiled(graph_config):
        config = graph_config.profiler_config
        config.enable_profiler = config.trace_enabled = True
        config.trace_log_path, config.trace_log_interval_count = folder + "/", 10**6
        return graph_class(graph_config=graph_config)

    solution_base.calculator_graph.CalculatorGraph = profiled
    try:
        graph = Holistic(static_image_mode=False, refine_face_landmarks=refine)
        for _ in range(repeats):  # (a profiled graph hangs in reset())
            for frame in frames:
                graph.process(frame)
        graph.close()
    finally:
        solution_base.calculator_graph.CalculatorGraph = graph_class
    parts = collections.Counter()
    for path in glob.glob(folder + "/*.binarypb"):
        profile = calculator_profile_pb2.GraphProfile()
        with open(path, "rb") as fh:
            profile.ParseFromString(fh.read())
        for calc in profile.calculator_profiles:
            parts[part_of(calc.name)] += calc.process_runtime.total
    n = repeats * len(frames)
    return {part: round(us / n / 1000, 2) for part, us in parts.most_common()}


def part_of(name: str) -> str:
    if name.startswith("poselandmarkcpu__posedetection"):
        return "pose detection"
    if name.startswith("poselandmarkcpu"):
        return ("pose landmarks (model)" if "inferencecalculator" in name
                else "pose landmarks (crop, decode, smoothing)")
    if name.startswith("facelandmarksfromposecpu"):
        return "face (detector in pose ROI + mesh)"
    if name.startswith("handlandmarksleftandrightcpu"):
        return ("hands (2x landmark model)" if "handlandmarkcpu__inference" in name
                else "hands (re-crop model, crops)")
    return "other"


def per_frame_cpu(makers: dict, frames_of: dict, rounds: int = 3) -> dict:
    """CPU ms per frame of each (graph, frames) variant, variants in turn each round."""
    graphs = {name: make() for name, make in makers.items()}
    times = collections.defaultdict(list)
    for name, graph in graphs.items():  # warm: models loaded
        graph.process(frames_of[name][0])
    for _ in range(rounds):
        for name, graph in graphs.items():
            frames = frames_of[name]
            times[name].append(cpu_ms(lambda g=graph, f=frames: [g.process(x) for x in f])
                               / len(frames))
    for graph in graphs.values():
        graph.close()
    return {name: round(min(t), 1) for name, t in times.items()}


def life_cycle(frames: list[np.ndarray], rounds: int = 3) -> dict:
    out = collections.defaultdict(list)
    first = frames[0]
    for _ in range(rounds):
        start = time.process_time()
        graph = Holistic(static_image_mode=False)
        out["create"].append((time.process_time() - start) * 1000)
        out["first frame after create"].append(cpu_ms(lambda g=graph: g.process(first)))
        out["warm frame"].append(statistics.median(cpu_ms(lambda g=graph, f=f: g.process(f))
                                                   for f in frames[1:]))
        out["reset() + 2 s idle (model reload in the background)"].append(
            cpu_ms(lambda g=graph: (g.reset(), time.sleep(2))))
        out["first frame after reset, reloaded"].append(cpu_ms(lambda g=graph: g.process(first)))
        graph.reset()
        out["first frame right after reset (reload on the request's path)"].append(
            cpu_ms(lambda g=graph: g.process(first)))
        graph.close()
    return {k: round(statistics.median(v), 1) for k, v in out.items()}


def requests(baseline: str | None, rounds: int = 5, pause_s: float = 1.0) -> dict:
    reference = read_image(sample_data("opencv-doc/basketball1.png").read_bytes())
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=FRAMES).frames
    extractors = {"this tree": E.HolisticExtractor()}
    if baseline:
        spec = importlib.util.spec_from_file_location(
            "baseline_extract", f"{baseline}/models/motion/extract.py")
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old
        spec.loader.exec_module(old)
        extractors["baseline"] = old.HolisticExtractor()
    times = collections.defaultdict(list)
    results = {}
    for round_ in range(rounds + 1):  # the first round warms up
        for name, extractor in extractors.items():
            time.sleep(pause_s)  # the request's later stages, as in a server
            start, cpu = time.perf_counter(), time.process_time()
            motion = extract_motion(reference, clip, size=64, extractor=extractor)
            if round_:
                times[name].append(((time.perf_counter() - start) * 1000,
                                    (time.process_time() - cpu) * 1000))
            results[name] = motion.driver
    out = {name: {"wall_ms_median": round(statistics.median(w for w, _ in t)),
                  "cpu_ms_median": round(statistics.median(c for _, c in t))}
           for name, t in times.items()}
    if baseline:
        out["same_keypoints"] = bool(np.array_equal(results["this tree"], results["baseline"]))
        out["wall_ratio"] = round(out["this tree"]["wall_ms_median"]
                                  / out["baseline"]["wall_ms_median"], 2)
    for extractor in extractors.values():
        extractor.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="a checkout of the commit to compare against")
    args = parser.parse_args()
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=FRAMES).frames
    walker = tracker_crops(clip)
    portrait = [np.ascontiguousarray(np.roll(astronaut(), 3 * i, axis=1)) for i in range(FRAMES)]
    print(f"tracker's crops: {len(walker)} of {walker[0].shape}")
    for label, frames in (("vtest.avi walker", walker), ("portrait", portrait)):
        for refine in (True, False):
            split = calculator_split(frames, refine)
            print(f"\n[1] {label}, refine_face_landmarks={refine}: ms per frame "
                  f"(all calculators {sum(split.values()):.1f})")
            for part, ms in split.items():
                print(f"    {ms:6.2f}  {part}")

    def resized(px):
        return [cv2.resize(c, (px, px), interpolation=cv2.INTER_AREA if px < c.shape[0]
                           else cv2.INTER_LINEAR) for c in walker]

    sizes = {px: resized(px) for px in (256, 384, 768, 1280)}
    makers = {f"holistic tracking {px}px": lambda: Holistic(static_image_mode=False)
              for px in sizes}
    frames_of = {f"holistic tracking {px}px": sizes[px] for px in sizes}
    makers |= {"holistic static 384px": lambda: Holistic(static_image_mode=True),
               "pose-only static 384px (search)": lambda: Pose(static_image_mode=True)}
    frames_of |= {"holistic static 384px": sizes[384],
                  "pose-only static 384px (search)": sizes[384]}
    print("\n[2] CPU ms per frame (vtest.avi walker crops)")
    for name, ms in per_frame_cpu(makers, frames_of).items():
        print(f"    {ms:6.1f}  {name}")
    print("\n[3] graph life cycle, CPU ms (tracking Holistic, walker crops)")
    for name, ms in life_cycle(walker).items():
        print(f"    {ms:6.1f}  {name}")
    print(f"\n[4] extract_motion per request (basketball1.png + {FRAMES} vtest.avi frames)")
    for name, figures in requests(args.baseline).items():
        print(f"    {name}: {figures}")


if __name__ == "__main__":
    main()
