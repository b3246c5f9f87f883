"""Prefect flow `evaluate` (`make evaluate`, `motionctl evaluate`): registered models and the
baselines on one held-out benchmark set, every metric of docs/architecture.md section 4 logged
to the MLflow experiment `evaluation` (one run per model version), with a comparison table, a plot
and sample videos. The metrics land on the model versions too (tags `eval.<metric>`), which
is what the promotion gates read.

The benchmark set (never trained on):
  - held-out synthetic cross-identity pairs (the dataset's eval split: characters and motion
    groups kept out of training, one pair per motion before a second of any) with the
    ground-truth render of the reference character performing the motion;
  - real photos (the astronaut portrait, a basketball player cut from his photo) as the
    reference, driven by real footage: a pedestrian's walk in a window that follows him
    (models/person_crop.py, the demo's driving clip). No ground truth: pose, identity and
    motion metrics, and `ssim_to_reference`, how much of the photo's look the output keeps.
Baselines: the static reference (no motion), a thin-plate-spline warp of the reference to
the driving keypoints, the smoother warp a warp-prior model starts from ("warp prior": what
the network adds is its score minus this one) and, on the real items only, a 32-px
thumbnail of the reference (its `ssim_to_reference` is what a blurred copy of the photo
scores). The table also scores, on the synthetic pairs, the ground truth itself and the
ground truth through the models' VAE: the ceilings of a perfect model and of a perfect model
behind that VAE (at the tiny profile's 64² px MediaPipe misses people even in some true
renders).

When a student and its teacher (or any two models) are evaluated together, the first's run
also gets the blind side-by-side GSB rating page of their clips (artifacts `gsb/`, see
models/gsb.py), the objective proxy's GSB scores and, from the ratings files in
MC_EVALUATE__GSB_RATINGS, the raters' scores (`gsb/scores.json`, metrics `gsb_proxy.<dimension>`
and `gsb.<dimension>`).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from prefect import flow

from flows import ui
from flows.datasets import dataset_ref, load_manifest, shard_dataset
from flows.errors import MotionControlError
from flows.registry import load_bundle, newest_version
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, Settings, get_settings
from flows.store import open_store
from flows.tracking import connect, mlflow_dataset, start_run, ui_link

# Rows of the comparison table that are neither models nor baselines (`ceiling_generators`).
GROUND_TRUTH, VAE_RECONSTRUCTION = "ground-truth", "vae-reconstruction"
THUMBNAIL = "baseline-thumbnail32"  # the baseline row of the real photos only
# The smoother warp a `reference_prior = "warp"` model starts from, in pixels: what such a
# model adds over its own starting point is its score minus this row's.
WARP_PRIOR = "baseline-warp-prior"
SHORT_HEADERS = {GROUND_TRUTH: "truth", VAE_RECONSTRUCTION: "via\nVAE",  # printed table
                 THUMBNAIL: "thumb\n32px", WARP_PRIOR: "warp\nprior"}
# Metric directions, for tables and gates: True = higher is better.
HIGHER_IS_BETTER = {"ssim": True, "psnr": True, "lpips": False, "fvd": False,
                    "ssim_to_reference": True, "pose_pck": True, "hand_pck": True,
                    "face_nme": False, "id_similarity": True, "motion_smoothness": True,
                    "dynamic_degree": True, "text_alignment": True, "latency_s": False,
                    "nfe": False}
EVAL_TAG = "eval.{metric}"
# The static reference's metrics on the same benchmark set, tagged on each evaluated version
# so the promotion gates can compare the model with what doing nothing scores.
STATIC_TAG = "eval.static.{metric}"
STATIC_BASELINE = "baseline-static"
SAMPLE_FPS = 12  # of the sample videos and the GSB page's clips
GSB_SEED = 0  # which side each model is shown on, per pair: the same page on every run


def tagged_metrics(tags: dict[str, str], tag: str = EVAL_TAG) -> dict[str, float]:
    """The metrics a model version carries as `eval.<metric>` tags (or another `tag`
    pattern: STATIC_TAG, the static reference's on the version's benchmark set)."""
    prefix = tag.format(metric="")
    return {k[len(prefix):]: float(v) for k, v in tags.items()
            if k.startswith(prefix) and k[len(prefix):] in HIGHER_IS_BETTER}


@dataclass
class BenchItem:
    name: str
    reference: np.ndarray  # (H, W, 3) uint8 RGB
    driving: np.ndarray  # (T, H, W, 3) uint8 RGB
    prompt: str
    truth: np.ndarray | None = None  # (T, size, size, 3): the ground-truth render
    driving_keypoints: np.ndarray | None = None  # known driver keypoints (synthetic)


def benchmark_set(settings: Settings, digest: str | None, frames: int) -> list[BenchItem]:
    """Held-out synthetic pairs with ground truth, then real photo x real footage clips."""
    from torch.utils.data import DataLoader

    from models.person_crop import walking_pedestrian

    manifest = load_manifest(open_store(settings), settings.curate.dataset, digest)
    data = shard_dataset(settings, manifest, "eval", seed=1234, shuffle_buffer=1,
                         cross_identity=1.0, dropout=None)
    # a motion whose group kept one character has no cross-identity pair
    pairs = (batch for batch in DataLoader(data, batch_size=None) if batch["cross_identity"])
    items = [BenchItem(f"synthetic-{i}", np.asarray(batch["reference"]),
                       np.asarray(batch["driver_frames"]), str(batch["caption"]),
                       truth=np.asarray(batch["frames"]),
                       driving_keypoints=np.asarray(batch["driver_keypoints"]))
             for i, batch in enumerate(one_per_motion(pairs, settings.evaluate.pairs))]
    if len(items) < settings.evaluate.pairs:
        raise MotionControlError(f"the dataset's eval split has {len(items)} cross-identity "
                                 f"pairs, fewer than MC_EVALUATE__PAIRS="
                                 f"{settings.evaluate.pairs}: lower it or curate more held-out "
                                 "characters")
    chosen = list(real_photos().items())[:settings.evaluate.real_clips]
    driving = walking_pedestrian(frames).frames if chosen else None  # the demo's clip
    items += [BenchItem(f"real-{name}-vtest", photo(), driving, "a person walking")
              for name, photo in chosen]
    return items


def real_photos() -> dict[str, Callable[[], np.ndarray]]:
    """The real photos the benchmark animates, by name, each loaded when called: the
    portrait, then a whole body (the player on the left of his photo)."""
    from skimage.data import astronaut

    from models.assets import sample_data
    from models.person_crop import crop_to_person
    from models.video import read_image

    return {"astronaut": astronaut,
            "basketball1": lambda: crop_to_person(read_image(sample_data(
                "opencv-doc/basketball1.png")))}


def one_per_motion(pairs, n: int) -> list[dict]:
    """n pairs, one per motion (`motion_id`) before a second of any: the eval split lists a
    motion's pairs together, so its first n pairs would cover only two or three motions."""
    first, more, motions = [], [], set()
    for pair in pairs:
        motion = str(pair["motion_id"])
        (more if motion in motions else first).append(pair)
        motions.add(motion)
        if len(first) == n:
            break
    return (first + more)[:n]


