"""What each training run optimises, behind the one interface the training loop calls.

    VAEObjective            stage 0: the video VAE, L1 reconstruction + a light KL
    FlowMatchingObjective   stages 1-3: the teacher DiT, flow matching on VAE latents weighted
                            by motion (MotionCharacter's region-aware loss) + ID consistency
    DistillationObjective   a student DiT imitating a frozen one (models/distill.py): the
                            guidance stage or the steps stage

Every objective answers four calls (flows/train_worker.py makes them and nothing else):

    loss(model, batch, step=, generator=)  -> {"total": ..., named parts}   one training step
    validate(model, batches)               -> float   fixed times and noise: comparable
                                                      across steps, runs and stages
    sample(model, batch, seed=)            -> (B, T, H, W, 3) uint8   what the model makes of
                                                      the batch, logged during training
    finalize(model, batches)               last changes before the weights are saved
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from models.conditions import (
    PREPARED,
    Conditions,
    conditions_from_prepared,
    decode_frames,
    drop_masks,
    prepare_batch,
)
from models.distill import GuidanceDistillation, StepDistillation
from models.frames import to_pixels, to_uint8
from models.losses import (
    LossWeighting,
    flow_matching_loss,
    id_consistency_loss,
    predicted_x0,
    region_weights,
    sample_timesteps,
    time_weights,
)
from models.sampling import FlowMatchSampler, GuidanceConfig


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """Eval mode and no gradients for a validation or sampling pass, train mode after."""
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train()


class VAEObjective:
    """Stage 0: reconstruct the clips at `size`²."""

    def __init__(self, size: int, kl_weight: float, device="cpu"):
        self.size, self.kl_weight, self.device = size, kl_weight, torch.device(device)

    def pixels(self, batch: dict) -> Tensor:
        return to_pixels(batch["frames"], self.size).to(self.device)

    def loss(self, model: nn.Module, batch: dict, *, step: int = 0,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x = self.pixels(batch)
        recon, posterior = model(x)
        return _unwrap(model).loss(x, recon, posterior, self.kl_weight)

    def validate(self, model: nn.Module, batches: list[dict]) -> float:
        with _evaluating(model):
            losses = [float(self.loss(model, b)["recon_l1"]) for b in batches]
        return float(np.mean(losses)) if losses else float("nan")

    def sample(self, model: nn.Module, batch: dict, *, seed: int = 0) -> np.ndarray:
        with _evaluating(model):
            return to_uint8(model(self.pixels(batch))[0])

    def finalize(self, model: nn.Module, batches: list[dict]) -> None:
        """Latent statistics, so the DiT sees ~unit-variance latents."""
        with torch.no_grad():
            model.fit_latent_stats([model.encode(self.pixels(b)).mode() for b in batches])


class FrozenLatents:
    """A frozen VAE's latents of videos or images (N, 3, T, H, W) in [-1, 1], cached by
    content: the VAE does not change within a run and every epoch brings the same clips and
    references back, so each is encoded once per process. Bounded in bytes (oldest out)."""

    def __init__(self, vae: nn.Module, max_bytes: int = 512 * 2**20):
        self.vae, self.max_bytes, self.bytes = vae, max_bytes, 0
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()

    def __call__(self, x: Tensor) -> Tensor:
        keys = [hashlib.blake2b(xi.detach().cpu().numpy().tobytes(), digest_size=16,
                                person=str(tuple(xi.shape)).encode()[:16]).digest()
                for xi in x]
        todo = list(dict.fromkeys(i for i, k in enumerate(keys) if k not in self._cache))
        if todo:
            with torch.no_grad():
                latents = self.vae.encode_latents(x[todo])
            for i, z in zip(todo, latents, strict=True):
                self._cache[keys[i]] = z
                self.bytes += z.numel() * z.element_size()
        for k in keys:
            self._cache.move_to_end(k)
        out = torch.stack([self._cache[k] for k in keys])
        while self.bytes > self.max_bytes and len(self._cache) > 1:
            _, z = self._cache.popitem(last=False)
            self.bytes -= z.numel() * z.element_size()
        return out


class LatentBatch(NamedTuple):
    x0: Tensor  # (B, C, T', h, w) clean latents of the target clips
    cond: Conditions
    drop: dict[str, Tensor] | None  # condition-dropout masks
    motion: Tensor | None  # (B, T, H, W) optical-flow magnitude, when the objective asks


class LatentObjective:
    """What the DiT objectives share: a frozen VAE and text encoder turn a dataset batch
    into clean latents and conditions; validation fixes t and noise; samples are drawn with
    `steps` Euler steps and `guidance`.

    A batch whose examples went through models.conditions.PrepareConditions (training's
    DataLoader workers) carries its pose maps, face codes, identity and text embeddings
    already; then the step only encodes what the latent cache has not seen."""

    wants_motion = False  # whether prepare() needs the target's optical flow

    def __init__(self, vae: nn.Module, text, size: int, *, steps: int,
                 guidance: GuidanceConfig, shift: float = 1.0, device="cpu"):
        self.device = torch.device(device)
        self.vae = vae.eval().requires_grad_(False).to(self.device)
        self.text, self.size = text, size
        self.steps, self.guidance, self.shift = steps, guidance, shift
        self.latents = FrozenLatents(self.vae)

    def prepare(self, batch: dict, prior: str | None = None) -> LatentBatch:
        """Clean latents, conditions and condition-dropout masks of a dataset batch; prior:
        with the clip a skip model starts from, the reference held "still" or "warp"ed to
        the pose, through the VAE (`skip_prior` of the model)."""
        prepared = batch.get(PREPARED) or prepare_batch(batch, text=self.text, size=self.size,
                                                       motion=self.wants_motion,
                                                       warp=prior == "warp")
        x0 = self.latents(to_pixels(prepared["frames"], self.size).to(self.device))
        cond = conditions_from_prepared(prepared, encode_latents=self.latents,
                                        device=self.device, still=prior is not None)
        motion = prepared.get("motion")
        return LatentBatch(x0, cond, drop_masks(batch, self.device),
                           None if motion is None else torch.as_tensor(motion))

    def loss_at(self, model: nn.Module, batch: dict, *, t: Tensor | None,
                noise: Tensor | None, generator: torch.Generator | None,
                step: int | None) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict, *, step: int = 0,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.loss_at(model, batch, t=None, noise=None, generator=generator, step=step)

    def validate(self, model: nn.Module, batches: list[dict]) -> float:
        losses = []
        with _evaluating(model):
            for i, batch in enumerate(batches):
                b, frames = batch["frames"].shape[:2]
                shape = (b, *self.vae.latent_shape(frames, self.size, self.size))
                noise = torch.randn(shape, generator=torch.Generator().manual_seed(i))
                losses.append(float(self.loss_at(model, batch, t=torch.linspace(0.2, 0.8, b),
                                                 noise=noise, generator=None,
                                                 step=None)["total"]))
        return float(np.mean(losses)) if losses else float("nan")

    def sample(self, model: nn.Module, batch: dict, *, seed: int = 0) -> np.ndarray:
        x0, cond, _, _ = self.prepare(batch, prior=skip_prior(model))
        with _evaluating(model):
            latents = FlowMatchSampler(shift=self.shift).sample(
                model, cond, x0.shape, steps=self.steps, guidance=self.guidance,
                generator=torch.Generator().manual_seed(seed), device=self.device)
            return to_uint8(decode_frames(self.vae, latents, cond))

    def finalize(self, model: nn.Module, batches: list[dict]) -> None:
        """Nothing: the EMA weights are saved as they are."""


class FlowMatchingObjective(LatentObjective):
    """Stages 1-3: flow matching + region weighting, + ID consistency every `id_every`
    steps (it decodes frames, which costs more than the rest of the step)."""

    def __init__(self, vae: nn.Module, text, size: int, *, steps: int,
                 guidance: GuidanceConfig, region_alpha: float, id_weight: float,
                 id_every: int, shift: float = 1.0,
                 loss_weighting: LossWeighting = "velocity", device="cpu"):
        super().__init__(vae, text, size, steps=steps, guidance=guidance, shift=shift,
                         device=device)
        self.region_alpha, self.id_weight, self.id_every = region_alpha, id_weight, id_every
        self.loss_weighting = loss_weighting
        self._id_encoder: nn.Module | None = None

    @property
    def wants_motion(self) -> bool:
        return self.region_alpha > 0

    def loss_at(self, model, batch, *, t, noise, generator, step):
        x0, cond, drop, motion = self.prepare(batch, prior=skip_prior(model))
        b = x0.shape[0]
        t = (t if t is not None else sample_timesteps(b, generator, self.shift)).to(self.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator)
        noise = noise.to(self.device)
        x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
        v = model(x_t, t, cond, drop)
        weights = time_weights(t, self.loss_weighting)
        if self.region_alpha > 0:
            weights = weights * region_weights(motion, x0.shape, alpha=self.region_alpha,
                                               temporal_stride=self.vae.temporal_factor
                                               ).to(self.device)
        out = {"flow_matching": flow_matching_loss(v, x0, noise, weights)}
        total = out["flow_matching"]
        if step is not None and self.id_weight > 0 and self.id_every \
                and (step + 1) % self.id_every == 0:
            frames = self.vae.decode_latents(predicted_x0(x_t, t, v))
            out["id_consistency"] = id_consistency_loss(
                frames, cond.reference_pixels, self.id_encoder(model), num_frames=2)
            total = total + self.id_weight * out["id_consistency"]
        out["total"] = total
        return out

    def id_encoder(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """A frozen copy of the model's learned appearance encoder (dlib is not
        differentiable); refreshed from the model's current weights each call."""
        source = _unwrap(model).identity.appearance
        if self._id_encoder is None:
            self._id_encoder = copy.deepcopy(source).requires_grad_(False)
        self._id_encoder.load_state_dict(source.state_dict())

        def embed(images: Tensor) -> Tensor:
            return self._id_encoder(images).flatten(1)

        return embed


class DistillationObjective(LatentObjective):
    """A student learning from a frozen DiT on dataset batches (no condition dropout): the
    guidance stage or the steps stage of models/distill.py. Its samples take the student's
    own steps and one branch: the guidance is in the model."""

    def __init__(self, vae: nn.Module, text, size: int, *,
                 distill: GuidanceDistillation | StepDistillation, steps: int,
                 shift: float = 1.0, device="cpu"):
        super().__init__(vae, text, size, steps=steps, guidance=GuidanceConfig(),
                         shift=shift, device=device)
        self.distill = distill

    def loss_at(self, model, batch, *, t, noise, generator, step):
        x0, cond, _, _ = self.prepare(batch, prior=skip_prior(model))
        return self.distill(model, x0, cond, generator=generator, fixed_t=t, noise=noise)


def skip_prior(model: nn.Module) -> str | None:
    """What the model (a MotionDiT, possibly wrapped) reads as cond.still_latents: None
    (nothing), "still" or "warp" (DiTConfig.reference_prior)."""
    return getattr(getattr(_unwrap(model), "config", None), "skip_prior", None)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DeepSpeed engine or DDP wrapper."""
    return getattr(model, "module", model)
