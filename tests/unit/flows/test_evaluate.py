"""The evaluation flow's scoring loop and comparison table (flows/evaluate.py) on a synthetic
render with real MediaPipe: the ground-truth row, items with nothing to score, a table that
keeps every value readable in a narrow terminal, and the GSB page and scores of two models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from flows import evaluate as E
from flows.profiles import profile_config
from models.gsb import FORMAT
from models.motion import HolisticExtractor
from models.synthetic import make_motion, render_clip, sample_character
from models.vae import VideoVAE

FRAMES, SIZE = 9, 64


@pytest.fixture(scope="module")
def items():
    clip = render_clip(sample_character(3), make_motion("wave", frames=FRAMES, fps=12,
                                                         intensity=1.0), size=SIZE)
    synthetic = E.BenchItem("synthetic-0", clip.frames[0], clip.frames, "a person waving",
                            truth=clip.frames, driving_keypoints=clip.keypoints)
    real = E.BenchItem("real-0", clip.frames[0], clip.frames, "a person waving")  # no truth
    return [synthetic, real], {"synthetic-0": clip.keypoints, "real-0": clip.keypoints}


def test_ceiling_rows_score_only_items_with_truth(items):
    bench, targets = items
    rows = E.ceiling_generators(SIZE, FRAMES, targets, VideoVAE(profile_config("tiny").vae).eval())
    with HolisticExtractor() as extractor:
        truth, recon = (E.evaluate_outputs(bench, rows[label], SIZE, extractor)
                        for label in (E.GROUND_TRUTH, E.VAE_RECONSTRUCTION))
    for result in (truth, recon):
        assert len(result["rows"]) == 1 and list(result["samples"]) == ["synthetic-0"]
        assert "latency_s" not in result["metrics"] and "nfe" not in result["metrics"]
    assert truth["metrics"]["ssim"] == pytest.approx(1.0)  # the truth against itself
    assert truth["metrics"]["lpips"] == pytest.approx(0.0, abs=1e-6)  # LPIPS-VGG, make setup's
    assert "lpips" not in truth["skipped"] and recon["metrics"]["lpips"] > 0.05
    assert truth["metrics"]["pose_pck"] > 0.8  # MediaPipe reads a clean 64² render
    # an untrained tiny VAE decodes its parameter-free thumbnail: close, not the same
    assert 0.5 < recon["metrics"]["ssim"] < 0.99


def test_comparison_table_has_metrics_as_rows_and_full_values(monkeypatch):
    # the demo's six columns, with the small values that used to fold ("0.0054" over "1")
    table = {"motioncontrol-teacher@v4": {"ssim": 0.4442, "pose_pck": 0.0, "nfe": 41.0,
                                          "motion_smoothness": 0.983, "latency_s": 1.99},
             "motioncontrol-student@v2": {"ssim": 0.4509, "pose_pck": 0.005411, "nfe": 4.0,
                                          "motion_smoothness": 0.986, "latency_s": 1.23},
             "baseline-static": {"ssim": 0.5724, "pose_pck": 0.3990, "nfe": 0.0,
                                 "latency_s": 0.0001174},
             "baseline-tps": {"ssim": 0.5864, "pose_pck": 0.2633, "nfe": 0.0,
                              "latency_s": 0.161},
             E.GROUND_TRUTH: {"ssim": 1.0, "pose_pck": 0.5090, "psnr": 100.0},
             E.VAE_RECONSTRUCTION: {"ssim": 0.826, "pose_pck": 0.0, "psnr": 24.42}}
    console = Console(width=80, record=True)
    monkeypatch.setattr("rich.console.Console", lambda: console)
    E.print_comparison(table)
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert {"ssim ↑", "pose_pck ↑", "nfe ↓", "motion_smoothness ↑"} <= set(lines)
    for value in ("0.444", "0.0054", "0.399", "0.263", "0.509", "41", "1e-04", "24.4", "100"):
        assert value in text, value  # whole, not cut to "0.4…" or folded at 80 columns
    assert lines["pose_pck ↑"].split("│")[3].strip() == "0.0054"
    assert "—" in lines["nfe ↓"]  # the ground truth has no NFE
    assert max(len(line) for line in text.splitlines()) <= 80
    assert {"teacher", "v4", "student", "v2", "static", "tps", "truth", "VAE"} <= set(
        text.split())  # short column headers, not folded


def test_benchmark_pairs_cover_distinct_motions_first():
    # the eval split lists pairs motion by motion
    split = [{"motion_id": m, "i": i} for i, m in enumerate("aaabbcddd")]
    picked = E.one_per_motion(iter(split), 4)
    assert [p["motion_id"] for p in picked] == ["a", "b", "c", "d"]
    # more pairs than motions: the distinct ones first, then repeats in split order
    assert [p["i"] for p in E.one_per_motion(iter(split), 6)] == [0, 3, 5, 6, 1, 2]
    assert len(E.one_per_motion(iter(split[:2]), 4)) == 2  # a short split: what there is


def test_gsb_page_and_scores_go_to_the_students_run():
    rng = np.random.default_rng(0)

    def video():
        return rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)

    bench = [E.BenchItem(f"synthetic-{i}", video()[0], video(), f"prompt {i}") for i in range(2)]
    student, teacher = "motioncontrol-student@v2", "motioncontrol-teacher@v4"
    results = {model: {"samples": {item.name: video() for item in bench},
                       "rows": [{"ssim": s, "pose_pck": s} for s in scores]}
               for model, scores in ((student, (0.6, 0.3)), (teacher, (0.3, 0.3)))}
    rated = {"format": FORMAT, "rater": "alice", "model_a": student, "model_b": teacher,
             "ratings": [{"id": "synthetic-0", "judgements": {"overall": "bad"}}]}
    other = {**rated, "model_b": "motioncontrol-teacher@v3"}  # another comparison: left out

    class Client:  # what log_gsb logs (its folder is gone once it returns)
        def __init__(self):
            self.metrics = {}

        def log_artifacts(self, run_id, folder, path):
            self.where = (run_id, path)
            self.files = {p.relative_to(folder).as_posix(): p.read_bytes()
                          for p in Path(folder).rglob("*") if p.is_file()}

        def log_metric(self, run_id, key, value):
            self.metrics[key] = value

    client = Client()
    E.log_gsb(client, "run-1", bench, results, student, teacher, [rated, other])
    assert client.where == ("run-1", "gsb")
    media = {f"media/{item.name}_{key}" for item in bench for key in (
        "video_a.mp4", "video_b.mp4", "driving.mp4", "reference.png")}
    assert set(client.files) == {"index.html", "scores.json"} | media
    assert all(b"ftyp" in client.files[f][:12] for f in media if f.endswith(".mp4"))
    page = client.files["index.html"].decode()
    assert f'"model_a": "{student}"' in page and f'"model_b": "{teacher}"' in page
    tables = json.loads(client.files["scores.json"])
    assert tables["proxy"][0] == ["dimension", "good", "same", "bad", "(G+S)/(B+S)"]
    assert set(tables) == {"proxy", "raters"}
    # the proxy: clip 0 better, clip 1 the same; alice: clip 0 worse overall
    assert client.metrics["gsb_proxy.overall"] == client.metrics["gsb_proxy.visual_quality"] == 2
    assert {k: v for k, v in client.metrics.items() if k.startswith("gsb.")} == {"gsb.overall": 0}
