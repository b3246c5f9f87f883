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
Triton models of serving each run one of them. The first two, which need no torch, live in
models/extraction.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from models.conditions import Conditions, build_conditions, decode_frames
from models.curation import CurationThresholds
from models.extraction import (  # stages 1-4a
    ReferenceIdentity,
    check_driving,
    check_reference,
    extract_motion,
    reference_identity_of,
)
from models.frames import to_uint8
from models.sampling import FlowMatchSampler, GuidanceConfig


@dataclass
class PipelineOutput:
    frames: np.ndarray  # (T, size, size, 3) uint8 RGB
    driving_keypoints: np.ndarray  # (T, 133, 4), retargeted onto the reference
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    nfe: int = 0  # model function evaluations of the sampler
    prompt: str = ""


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
                               motion.action_phrase, motion.intensity,
                               reference_pose=motion.reference)
        timings["identity_and_conditions"] = time.perf_counter() - start

        start = time.perf_counter()
        latents = self.sample(cond, seed)
        timings["sampling"] = time.perf_counter() - start
        start = time.perf_counter()
        frames = self.decode(latents, cond)[0]
        timings["decode"] = time.perf_counter() - start
        return PipelineOutput(frames, motion.pose, timings, self.sampler.last_nfe, caption)

    def conditions(self, identity: ReferenceIdentity, pose: np.ndarray, driver: np.ndarray,
                   caption: str, action_phrase: str, intensity: float,
                   camera: np.ndarray | None = None, reference_pose: np.ndarray | None = None
                   ) -> Conditions:
        """Stage 4b: conditions of B clips that share one reference, caption and intensity:
        pose and driver (B, T, 133, 4), camera (B, T, 3) (None: static), reference_pose
        (133, 4): the reference's keypoints, which a model starting from the warped
        reference needs (`DiTConfig.reference_prior`)."""
        b, prior = len(pose), self.dit.config.skip_prior
        library = identity.library
        batch = {
            "keypoints": pose, "driver_keypoints": driver,
            "reference": np.repeat(identity.reference[None], b, 0),
            "identity_embedding": [identity.embedding] * b,
            "caption": [caption] * b, "action_phrase": [action_phrase] * b,
            "motion_intensity": np.full(b, intensity, np.float32),
            **({"subject_library": np.repeat(library[None], b, 0)} if len(library) else {}),
            **({"camera": camera} if camera is not None else {}),
            **({"reference_keypoints": np.repeat(reference_pose[None], b, 0)}
               if reference_pose is not None else {}),
        }
        with torch.no_grad():
            return build_conditions(batch, encode_latents=self.vae.encode_latents,
                                    text=self.text, size=self.size, device=self.device,
                                    still=prior is not None, warp=prior == "warp")

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

    def decode(self, latents: torch.Tensor, cond: Conditions | None = None) -> np.ndarray:
        """Stage 5b: latents -> (B, T, size, size, 3) uint8 RGB frames; onto the prior clip
        the latents were sampled from where `cond` has one (`decode_frames`)."""
        with torch.no_grad():
            return to_uint8(decode_frames(self.vae, latents, cond))
