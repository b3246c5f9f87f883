"""The evaluation flow's benchmark set, scoring loop and comparison table (flows/evaluate.py) on
synthetic renders with real MediaPipe: one cross-identity pair per held-out motion and the real
photos, the ground-truth and thumbnail rows and the items each scores, a table that keeps every
value readable in a narrow terminal, and the GSB page and scores of two models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from flows import evaluate as E
from flows.errors import MotionControlError
from flows.profiles import profile_config
from flows.settings import get_settings
from flows.store import open_store
from models.data.shards import write_shards
from models.data.sources import ClipSpec, SyntheticJob, make_samples
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
        assert "ssim_to_reference" not in result["metrics"]  # it is for real photos
    assert truth["metrics"]["ssim"] == pytest.approx(1.0)  # the truth against itself
    assert truth["metrics"]["lpips"] == pytest.approx(0.0, abs=1e-6)  # LPIPS-VGG, make setup's
    assert "lpips" not in truth["skipped"] and recon["metrics"]["lpips"] > 0.01
    assert truth["metrics"]["pose_pck"] > 0.8  # MediaPipe reads a clean 64² render
    # an untrained tiny VAE decodes its parameter-free thumbnail: close, not the same
    assert 0.5 < recon["metrics"]["ssim"] < 0.99


def test_thumbnail_and_ssim_to_reference_score_the_real_items_only(items):
    bench, targets = items
    with HolisticExtractor() as extractor:
        rows = E.baseline_generators(SIZE, FRAMES, targets, extractor)
        thumb = E.evaluate_outputs(bench, rows[E.THUMBNAIL], SIZE, extractor)
        static = E.evaluate_outputs(bench[1:], rows["baseline-static"], SIZE, extractor)
    assert list(thumb["samples"]) == ["real-0"]
    # the still reference is the reference; its thumbnail keeps its look, not its detail
    assert static["metrics"]["ssim_to_reference"] == pytest.approx(1.0)
    assert 0.3 < thumb["metrics"]["ssim_to_reference"] < 0.99


def eval_dataset(settings, folder: Path) -> list[dict]:
    """A dataset in the store as curation leaves it: held-out motions on two characters, one
    on a single character (no cross-identity pair), and a training motion."""
    spec = ClipSpec(size=64, frames=FRAMES, fps=12.0)
    jobs = [SyntheticJob(action, 0.9, 7, seeds, "static", split="eval")
            for action, seeds in (("wave", (100, 101)), ("clap", (100, 101)), ("jump", (100,)))]
    jobs.append(SyntheticJob("bow", 0.9, 0, (1, 2), "static"))
    samples = [sample for job in jobs for sample in make_samples(job, spec)]
    store, prefix = open_store(settings), f"datasets/{settings.curate.dataset}/d1"
    shards = [{"key": store.put_file(f"{prefix}/{info.path.name}", info.path).key}
              for info in write_shards(samples, folder)]
    store.put_bytes(f"{prefix}/manifest.json", json.dumps({"shards": shards}).encode())
    return samples


def test_benchmark_set_one_pair_per_held_out_motion_then_the_real_photos(tmp_path, monkeypatch):
    monkeypatch.setenv("MC_EVALUATE__PAIRS", "4")
    get_settings.cache_clear()
    samples = eval_dataset(get_settings(), tmp_path / "shards")
    items = E.benchmark_set(get_settings(), "d1", FRAMES)
    assert [i.name for i in items] == [*(f"synthetic-{i}" for i in range(4)),
                                       "real-astronaut-vtest", "real-basketball1-vtest"]

    def motion(frames):
        [match] = [s["annotations"]["motion_id"] for s in samples
                   if np.array_equal(s["frames"], frames)]
        return match.split("-")[0]

    # each held-out motion with a cross-identity pair before a second of any; never the
    # single-character one, and never a training motion; the driver is the other character
    assert [motion(i.truth) for i in items[:4]] == ["clap", "wave", "clap", "wave"]
    assert all(motion(i.driving) == motion(i.truth) and not np.array_equal(i.driving, i.truth)
               for i in items[:4])
    real = items[4:]
    assert all(i.truth is None for i in real) and real[0].driving is real[1].driving
    assert real[0].driving.shape[:2] == (FRAMES, real[0].driving.shape[2])
    assert real[1].reference.shape[0] == real[1].reference.shape[1]  # cut around the player
    # the same dataset gives the same items
    monkeypatch.setenv("MC_EVALUATE__REAL_CLIPS", "0")
    get_settings.cache_clear()
    again = E.benchmark_set(get_settings(), "d1", FRAMES)
    assert len(again) == 4 and all(np.array_equal(a.truth, b.truth)
                                   and np.array_equal(a.driving, b.driving)
                                   for a, b in zip(again, items, strict=False))
    monkeypatch.setenv("MC_EVALUATE__PAIRS", "5")
    get_settings.cache_clear()
    with pytest.raises(MotionControlError, match="4 cross-identity pairs"):
        E.benchmark_set(get_settings(), "d1", FRAMES)


def test_comparison_table_has_metrics_as_rows_and_full_values(monkeypatch):
    # the demo's columns, with the small values that used to fold ("0.0054" over "1")
    table = {"motioncontrol-teacher@v4": {"ssim": 0.4442, "pose_pck": 0.0, "nfe": 41.0,
                                          "motion_smoothness": 0.983, "latency_s": 1.99},
             "motioncontrol-student@v2": {"ssim": 0.4509, "pose_pck": 0.005411, "nfe": 4.0,
                                          "motion_smoothness": 0.986, "latency_s": 1.23},
             "baseline-static": {"ssim": 0.5724, "pose_pck": 0.3990, "nfe": 0.0,
                                 "latency_s": 0.0001174},
             "baseline-tps": {"ssim": 0.5864, "pose_pck": 0.2633, "nfe": 0.0,
                              "latency_s": 0.161, "ssim_to_reference": 0.8123},
             E.WARP_PRIOR: {"ssim": 0.6012, "pose_pck": 0.3311, "nfe": 0.0,
                            "latency_s": 0.158, "ssim_to_reference": 0.3651},
             E.THUMBNAIL: {"pose_pck": 0.0, "ssim_to_reference": 0.7961, "nfe": 0.0},
             E.GROUND_TRUTH: {"ssim": 1.0, "pose_pck": 0.5090, "psnr": 100.0},
             E.VAE_RECONSTRUCTION: {"ssim": 0.826, "pose_pck": 0.0, "psnr": 24.42}}
    console = Console(width=80, record=True)
    monkeypatch.setattr("rich.console.Console", lambda: console)
    E.print_comparison(table)
    text = console.export_text()
    models, ceilings = text.split("ceilings on the synthetic")  # two tables, each within 80
    lines = {line.split("│")[0].strip(): line for line in models.splitlines() if "│" in line}
    assert {"ssim ↑", "pose_pck ↑", "nfe ↓", "motion_smoothness ↑", "ssim_to_reference ↑"
            } <= set(lines)
    for value in ("0.444", "0.0054", "0.399", "0.263", "0.331", "0.365", "0.509", "41",
                  "1e-04", "24.4", "100", "0.812", "0.796"):
        assert value in text, value  # whole, not cut to "0.4…" or folded at 80 columns
    assert lines["pose_pck ↑"].split("│")[2].strip() == "0.0054"
    assert "—" in lines["latency_s ↓"]  # the thumbnail is not timed
    assert "truth" not in models and {"truth", "VAE", "24.4"} <= set(ceilings.split())
    assert max(len(line) for line in text.splitlines()) <= 80
    assert {"teacher", "v4", "student", "v2", "static", "tps", "warp", "prior", "thumb", "32px",
            "truth", "VAE"} <= set(text.split())  # short column headers, not folded


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
