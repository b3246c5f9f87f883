"""MotionControlPipeline: reference image + driving video + prompt -> generated clip.

The one end-to-end inference path that evaluation and serving both use:

    1. motion extraction: whole-body keypoints of the driver (MediaPipe) and of the reference;
    2. identity-agnostic retargeting of the driver onto the reference's proportions;
    3. motion intensity of the driving clip (optical flow) and an action phrase;
    4. conditions: pose maps, face codes, identity (dlib + appearance), text (MiniLM);
    5. flow-matching sampling with multi-condition guidance, then VAE decoding.

It generates one clip of `frames` frames (the model's training length); long driving videos
are split into anchored windows by the caller (serving).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from models.conditions import build_conditions
from models.curation import CurationThresholds, action_phrase_from_keypoints, motion_intensity
from models.errors import InvalidInput
from models.motion import HolisticExtractor, NoPersonFound, retarget
from models.sampling import FlowMatchSampler, GuidanceConfig


@dataclass
class PipelineOutput:
    frames: np.ndarray  # (T, size, size, 3) uint8 RGB
    driving_keypoints: np.ndarray  # (T, 133, 4), retargeted onto the reference
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    nfe: int = 0  # model function evaluations of the sampler
    prompt: str = ""


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (INTER_AREA) to size²."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top:top + side, left:left + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def square_keypoints(kps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Keypoints of a frame mapped into its centre square crop (same convention as square)."""
    side = min(height, width)
    out = kps.copy()
    out[..., 0] = (kps[..., 0] * width - (width - side) // 2) / side
    out[..., 1] = (kps[..., 1] * height - (height - side) // 2) / side
    outside = (out[..., 0] < 0) | (out[..., 0] > 1) | (out[..., 1] < 0) | (out[..., 1] > 1)
    out[..., 3] = np.where(outside, 0.0, out[..., 3])
    return out


class MotionControlPipeline:
    def __init__(self, dit: torch.nn.Module, vae, text, *, size: int = 64, frames: int = 17,
                 steps: int = 20, guidance: GuidanceConfig | None = None,
                 sampler: FlowMatchSampler | None = None,
                 thresholds: CurationThresholds | None = None):
        self.dit, self.vae, self.text = dit.eval(), vae.eval(), text
        self.size, self.frames, self.steps = size, frames, steps
        self.guidance = guidance or GuidanceConfig(text_scale=3.0, reference_scale=1.5)
        self.sampler = sampler or FlowMatchSampler()
        self.thresholds = thresholds or CurationThresholds()

    def __call__(self, reference: np.ndarray, driving: np.ndarray, prompt: str = "",
                 subject_library: list[np.ndarray] | None = None, seed: int | None = None,
                 motion_intensity_override: float | None = None,
                 driving_keypoints: np.ndarray | None = None) -> PipelineOutput:
        """reference (H, W, 3) uint8 RGB; driving (T, H, W, 3) uint8 RGB with T >= frames
        (the first `frames` are used); driving_keypoints (T, 133, 4) skips extraction."""
        timings: dict[str, float] = {}
        driving = self._check_inputs(reference, driving)

        start = time.perf_counter()
        with HolisticExtractor() as extractor:
            try:
                ref_kps = extractor.extract_image(reference)
            except NoPersonFound:
                raise NoPersonFound("no person found in the reference image: use a photo or "
                                    "render that shows the character's body") from None
            if driving_keypoints is None:
                try:
                    driving_keypoints = extractor.extract(driving)
                except NoPersonFound:
                    raise NoPersonFound("no person found in the driving video: use a clip "
                                        "where one person is visible") from None
        h, w = reference.shape[:2]
        ref_kps = square_keypoints(ref_kps, h, w)
        driver = square_keypoints(driving_keypoints[:self.frames], *driving.shape[1:3])
        pose = retarget(driver, ref_kps).astype(np.float32)
        timings["motion_extraction"] = time.perf_counter() - start

        start = time.perf_counter()
        clip = np.stack([square(f, self.size) for f in driving])
        intensity = motion_intensity(clip, self.thresholds) \
            if motion_intensity_override is None else float(motion_intensity_override)
        phrase = action_phrase_from_keypoints(pose, self.thresholds) or "moving"
        library = [square(img, self.size) for img in subject_library or []]
        batch = {
            "keypoints": pose[None], "driver_keypoints": driver[None],
            "reference": square(reference, self.size)[None],
            "caption": [prompt or f"a person {phrase}"], "action_phrase": [phrase],
            "motion_intensity": np.array([intensity], np.float32),
            **({"subject_library": np.stack(library)[None]} if library else {}),
        }
        with torch.no_grad():
            cond = build_conditions(batch, encode_latents=self.vae.encode_latents,
                                    text=self.text, size=self.size, device="cpu")
        timings["identity_and_conditions"] = time.perf_counter() - start

        start = time.perf_counter()
        shape = (1, self.vae.latent_channels, *self.vae.latent_shape(self.frames, self.size,
                                                                    self.size)[1:])
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        with torch.no_grad():
            latents = self.sampler.sample(self.dit, cond, shape, steps=self.steps,
                                          guidance=self.guidance, generator=generator)
        timings["sampling"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            video = self.vae.decode_latents(latents)[0]
        frames = ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        timings["decode"] = time.perf_counter() - start
        return PipelineOutput(frames, pose, timings, self.sampler.last_nfe, batch["caption"][0])

    def _check_inputs(self, reference: np.ndarray, driving: np.ndarray) -> np.ndarray:
        reference, driving = np.asarray(reference), np.asarray(driving)
        if reference.ndim != 3 or reference.shape[2] != 3 or reference.dtype != np.uint8:
            raise InvalidInput(f"reference must be an (H, W, 3) uint8 RGB image, got "
                               f"{reference.shape} {reference.dtype}")
        if driving.ndim != 4 or driving.shape[3] != 3 or driving.dtype != np.uint8:
            raise InvalidInput(f"driving must be (T, H, W, 3) uint8 RGB frames, got "
                               f"{driving.shape} {driving.dtype}")
        if len(driving) < self.frames:
            raise InvalidInput(f"the driving clip has {len(driving)} frames; this model "
                               f"generates {self.frames}: give at least {self.frames}")
        return driving[:self.frames]
