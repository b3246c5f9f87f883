"""The MLflow run of a curation: counts, the digest, score histograms, a contact sheet of
kept clips with their keypoints drawn, and extractor overlays on the real sample footage."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from flows.datasets import dataset_ref  # noqa: E402
from flows.settings import Settings  # noqa: E402
from flows.tracking import start_run, ui_link  # noqa: E402

# Scores worth a histogram: (manifest score key, axis label).
HISTOGRAMS = (
    ("sharpness.sharpness", "sharpness (Laplacian / gradient)"),
    ("exposure.mean_luma", "mean luma"),
    ("motion_amplitude.mean_flow", "mean flow (short sides / frame)"),
    ("fluency.relative_jerk", "relative jerk"),
    ("appearance.min_correlation", "appearance correlation"),
    ("identity.max_distance", "face distance (dlib, worst frame)"),
)


def log_curation_run(settings: Settings, manifest: dict, manifest_bytes: bytes,
                     load_clip: Callable[[str], dict], curate_s: float,
                     pipeline: dict) -> str:
    """The curation run in MLflow: counts, the Ray pipeline's seconds per stage, the manifest,
    score histograms, a contact sheet of kept clips (read with `load_clip(key)`) and the
    extractor's overlays on real photos and footage."""
    counts = manifest["counts"]
    with start_run(settings, "curation", run_name=f"{manifest['dataset']}@{manifest['digest']}",
                   dataset=dataset_ref(settings, manifest["dataset"], manifest["digest"]),
                   params={"dataset": manifest["dataset"], "inputs_key": manifest["inputs_key"],
                           "ray_address": pipeline["address"],
                           **{f"clip.{k}": v for k, v in manifest["clip_spec"].items()}}) as run:
        mlflow.log_metrics({k: float(v) for k, v in counts.items()})
        mlflow.log_metric("ray_start_seconds", pipeline["start_s"])
        mlflow.log_metrics({f"stage_seconds.{name}": stage["seconds"]
                            for name, stage in pipeline["stages"].items()})
        mlflow.log_metric("curate_seconds", curate_s)
        mlflow.log_metric("clips_per_second", counts["clips_total"] / max(curate_s, 1e-9))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "manifest.json").write_bytes(manifest_bytes)
            mlflow.log_artifact(str(out / "manifest.json"))
            mlflow.log_figure(score_histograms(manifest["clips"]), "score_histograms.png")
            mlflow.log_image(contact_sheet(manifest["clips"], load_clip), "contact_sheet.png")
            overlays = out / "overlays"
            try:
                from models.motion.overlays import save_overlays

                save_overlays(overlays, video_frames=4)
                mlflow.log_artifacts(str(overlays), "extractor_overlays")
            except Exception as exc:  # inspection only: never fail a curation for it
                mlflow.set_tag("overlays_error", str(exc)[:500])
        plt.close("all")
        print(f"MLflow: {ui_link(settings, run)}")
        return run.info.run_id


def score_histograms(rows: list[dict]):
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (key, label) in zip(axes.flat, HISTOGRAMS, strict=True):
        for kept, colour in ((True, "tab:green"), (False, "tab:red")):
            values = [r["scores"][key] for r in rows if r["kept"] == kept and key in r["scores"]
                      and np.isfinite(r["scores"][key])]
            if values:
                ax.hist(values, bins=30, alpha=0.6, color=colour,
                        label=f"{'kept' if kept else 'dropped'} ({len(values)})")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("curation scores")
    fig.tight_layout()
    return fig


def contact_sheet(rows: list[dict], load_clip: Callable[[str], dict],
                  clips: int = 12) -> np.ndarray:
    """A grid: one row per kept clip (first, middle, last frame with the skeleton drawn)."""
    import cv2

    from models.motion import draw_overlay

    kept = [r for r in rows if r["kept"]]
    picks = [kept[i] for i in np.linspace(0, len(kept) - 1, min(clips, len(kept))).astype(int)]
    lines = []
    for row in picks:
        sample = load_clip(row["key"])
        frames, kps = sample["frames"], sample["keypoints"]
        tiles = [draw_overlay(frames[t], kps[t]) for t in (0, len(frames) // 2, len(frames) - 1)]
        tiles = [cv2.resize(t, (128 * t.shape[1] // t.shape[0], 128)) for t in tiles]
        reference = cv2.resize(sample["references"][0], tiles[0].shape[1::-1])
        lines.append(np.concatenate([reference, *tiles], axis=1))
    width = max(line.shape[1] for line in lines)
    return np.concatenate([np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)))
                           for line in lines], axis=0)
