"""Samples logged during training: the generated clip (mp4), a reference | driving | pose |
generated | ground-truth strip (an MLflow image with the step, key `samples`), and the learning
curve: SSIM and pose PCK of the held-out batch against its ground truth, with the static
reference's and the thin-plate-spline warp's beside them (the lines a model must get above)."""

from __future__ import annotations

import tempfile

import numpy as np

from models.frames import resize_frames
from models.motion import render_pose_map


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM over frames (scikit-image, RGB)."""
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(g, t, channel_axis=-1, data_range=255)
                          for g, t in zip(generated, truth, strict=True)]))


def strip(batch: dict, generated: np.ndarray, size: int, index: int = 0) -> np.ndarray:
    """Rows of frames 0, mid, last: reference | driving | pose map | generated | truth."""
    truth = resize_frames(batch["frames"][index:index + 1], size)[0]
    driving = resize_frames(batch["driver_frames"][index:index + 1], size)[0]
    reference = resize_frames(np.asarray(batch["reference"][index:index + 1])[:, None],
                              size)[0, 0]
    kps = np.asarray(batch["keypoints"][index])
    rows = []
    for t in (0, len(truth) // 2, len(truth) - 1):
        pose = render_pose_map(kps[t], (size, size))
        rows.append(np.concatenate([reference, driving[t], pose, generated[index, t],
                                    truth[t]], axis=1))
    return np.concatenate(rows, axis=0)


def curve_metrics(generated: np.ndarray, truth: np.ndarray, batch: dict,
                  size: int) -> dict[str, float]:
    """SSIM and pose PCK (MediaPipe) of a generated batch (B, T, H, W, 3) against its ground
    truth (the batch's frames at `size`), and the same for the static reference (the still
    photo repeated) and, where the batch has the references' keypoints, their TPS warp to
    the target pose (`tps_*`)."""
    from models.baselines import static_reference, tps_warp
    from models.metrics import pose_pck
    from models.motion import HolisticExtractor

    frames = truth.shape[1]
    baselines = {"static": [static_reference(np.asarray(r), frames, size)
                            for r in batch["reference"]]}
    if batch.get("reference_keypoints") is not None:
        baselines["tps"] = [tps_warp(np.asarray(r), np.asarray(rk), np.asarray(k), size)
                            for r, rk, k in zip(batch["reference"], batch["reference_keypoints"],
                                                batch["keypoints"], strict=True)]
    out = {}
    with HolisticExtractor() as extractor:
        for name, clips in (("sample", generated), *baselines.items()):
            out[f"{name}_ssim"] = float(np.mean([ssim(c, t) for c, t in
                                                 zip(clips, truth, strict=True)]))
            out[f"{name}_pose_pck"] = float(np.nanmean([
                pose_pck(c, np.asarray(k), extractor=extractor)
                for c, k in zip(clips, batch["keypoints"], strict=True)]))
    return out


def log_samples(model, objective, batch: dict, size: int, fps: float, step: int,
                curve: bool = True) -> float:
    """What the model makes of a held-out batch (objective.sample: a VAE's reconstruction,
    a DiT's generated clip) as strip and mp4, and with `curve` the learning-curve metrics
    (`curve_metrics`); returns the first clip's SSIM."""
    import mlflow

    from models.video import encode_mp4

    generated = objective.sample(model, batch)
    truth = resize_frames(batch["frames"], size)
    score = ssim(generated[0], truth[0])
    mlflow.log_metrics(curve_metrics(generated, truth, batch, size) if curve
                       else {"sample_ssim": score}, step=step)
    # one image key with a step per strip: the UI shows them on a step slider
    mlflow.log_image(strip(batch, generated, size), key="samples", step=step, synchronous=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/sample_{step:06d}.mp4"
        with open(path, "wb") as fh:
            fh.write(encode_mp4(np.concatenate([generated[0], truth[0]], axis=2), fps))
        mlflow.log_artifact(path, "samples")
    return score
