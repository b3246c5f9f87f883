"""MotionControlPipeline: reference image + driving video + prompt -> generated clip.

The one end-to-end inference path that evaluation and serving both use:

    1. motion extraction: whole-body keypoints of the driver (MediaPipe) and of the reference;
    2. identity-agnostic retargeting of the driver onto the reference's proportions;
    3. motion intensity of the driving clip (optical flow) and an action phrase;
    4. conditions: pose maps, face codes, identity (dlib + appearance), text (MiniLM);
    5. flow-matching sampling with multi-condition guidance, then VAE decoding.

It generates one clip of `frames` frames (the model's training length); long driving videos
are split into anchored windows by `models.long_video`. The stages are also callable one
by one (`extract_motion`, `reference_identity_of`, `conditions`, `sample`, `decode`): the
Triton models of serving each run one of them.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from models.conditions import Conditions, build_conditions, reference_identity
from models.curation import CurationThresholds, action_phrase_from_keypoints, motion_intensity
from models.errors import InvalidInput
from models.frames import to_uint8
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


@dataclass
class DrivingMotion:
    """What the motion stage hands to generation: the driver retargeted onto the reference."""

    pose: np.ndarray  # (T, 133, 4) float32, driver retargeted onto the reference (square)
    driver: np.ndarray  # (T, 133, 4) float32, the driver in its square crop (expressions)
    intensity: float  # optical-flow motion intensity (or the caller's override)
    action_phrase: str  # "walking", "waving the right hand", ... ("moving" when unsure)


@dataclass
class ReferenceIdentity:
    """The reference side of the conditions: squared images and the dlib face embedding."""

    reference: np.ndarray  # (size, size, 3) uint8
    library: np.ndarray  # (K, size, size, 3) uint8, K >= 0
    embedding: np.ndarray | None  # (128,) dlib embedding of the squared reference; None: no face


def check_reference(reference: np.ndarray) -> np.ndarray:
    reference = np.asarray(reference)
    if reference.ndim != 3 or reference.shape[2] != 3 or reference.dtype != np.uint8:
        raise InvalidInput(f"reference must be an (H, W, 3) uint8 RGB image, got "
                           f"{reference.shape} {reference.dtype}")
    return reference


def check_driving(driving: np.ndarray, min_frames: int) -> np.ndarray:
    driving = np.asarray(driving)
    if driving.ndim != 4 or driving.shape[3] != 3 or driving.dtype != np.uint8:
        raise InvalidInput(f"driving must be (T, H, W, 3) uint8 RGB frames, got "
                           f"{driving.shape} {driving.dtype}")
    if len(driving) < min_frames:
        raise InvalidInput(f"the driving clip has {len(driving)} frames; this model "
                           f"generates {min_frames}: give at least {min_frames}")
    return driving


def extract_motion(reference: np.ndarray, driving: np.ndarray, *, size: int,
                   thresholds: CurationThresholds | None = None,
                   driving_keypoints: np.ndarray | None = None,
                   motion_intensity_override: float | None = None,
                   extractor: HolisticExtractor | None = None) -> DrivingMotion:
    """Stage 1-3: MediaPipe keypoints of the reference and of every driving frame, the driver
    retargeted onto the reference's proportions, motion intensity and action phrase.
    driving_keypoints (T, 133, 4) skips extraction on the driver. A server passes its own
    `extractor`, reused across requests: with a graph built and closed per request, the
    server grew by 73 MB of RSS over one round of 11 bad requests (4 reaching MediaPipe)."""
    thresholds = thresholds or CurationThresholds()
    reference, driving = check_reference(reference), check_driving(driving, 1)
    with nullcontext(extractor) if extractor is not None else HolisticExtractor() as extractor:
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
    ref_kps = square_keypoints(ref_kps, *reference.shape[:2])
    driver = square_keypoints(driving_keypoints[:len(driving)], *driving.shape[1:3])
    pose = retarget(driver, ref_kps).astype(np.float32)
    if motion_intensity_override is None:
        clip = np.stack([square(f, size) for f in driving])
        intensity = motion_intensity(clip, thresholds)
    else:
        intensity = float(motion_intensity_override)
    phrase = action_phrase_from_keypoints(pose, thresholds) or "moving"
    return DrivingMotion(pose, driver.astype(np.float32), float(intensity), phrase)


def reference_identity_of(reference: np.ndarray, subject_library: list[np.ndarray] | None,
                          size: int) -> ReferenceIdentity:
    """Stage 4a: the reference and subject library squared to the model's size, and the
    dlib identity embedding of the squared reference (as `build_conditions` computes it)."""
    squared = square(check_reference(reference), size)
    library = [square(check_reference(img), size) for img in subject_library or []]
    library = np.stack(library) if library else np.zeros((0, size, size, 3), np.uint8)
    return ReferenceIdentity(squared, library, reference_identity(squared))


class MotionControlPipeline:
    def __init__(self, dit: torch.nn.Module, vae, text, *, size: int, frames: int,
                 steps: int, guidance: GuidanceConfig,
                 sampler: FlowMatchSampler | None = None,
                 thresholds: CurationThresholds | None = None):
        """size, frames, steps and guidance are the model's (a registered version's meta,
        from its profile: flows/profiles.py); a student's guidance is GuidanceConfig()."""
        self.dit, self.vae, self.text = dit.eval(), vae.eval(), text
        self.size, self.frames, self.steps, self.guidance = size, frames, steps, guidance
        self.sampler = sampler or FlowMatchSampler()
        self.thresholds = thresholds or CurationThresholds()

    def __call__(self, reference: np.ndarray, driving: np.ndarray, prompt: str = "",
                 subject_library: list[np.ndarray] | None = None, seed: int | None = None,
                 motion_intensity_override: float | None = None,
                 driving_keypoints: np.ndarray | None = None) -> PipelineOutput:
        """reference (H, W, 3) uint8 RGB; driving (T, H, W, 3) uint8 RGB with T >= frames
        (the first `frames` are used); driving_keypoints (T, 133, 4) skips extraction."""
        timings: dict[str, float] = {}
        check_reference(reference)
        driving = check_driving(driving, self.frames)[:self.frames]

        start = time.perf_counter()
        motion = extract_motion(reference, driving, size=self.size, thresholds=self.thresholds,
                                driving_keypoints=driving_keypoints,
                                motion_intensity_override=motion_intensity_override)
        timings["motion_extraction"] = time.perf_counter() - start

        start = time.perf_counter()
        identity = reference_identity_of(reference, subject_library, self.size)
        caption = prompt or f"a person {motion.action_phrase}"
        cond = self.conditions(identity, motion.pose[None], motion.driver[None], caption,
                               motion.action_phrase, motion.intensity)
        timings["identity_and_conditions"] = time.perf_counter() - start

        start = time.perf_counter()
        latents = self.sample(cond, seed)
        timings["sampling"] = time.perf_counter() - start
        start = time.perf_counter()
        frames = self.decode(latents)[0]
        timings["decode"] = time.perf_counter() - start
        return PipelineOutput(frames, motion.pose, timings, self.sampler.last_nfe, caption)

    def conditions(self, identity: ReferenceIdentity, pose: np.ndarray, driver: np.ndarray,
                   caption: str, action_phrase: str, intensity: float,
                   camera: np.ndarray | None = None) -> Conditions:
        """Stage 4b: conditions of B clips that share one reference, caption and intensity:
        pose and driver (B, T, 133, 4), camera (B, T, 3) (None: static)."""
        b = len(pose)
        library = identity.library
        batch = {
            "keypoints": pose, "driver_keypoints": driver,
            "reference": np.repeat(identity.reference[None], b, 0),
            "identity_embedding": [identity.embedding] * b,
            "caption": [caption] * b, "action_phrase": [action_phrase] * b,
            "motion_intensity": np.full(b, intensity, np.float32),
            **({"subject_library": np.repeat(library[None], b, 0)} if len(library) else {}),
            **({"camera": camera} if camera is not None else {}),
        }
        with torch.no_grad():
            return build_conditions(batch, encode_latents=self.vae.encode_latents,
                                    text=self.text, size=self.size, device=self.device,
                                    still=self.dit.config.reference_skip)

    @property
    def device(self) -> torch.device:
        """Where the DiT lives (move the DiT and VAE with `.to(device)` on both)."""
        return next(self.dit.parameters()).device

    def latent_shape(self, batch: int = 1, frames: int | None = None) -> tuple[int, ...]:
        return (batch, self.vae.latent_channels,
                *self.vae.latent_shape(frames or self.frames, self.size, self.size)[1:])

    def sample(self, cond: Conditions, seed: int | None, *, frames: int | None = None,
               anchor=None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 5a: latents (B, C, T', h, w) of the B clips of `cond`. Without `noise`, it
        is drawn from `seed` for one clip and shared by all B (so that sub-clips of one video
        start alike); anchor: see `FlowMatchSampler.sample`."""
        shape = self.latent_shape(cond.batch_size, frames)
        if noise is None:
            generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
            noise = torch.randn((1, *shape[1:]), generator=generator).expand(shape)
        with torch.no_grad():
            return self.sampler.sample(self.dit, cond, shape, steps=self.steps,
                                       guidance=self.guidance, x_T=noise.contiguous(),
                                       anchor=anchor, device=self.device)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Stage 5b: latents -> (B, T, size, size, 3) uint8 RGB frames."""
        with torch.no_grad():
            video = self.vae.decode_latents(latents)
        return to_uint8(video)