def set_key(items: list[BenchItem], extra: dict) -> str:
    """Same benchmark inputs and settings, same key: a version evaluated on it is reused."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for item in items:
        for array in (item.reference, item.driving, item.truth):
            if array is not None:
                h.update(np.ascontiguousarray(array).tobytes()[:1 << 16])
    return h.hexdigest()[:16]


def evaluate_outputs(items: list[BenchItem], generate, size: int, extractor,
                     lpips_weights: Path | None = None) -> dict:
    """Run `generate(item) -> (frames, target_keypoints, latency_s, nfe)` (or None: nothing
    to score on that item; latency_s None: not a model) on every item and score it: per-item
    rows, the aggregate, the frames, and why a metric was skipped."""
    from models.extraction import square
    from models.frames import resize_frames
    from models.metrics import aggregate, evaluate_clip, fvd_or_reason, lpips_or_reason, ssim

    rows, samples, skipped, pairs = [], {}, {}, []
    for item in items:
        output = generate(item)
        if output is None:  # nothing to score on this item (the ground truth of real footage)
            continue
        frames, target, latency, nfe = output
        truth = resize_frames(item.truth[None], size)[0] if item.truth is not None else None
        reference = square(item.reference, size)
        row = evaluate_clip(frames, truth, reference=reference, target_keypoints=target,
                            prompt=item.prompt, extractor=extractor)
        if truth is None:  # a real photo: how much of its look the output keeps
            row["ssim_to_reference"] = ssim(frames, np.broadcast_to(reference, frames.shape))
        else:
            value, reason = lpips_or_reason(frames, truth, lpips_weights)
            if value is None:
                skipped["lpips"] = reason
            else:
                row["lpips"] = value
            pairs.append((frames, truth))
        if latency is not None:
            row.update(latency_s=latency, nfe=float(nfe))
        rows.append(row)
        samples[item.name] = frames
    metrics = aggregate(rows)
    if pairs:  # a distance between sets of clips, not a per-clip score
        fvd, reason = fvd_or_reason([g for g, _ in pairs], [t for _, t in pairs])
        if fvd is None:
            skipped["fvd"] = reason
        else:
            metrics["fvd"] = fvd
    return {"rows": rows, "metrics": metrics, "samples": samples, "skipped": skipped}


def model_generator(bundle, settings: Settings):
    """generate(item) for a registered model: the end-to-end pipeline, timed."""
    guidance = bundle.guidance()
    steps = bundle.steps
    if bundle.kind == "teacher":  # the teacher as the platform runs it: dual-branch CFG
        guidance = replace(guidance, dual=True)
        steps = settings.evaluate.teacher_steps or steps
    pipe = bundle.pipeline(steps=steps, guidance=guidance)  # the text encoder it carries

    def generate(item: BenchItem):
        start = time.perf_counter()
        out = pipe(item.reference, item.driving, item.prompt, seed=0,
                   driving_keypoints=item.driving_keypoints)
        return out.frames, out.driving_keypoints, time.perf_counter() - start, out.nfe

    return generate


def baseline_targets(items: list[BenchItem], size: int, frames: int) -> dict[str, np.ndarray]:
    """The retargeted driving keypoints the models condition on (the pipeline's own motion
    stage), per item: what the baselines warp to and every output is scored against."""
    from models.extraction import extract_motion

    return {item.name: extract_motion(item.reference, item.driving[:frames], size=size,
                                      driving_keypoints=item.driving_keypoints).pose
            for item in items}


def baseline_generators(size: int, frames: int, targets: dict, extractor):
    """generate(item) for the static-reference and thin-plate-spline baselines, on the same
    retargeted driving keypoints as the models (`baseline_targets`), and for the reference's
    thumbnail on the real items only (None for the others: the synthetic pairs have their
    ground truth to be scored against)."""
    from models.baselines import (
        TPS_SMOOTHING,
        WARP_PRIOR_SMOOTHING,
        static_reference,
        thumbnail,
        tps_warp,
    )
    from models.extraction import square_keypoints

    def static(item: BenchItem):
        start = time.perf_counter()
        out = static_reference(item.reference, frames, size)
        return out, targets[item.name], time.perf_counter() - start, 0

    def warp(smoothing: float):
        def generate(item: BenchItem):
            start = time.perf_counter()
            h, w = item.reference.shape[:2]
            ref_kps = square_keypoints(extractor.extract_image(item.reference), h, w)
            out = tps_warp(item.reference, ref_kps, targets[item.name], size, smoothing)
            return out, targets[item.name], time.perf_counter() - start, 0
        return generate

    def thumb(item: BenchItem):
        if item.truth is not None:
            return None
        start = time.perf_counter()
        out = thumbnail(item.reference, frames, size)
        return out, targets[item.name], time.perf_counter() - start, 0

    return {STATIC_BASELINE: static, "baseline-tps": warp(TPS_SMOOTHING),
            WARP_PRIOR: warp(WARP_PRIOR_SMOOTHING), THUMBNAIL: thumb}


def ceiling_generators(size: int, frames: int, targets: dict, vae):
    """generate(item) for two rows that are not models, on the synthetic pairs only (None for
    items without ground truth): the true render itself, the ceiling of every metric on this
    set, and the true render through the models' VAE, the ceiling of any model that decodes
    with it."""
    import torch

    from models.frames import resize_frames, to_pixels, to_uint8

    def ground_truth(item: BenchItem):
        if item.truth is None:
            return None
        return resize_frames(item.truth[None, :frames], size)[0], targets[item.name], None, None

    def vae_reconstruction(item: BenchItem):
        if item.truth is None:
            return None
        with torch.no_grad():
            video = vae.decode_latents(vae.encode_latents(to_pixels(item.truth[None, :frames],
                                                                    size)))
        return to_uint8(video)[0], targets[item.name], None, None

    return {GROUND_TRUTH: ground_truth, VAE_RECONSTRUCTION: vae_reconstruction}


def resolve_models(settings: Settings, teacher_version: int | None,
                   student_version: int | None) -> list[tuple[str, int]]:
    teacher = teacher_version or newest_version(settings, TEACHER_MODEL, stage="3")
    student = student_version or newest_version(settings, STUDENT_MODEL, distill_stage="steps")
    models = [(n, v) for n, v in ((TEACHER_MODEL, teacher), (STUDENT_MODEL, student)) if v]
    if not models:
        raise MotionControlError("nothing to evaluate: train a stage-3 teacher (make "
                                 "train-stage3) and distil a student (make distill) first")
    return models


def run_evaluation(settings: Settings, teacher_version: int | None = None,
                   student_version: int | None = None, force: bool = False) -> dict:
    resolve_models(settings, teacher_version, student_version)  # one line, before Prefect
    return evaluate_flow(teacher_version=teacher_version, student_version=student_version,
                         force=force)


@flow(name="evaluate")
def evaluate_flow(teacher_version: int | None = None, student_version: int | None = None,
                  force: bool = False) -> dict:
    """Score a teacher (default: the newest stage-3 one) and a student (default: the newest
    few-step one) with the baselines on the held-out benchmark set; `force` scores versions
    already evaluated on this set again."""
    settings = get_settings()
    models = resolve_models(settings, teacher_version, student_version)
    from models.gsb import load_ratings
    from models.motion import HolisticExtractor
    ratings_dir = settings.evaluate.gsb_ratings  # read now: a bad file fails before any clip
    ratings = load_ratings(sorted(ratings_dir.glob("*.json"))) if ratings_dir else []
    bundles = [load_bundle(settings, name, version=int(version)) for name, version in models]
    size, frames = bundles[0].resolution, bundles[0].frames
    items = benchmark_set(settings, bundles[0].tags.get("dataset_digest"), frames)
    # the ratings are scored, not generated from: changing them keeps the benchmark set
    key = set_key(items, {"evaluate": settings.evaluate.model_dump(exclude={"gsb_ratings"}),
                          "size": size})
    client = connect(settings).MlflowClient()
    results: dict[str, dict] = {}
    lpips = settings.evaluate.lpips_weights
    targets = baseline_targets(items, size, frames)
    labels = {f"{b.name}@v{b.version}": b for b in bundles}
    fresh = {label for label, b in labels.items()
             if force or b.tags.get("eval.set_key") != key}
    gsb = len(labels) == 2 and bool(fresh)  # a newly evaluated model is rated against the other
    with HolisticExtractor() as extractor:
        for label, bundle in labels.items():
            generate = model_generator(bundle, settings)
            if label not in fresh:
                ui.say(f"{label}: already evaluated on this benchmark set (reused)")
                results[label] = {"reused": True, "metrics": tagged_metrics(bundle.tags)}
                if gsb:  # its clips again, for the GSB page only: its metrics stay as logged
                    out = evaluate_outputs(items, generate, size, extractor, lpips)
                    results[label] |= {"rows": out["rows"], "samples": out["samples"]}
                continue
            ui.say(f"evaluating {label} on {len(items)} clips")
            results[label] = evaluate_outputs(items, generate, size, extractor, lpips)
        others = {**baseline_generators(size, frames, targets, extractor),
                  **ceiling_generators(size, frames, targets, bundles[0].vae)}
        for label, generate in others.items():
            results[label] = evaluate_outputs(items, generate, size, extractor, lpips)

    table = comparison_table(results)
    print_comparison(table)
    ui.table("evaluation-comparison", [
        {"metric": metric, **dict(zip(table, values, strict=True))}
        for metric, values in comparison_rows(table)],
        f"held-out benchmark set ({len(items)} clips): metrics of the models, the baselines "
        "and the ceilings (ground truth, and it through the VAE)")
    run_ids = {}
    for bundle in bundles:
        label = f"{bundle.name}@v{bundle.version}"
        if results[label].get("reused"):
            continue
        run_id = run_ids[label] = log_evaluation(settings, bundle, results, table, items, key)
        for tag, metrics in ((EVAL_TAG, results[label]["metrics"]),
                             (STATIC_TAG, results[STATIC_BASELINE]["metrics"])):
            for metric, value in metrics.items():
                if value is not None and np.isfinite(value) and metric in HIGHER_IS_BETTER:
                    client.set_model_version_tag(bundle.name, str(bundle.version),
                                                 tag.format(metric=metric), f"{value:.6g}")
        client.set_model_version_tag(bundle.name, str(bundle.version), "eval.set_key", key)
        client.set_model_version_tag(bundle.name, str(bundle.version), "eval.run_id", run_id)
        ui.link_run(settings, ui.artifact_key("evaluation", label), run_id,
                    f"the evaluation run of {label}")
    if gsb:  # the student is A; the page goes to the run of a newly evaluated model
        a, b = sorted(labels, key=lambda label: not label.startswith(STUDENT_MODEL))
        log_gsb(client, run_ids.get(a) or run_ids[b], items, results, a, b, ratings)
    return {"set_key": key, "table": table}


def write_gsb(out_dir: Path, items: list[BenchItem], results: dict[str, dict], a: str, b: str,
              ratings: list[dict]) -> dict[str, dict]:
    """The GSB rating page of model A's clips against model B's (`export_pairs`: blind,
    seeded) with each item's reference and driving video, in out_dir, and the GSB scores:
    "proxy" from the per-clip metrics (`proxy_ratings`) and "raters" from those of the ratings
    files (`load_ratings`) that compare A with B, both as tables in out_dir/scores.json."""
    import cv2

    from models.gsb import export_pairs, gsb_scores, gsb_table, proxy_ratings
    from models.video import write_mp4

    # per-clip metrics by item name (evaluate_outputs keeps a sample per row, in order)
    rows = {m: dict(zip(results[m]["samples"], results[m]["rows"], strict=True)) for m in (a, b)}
    both = [item for item in items if item.name in rows[a] and item.name in rows[b]]
    with tempfile.TemporaryDirectory(prefix="mc-gsb-") as tmp:
        pairs = []
        for item in both:
            clip_a, clip_b = results[a]["samples"][item.name], results[b]["samples"][item.name]
            media = {key: write_mp4(Path(tmp) / f"{item.name}_{key}.mp4", frames, SAMPLE_FPS)
                     for key, frames in (("video_a", clip_a), ("video_b", clip_b),
                                         ("driving", item.driving[:len(clip_a)]))}
            media["reference"] = Path(tmp) / f"{item.name}_reference.png"
            cv2.imwrite(str(media["reference"]), cv2.cvtColor(item.reference, cv2.COLOR_RGB2BGR))
            pairs.append({"id": item.name, "prompt": item.prompt, **media})
        export_pairs(pairs, out_dir, model_a=a, model_b=b, seed=GSB_SEED)
    proxy = proxy_ratings([{"id": i.name, **rows[a][i.name]} for i in both],
                          [{"id": i.name, **rows[b][i.name]} for i in both], a, b)
    scores = {"proxy": gsb_scores([proxy])}
    rated = [r for r in ratings if (r["model_a"], r["model_b"]) == (a, b)]
    if rated:
        scores["raters"] = gsb_scores(rated)
    tables = {name: gsb_table(s) for name, s in scores.items()}
    (Path(out_dir) / "scores.json").write_text(json.dumps(tables, indent=1), encoding="utf-8")
    return scores


def log_gsb(client, run_id: str, items: list[BenchItem], results: dict[str, dict], a: str,
            b: str, ratings: list[dict]) -> None:
    """`write_gsb` onto A's evaluation run: the artifacts gsb/, metrics gsb_proxy.<dimension>
    and gsb.<dimension> (the raters'; finite scores only)."""
    with tempfile.TemporaryDirectory(prefix="mc-gsb-") as tmp:
        scores = write_gsb(Path(tmp), items, results, a, b, ratings)
        client.log_artifacts(run_id, tmp, "gsb")
    for name, prefix in (("proxy", "gsb_proxy"), ("raters", "gsb")):
        for dim, s in scores.get(name, {}).items():
            if s["score"] is not None and math.isfinite(s["score"]):
                client.log_metric(run_id, f"{prefix}.{dim}", s["score"])
    ui.say(f"GSB rating page of {a} (A) vs {b} (B): artifact gsb/index.html of run {run_id}"
          + ("; raters' scores: metrics gsb.<dimension>" if "raters" in scores else ""))


def comparison_table(results: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    return {label: dict(r["metrics"]) for label, r in results.items()}


def comparison_rows(table: dict[str, dict]) -> list[tuple[str, list[str]]]:
    """("<metric> ↑|↓", a formatted value per column) for each metric some column has: the
    printed table's rows and the Prefect artifact's."""
    return [(f"{k} {'↑' if HIGHER_IS_BETTER[k] else '↓'}",
             [_fmt(row.get(k)) for row in table.values()])
            for k in HIGHER_IS_BETTER if any(k in row for row in table.values())]


def print_comparison(table: dict[str, dict]) -> None:
    """Metrics as rows, models as columns, in two tables that each stay readable in an
    80-column terminal: the models with the baselines, then the ceilings."""
    from rich.console import Console

    ceilings = {GROUND_TRUTH, VAE_RECONSTRUCTION}
    console = Console()
    console.print(_rich_table(
        {k: v for k, v in table.items() if k not in ceilings},
        "evaluation: held-out benchmark set (↑ higher is better, ↓ lower)",
        "warp prior: the smoother warp a warp-prior model starts from; thumb 32px: the "
        "reference at 32 px (real photos only)"))
    if ceilings & set(table):
        console.print(_rich_table(
            {k: v for k, v in table.items() if k in ceilings},
            "ceilings on the synthetic pairs",
            "truth: the true render; via VAE: it through the models' VAE"))


def _rich_table(table: dict[str, dict], title: str, caption: str):
    from rich import box
    from rich.table import Table

    # inner rules only: seven columns fit in 80
    out = Table(title=title, caption=caption, box=box.MINIMAL, show_edge=False,
                pad_edge=False)
    out.add_column("metric", no_wrap=True)
    for label in table:  # short headers: "teacher" over "v4", "static", ...
        header = SHORT_HEADERS.get(label, label.removeprefix("motioncontrol-")
                                   .removeprefix("baseline-").replace("@", "\n"))
        out.add_column(header, justify="right", no_wrap=True)
    for metric, values in comparison_rows(table):
        out.add_row(metric, *values)
    return out


def _fmt(value) -> str:
    """At most 6 characters (3 significant digits where they fit), so that seven columns fit
    an 80-column terminal without a value folded over two lines."""
    if value is None or not np.isfinite(value):
        return "—"
    for spec in (".3g", ".2g", ".0e"):
        text = f"{value:{spec}}"
        if len(text) <= 6:
            break
    return text


def log_evaluation(settings: Settings, bundle, results: dict, table: dict,
                   items: list[BenchItem], key: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd

    from models.metrics import TEXT_ALIGNMENT_UNAVAILABLE
    from models.video import encode_mp4

    label = f"{bundle.name}@v{bundle.version}"
    mine = results[label]
    digest = bundle.tags.get("dataset_digest")  # the dataset whose eval split was scored
    dataset = dataset_ref(settings, settings.curate.dataset, digest) if digest else None
    with start_run(settings, "evaluation", run_name=label, dataset=dataset,
                   tags={"model_name": bundle.name, "model_version": str(bundle.version),
                         "eval.set_key": key},
                   params={"items": len(items), "model_kind": bundle.kind,
                           "sampler_steps": bundle.steps}) as run:
        # NaN is logged too (a key per metric, always): it means "undefined on these clips",
        # e.g. id_similarity when no face is found in any generated frame
        metrics = {k: float(v) for k, v in mine["metrics"].items() if v is not None}
        if not np.isfinite(metrics.get("text_alignment", float("nan"))):  # no encoder here
            metrics.pop("text_alignment", None)
            mine["skipped"]["text_alignment"] = TEXT_ALIGNMENT_UNAVAILABLE
        skipped = mine["skipped"]
        # linked to the version's logged model (and the dataset): its page in the UI lists them
        mlflow.log_metrics(metrics, model_id=bundle.model_id,
                           dataset=mlflow_dataset(dataset) if dataset else None)
        for k, v in metrics.items():
            if not np.isfinite(v):
                mlflow.set_tag(f"undefined.{k}", "no clip of the benchmark set defines it "
                               "(e.g. no face or person found in the generated frames)")
        for k, reason in skipped.items():
            mlflow.set_tag(f"skipped.{k}", reason[:500])
        # tables, not plain JSON: the UI's artifact view shows them as tables
        mlflow.log_table(pd.DataFrame.from_dict(table, orient="index").rename_axis("model")
                         .reset_index(), "comparison.json")
        mlflow.log_table(pd.DataFrame(mine["rows"]).assign(item=list(mine["samples"])),
                         "per_clip.json")
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
        for ax, metric in zip(axes, ("pose_pck", "ssim", "latency_s"), strict=True):
            labels = list(table)
            ax.bar(range(len(labels)), [table[m].get(metric) or 0 for m in labels])
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(metric)
        fig.tight_layout()
        mlflow.log_figure(fig, "comparison.png")
        plt.close(fig)
        with tempfile.TemporaryDirectory() as tmp:
            for name, frames in list(mine["samples"].items())[:3]:
                path = Path(tmp) / f"{name}.mp4"
                path.write_bytes(encode_mp4(frames, SAMPLE_FPS))
                mlflow.log_artifact(str(path), "samples")
        print(f"MLflow ({label}): {ui_link(settings, run)}")
        return run.info.run_id
