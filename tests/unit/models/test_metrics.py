"""Evaluation metrics: fidelity, keypoint accuracy on synthetic renders (real MediaPipe),
identity on a real photo (real dlib), VBench-style temporal scores, and aggregation."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from models import keypoints as K
from models import metrics as M
from models.errors import InvalidInput
from models.motion import HolisticExtractor
from models.synthetic import make_motion, render_clip, sample_character

FRAMES = 9  # short clips: MediaPipe costs ~0.25 s a frame at 256²


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/models/conftest.py


def clip(action: str, frames: int = FRAMES):
    return render_clip(sample_character(3), make_motion(action, frames=frames, fps=12,
                                                        intensity=1.0), size=64)


@pytest.fixture(scope="module")
def wave():
    return clip("wave")


@pytest.fixture(scope="module")
def extractor():
    with HolisticExtractor() as ex:
        yield ex


@pytest.fixture(scope="module")
def wave_pred(wave, extractor):
    return M.extract_keypoints(wave.frames, extractor)


# ------------------------------------------------------------------------------- fidelity


def test_ssim_psnr_identical_noised_and_mismatched(wave):
    frames = wave.frames
    noise = np.random.default_rng(0).normal(0, 20, frames.shape)
    noised = np.clip(frames + noise, 0, 255).astype(np.uint8)
    assert M.ssim(frames, frames) == pytest.approx(1.0, abs=1e-6)
    assert M.psnr(frames, frames) == M.PSNR_CAP
    assert M.ssim(noised, frames) < 0.9
    assert 15 < M.psnr(noised, frames) < 30
    with pytest.raises(InvalidInput, match="differ in shape"):
        M.ssim(frames[:-1], frames)
    with pytest.raises(InvalidInput, match="differ in shape"):
        M.psnr(frames, frames[:, :32])


def test_lpips_vgg_with_the_weights_make_setup_converts(wave, tmp_path, monkeypatch):
    frames = wave.frames
    noised = np.clip(frames + np.random.default_rng(0).normal(0, 20, frames.shape), 0, 255)
    assert M.lpips_or_reason(frames, frames) == (pytest.approx(0.0, abs=1e-6), "ok")
    value, reason = M.lpips_or_reason(noised.astype(np.uint8), frames)
    assert reason == "ok" and 0.05 < value < 1.0
    value, reason = M.lpips_or_reason(frames[:, :8, :8], frames[:, :8, :8])
    assert value is None and "smaller than" in reason
    value, reason = M.lpips_or_reason(frames, frames, tmp_path / "missing.safetensors")
    assert value is None and "does not exist" in reason and "make setup" in reason
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # a venv without the converted file
    value, reason = M.lpips_or_reason(frames, frames)
    assert value is None and "run `make setup`" in reason


def test_fvd_and_text_alignment_say_why_not(wave):
    value, reason = M.fvd_or_reason([wave.frames] * 2, [wave.frames] * 2)
    assert value is None and "I3D" in reason
    assert M.text_alignment(wave.frames, "a person waving") is None
    assert "image-text" in M.TEXT_ALIGNMENT_UNAVAILABLE


def test_fvd_runs_a_local_torchscript_feature_network(tmp_path):
    class MeanColour(torch.nn.Module):  # stands in for I3D: (N, 3, T, H, W) -> (N, 3)
        def forward(self, videos: torch.Tensor, rescale: bool, resize: bool,
                    return_features: bool) -> torch.Tensor:
            return videos.mean(dim=(2, 3, 4))

    path = tmp_path / "features.pt"
    torch.jit.script(MeanColour()).save(str(path))
    rng = np.random.default_rng(0)
    dark = [rng.integers(0, 100, (4, 16, 16, 3), dtype=np.uint8) for _ in range(6)]
    dark2 = [rng.integers(0, 100, (4, 16, 16, 3), dtype=np.uint8) for _ in range(6)]
    bright = [rng.integers(150, 255, (4, 16, 16, 3), dtype=np.uint8) for _ in range(6)]
    same, reason = M.fvd_or_reason(dark, dark2, path)
    far, _ = M.fvd_or_reason(dark, bright, path)
    assert reason == "ok" and same < 0.01 < far


# ------------------------------------------------------------------------------- keypoints


def test_pose_pck_high_on_own_keypoints_lower_when_shifted(wave, wave_pred):
    own = M.score_keypoints(wave_pred, wave.keypoints)
    assert own["pose_pck"] > 0.5
    assert own["face_nme"] < 0.3
    shifted = wave.keypoints.copy()
    shifted[..., K.X] += 0.15
    moved = M.score_keypoints(wave_pred, shifted)
    assert moved["pose_pck"] < own["pose_pck"] - 0.2
    assert moved["face_nme"] > own["face_nme"] + 0.5


def test_other_motion_scores_lower(wave, wave_pred):
    jump = clip("jump")
    assert (M.score_keypoints(wave_pred, jump.keypoints)["pose_pck"]
            < M.score_keypoints(wave_pred, wave.keypoints)["pose_pck"])


def test_missing_detections_are_misses_and_missing_targets_nan(wave, wave_pred):
    pred = wave_pred.copy()
    pred[: FRAMES // 2] = 0  # no person found in the first half
    full, half = M.score_keypoints(wave_pred, wave.keypoints), M.score_keypoints(pred,
                                                                                   wave.keypoints)
    assert half["pose_pck"] < full["pose_pck"] * 0.7
    assert half["face_nme"] > full["face_nme"]
    no_face = wave.keypoints.copy()
    no_face[:, K.FACE, K.CONF] = 0
    assert math.isnan(M.score_keypoints(wave_pred, no_face)["face_nme"])


def test_blank_frames_count_as_misses(wave, extractor):
    blank = np.zeros((3, 64, 64, 3), np.uint8)
    scores = M.keypoint_metrics(blank, wave.keypoints[:3], extractor)
    assert scores["pose_pck"] == 0.0 and scores["hand_pck"] == 0.0
    assert scores["face_nme"] == M.FACE_MISS_NME
    assert M.pose_pck(blank, wave.keypoints[:3], extractor=extractor) == 0.0
    with pytest.raises(InvalidInput, match="target"):
        M.keypoint_metrics(blank, wave.keypoints, extractor)


def test_small_frames_are_upscaled_for_detection():
    small = np.zeros((2, 64, 48, 3), np.uint8)
    assert M.upscaled(small).shape == (2, 341, 256, 3)
    assert M.upscaled(np.zeros((300, 400, 3), np.uint8)).shape == (300, 400, 3)


# ------------------------------------------------------------------------------- identity


def test_id_similarity_same_photo_and_no_face():
    face = astronaut()[:256, 96:352]  # her head and shoulders, 256²
    assert M.id_similarity(face[None], face) == pytest.approx(1.0, abs=1e-3)
    blank = np.full_like(face, 128)
    assert math.isnan(M.id_similarity(face[None], blank))
    assert math.isnan(M.id_similarity(blank[None], face))


# ------------------------------------------------------------------------------- temporal


def test_motion_smoothness_prefers_smooth_over_shuffled():
    jump = clip("jump", 11).frames
    shuffled = jump[np.random.default_rng(0).permutation(len(jump))]
    smooth = M.motion_smoothness(jump)
    assert 0.9 < smooth <= 1.0
    assert M.motion_smoothness(shuffled) < smooth - 0.01
    assert M.motion_smoothness(np.repeat(jump[:1], 5, axis=0)) == 1.0
    with pytest.raises(InvalidInput, match="at least 3"):
        M.motion_smoothness(jump[:2])


def test_dynamic_degree_still_vs_moving():
    jump = clip("jump", 11).frames
    still = np.repeat(jump[:1], 11, axis=0)
    assert M.dynamic_degree(still) == 0.0 and M.flow_score(still) == 0.0
    assert M.dynamic_degree(jump) == 1.0 and M.flow_score(jump) > 6.0
    # at a low frame rate the threshold grows (VBench's max(1, 8 / fps))
    assert M.dynamic_degree(jump, fps=1.0) == 0.0


# ------------------------------------------------------------------------------- evaluate_clip


def test_evaluate_clip_keys_follow_the_inputs(wave, extractor):
    frames = wave.frames[:4]
    assert set(M.evaluate_clip(frames)) == {"motion_smoothness", "dynamic_degree"}
    full = M.evaluate_clip(frames, frames, reference=wave.reference_image,
                           target_keypoints=wave.keypoints[:4], prompt="a person waving",
                           extractor=extractor)
    assert set(full) == {"ssim", "psnr", "pose_pck", "hand_pck", "face_nme", "id_similarity",
                         "motion_smoothness", "dynamic_degree", "text_alignment"}
    assert full["text_alignment"] is None and full["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert all(isinstance(v, float) for k, v in full.items() if k != "text_alignment")


def test_aggregate_is_nan_aware():
    rows = [{"ssim": 0.5, "face_nme": math.nan, "text_alignment": None},
            {"ssim": 0.7, "face_nme": 0.2},
            {"ssim": math.nan, "face_nme": 0.4, "id_similarity": math.nan}]
    out = M.aggregate(rows)
    assert out["ssim"] == pytest.approx(0.6) and out["face_nme"] == pytest.approx(0.3)
    assert math.isnan(out["text_alignment"]) and math.isnan(out["id_similarity"])
