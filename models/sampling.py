"""Flow-matching sampling of the DiT with naive multi-condition classifier-free guidance.

The sampler integrates dx/dt = v from t = 1 (noise) to t = 0 with diffusers'
`FlowMatchEulerDiscreteScheduler`. Its sigma is exactly the model's time t (x_t = (1 - t)·x0
+ t·noise), so the model is called with t = sigma, not with the scheduler's timestep
(sigma·1000), which only serves to index the scheduler's steps.

It codes against the DiT contract, `model(x, t, cond, drop) -> velocity`, where `drop` maps
each condition name to a (B,) bool tensor and a dropped condition uses the null embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import Tensor

from models.conditions import DROP_KEYS
from models.errors import InvalidInput

# What each guidance branch drops; the full branch drops nothing.
_REF_BRANCH_DROPS = ("text",)

Model = Callable[[Tensor, Tensor, Any, dict[str, Tensor] | None], Tensor]


@dataclass(frozen=True)
class GuidanceConfig:
    """Naive multi-condition CFG, three branches per step (InstructPix2Pix-style):

        v = v_uncond + s_ref·(v_ref - v_uncond) + s_text·(v_full - v_ref)

    v_uncond drops text, reference (and motion intensity: `uncond_drops`), v_ref drops only
    the text, v_full drops nothing; body, face, hands and camera stay on in every branch.
    Rewritten as v = (1 - s_ref)·v_uncond + (s_ref - s_text)·v_ref + s_text·v_full, a branch
    whose coefficient is 0 contributes nothing, so with `prune` it is not evaluated: exact,
    not an approximation. Hence s_ref = s_text = 1 runs the full branch alone, s_text = 0 or
    s_ref = 1 needs two branches, and s_ref = s_text = s is plain two-branch CFG.
    Set `prune=False` to always pay three evaluations (a naive-baseline benchmark).
    """

    text_scale: float = 1.0
    reference_scale: float = 1.0
    uncond_drops: tuple[str, ...] = ("text", "reference", "intensity")
    prune: bool = True
    dual: bool = False  # two branches per step instead of three (see DualBranchCache)

    def __post_init__(self) -> None:
        unknown = set(self.uncond_drops) - set(DROP_KEYS)
        if unknown:
            raise InvalidInput(f"unknown conditions in uncond_drops: {sorted(unknown)}; known: {DROP_KEYS}")
        for name in ("text_scale", "reference_scale"):
            if not np.isfinite(getattr(self, name)):
                raise InvalidInput(f"{name} must be finite, got {getattr(self, name)}")

    def coefficients(self) -> dict[str, float]:
        """Weight of each branch's velocity in the guided velocity (they sum to 1)."""
        s_ref, s_text = self.reference_scale, self.text_scale
        return {"uncond": 1.0 - s_ref, "reference": s_ref - s_text, "full": s_text}

    def branches(self) -> tuple[str, ...]:
        """Branches evaluated per step; their count is the NFE per step."""
        return tuple(k for k, c in self.coefficients().items() if c != 0 or not self.prune)

    def drops(self, branch: str) -> tuple[str, ...]:
        return {"uncond": self.uncond_drops, "reference": _REF_BRANCH_DROPS, "full": ()}[branch]


Anchor = tuple[Tensor, Tensor]


class DualBranchCache:
    """Dual-branch sampling: the three-branch guidance of GuidanceConfig at two model
    evaluations per step.

    Write the guided velocity with two guidance directions,

        v = v_full + (s_text - 1)·d_text + (s_ref - 1)·d_ref,
        d_text = v_full - v_ref,   d_ref = v_ref - v_uncond.

    Every step evaluates v_full and ONE of the other two branches, alternating:
      - a "reference" step gets d_text exactly and reuses d_ref;
      - an "uncond" step gets d_text + d_ref = v_full - v_uncond exactly and takes d_ref
        as that minus the reused d_text.
    The first step evaluates all three, so a run costs 2·steps + 1 evaluations (101 for 50
    steps instead of 150). What is reused is kept as t·d: with v = (x_t - x0)/t a velocity
    difference is a difference of predicted clean latents divided by t, and those change
    slowly along the trajectory, while 1/t grows fast near the end. One direction is thus a
    step stale in x0 terms: that is the approximation, measured against the naive sampler in
    tests/bench/bench_distillation.py.
    """

    def __init__(self) -> None:
        self.x0_text: Tensor | None = None  # t·d_text
        self.x0_ref: Tensor | None = None  # t·d_ref
        self.next_branch = "reference"

    def velocity(self, branch: Callable[[str], Tensor], t: Tensor,
                 g: GuidanceConfig) -> Tensor:
        t = t.view(-1, *([1] * 4))
        v_full = branch("full")
        if self.x0_text is None:  # first step: all three branches
            v_ref = branch("reference")
            self.x0_text, self.x0_ref = t * (v_full - v_ref), t * (v_ref - branch("uncond"))
        elif self.next_branch == "reference":
            self.x0_text = t * (v_full - branch("reference"))
            self.next_branch = "uncond"
        else:
            self.x0_ref = t * (v_full - branch("uncond")) - self.x0_text
            self.next_branch = "reference"
        return v_full + ((g.text_scale - 1) * self.x0_text
                         + (g.reference_scale - 1) * self.x0_ref) / t


class FlowMatchSampler:
    """Euler sampling on diffusers' FlowMatchEulerDiscreteScheduler with multi-condition CFG.

    `shift` must match the one used by `models.losses.sample_timesteps` in training. The
    number of model evaluations of the last `sample` call is `last_nfe`.
    """

    def __init__(self, shift: float = 1.0, num_train_timesteps: int = 1000) -> None:
        if shift <= 0:
            raise InvalidInput(f"shift must be > 0, got {shift}")
        self.shift = shift
        self.num_train_timesteps = num_train_timesteps
        self.last_nfe = 0
        self._nfe = 0

    def scheduler(self, steps: int, device: torch.device | str | None = None):
        """A fresh scheduler set to `steps` steps (fresh because diffusers' is stateful).

        Sigmas are uniform in [1/steps, 1] before the scheduler applies the shift, as in the
        SD3 and Wan pipelines; the scheduler appends the final sigma 0."""
        if steps < 1:
            raise InvalidInput(f"steps must be >= 1, got {steps}")
        sched = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=self.num_train_timesteps, shift=self.shift
        )
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps).tolist(), device=device)
        sched.set_begin_index(0)
        return sched

    def velocity(
        self, model: Model, x: Tensor, t: Tensor, cond: Any, guidance: GuidanceConfig,
        dual: DualBranchCache | None = None,
    ) -> Tensor:
        """Guided velocity at (x, t): one separate model call per branch evaluated (two per
        step with a DualBranchCache when all three branches are needed)."""

        def branch(name: str) -> Tensor:
            self._nfe += 1
            return model(x, t, cond, _drop_dict(guidance.drops(name), x.shape[0], x.device))

        coeffs = guidance.coefficients()
        branches = guidance.branches()
        if dual is not None and len(branches) == 3:
            return dual.velocity(branch, t, guidance)
        v = None
        for name in branches:
            term = coeffs[name] * branch(name)
            v = term if v is None else v + term
        return v

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        cond: Any,
        shape: tuple[int, int, int, int, int],
        *,
        steps: int,
        guidance: GuidanceConfig | None = None,
        generator: torch.Generator | None = None,
        x_T: Tensor | None = None,
        anchor: Anchor | None = None,
        progress: Callable[[int, int], None] | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Latents (B, C, T', h, w) integrated from noise x_T (drawn from `generator` unless
        given) with `steps` Euler steps.

        anchor = (latents (B, C, T', h, w), mask (B, T') bool): after every step the masked
        frames are replaced by the anchor latents noised to the current level,
        (1 - t)·anchor + t·x_T, so the other frames are denoised in context with them and
        they end exactly equal to the anchor (t = 0); this joins sub-clips generated apart.
        progress(step, steps) is called after each step.
        """
        guidance = guidance or GuidanceConfig()
        if len(shape) != 5:
            raise InvalidInput(f"shape must be (B, C, T', h, w), got {tuple(shape)}")
        if x_T is None:
            gen_device = generator.device if generator is not None else None
            x_T = torch.randn(shape, generator=generator, device=gen_device)
        elif tuple(x_T.shape) != tuple(shape):
            raise InvalidInput(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
        noise = x_T.to(device) if device is not None else x_T
        sched = self.scheduler(steps, noise.device)
        impose = _anchoring(anchor, noise)

        self._nfe = 0
        dual = DualBranchCache() if guidance.dual else None
        x = impose(noise, sched.sigmas[0])
        for i, timestep in enumerate(sched.timesteps):
            t = sched.sigmas[i].to(x.dtype).expand(x.shape[0])
            v = self.velocity(model, x, t, cond, guidance, dual)
            x = sched.step(v, timestep, x, return_dict=False)[0]
            x = impose(x, sched.sigmas[i + 1])
            if progress is not None:
                progress(i + 1, steps)
        self.last_nfe = self._nfe
        return x


def _drop_dict(dropped: tuple[str, ...], batch: int, device: torch.device) -> dict[str, Tensor] | None:
    """All contract keys, so the model never has to guess what a missing key means; None
    (drop nothing, per the contract) for the full branch."""
    if not dropped:
        return None
    return {k: torch.full((batch,), k in dropped, dtype=torch.bool, device=device) for k in DROP_KEYS}


def _anchoring(anchor: Anchor | None, noise: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """x, sigma -> x with the anchored frames put back on the straight path from anchor to
    the run's own noise at level sigma (identity without an anchor)."""
    if anchor is None:
        return lambda x, sigma: x
    latents, mask = anchor
    b, _, t_lat = noise.shape[:3]
    if tuple(latents.shape) != tuple(noise.shape):
        raise InvalidInput(f"anchor latents have shape {tuple(latents.shape)}, expected {tuple(noise.shape)}")
    if tuple(mask.shape) != (b, t_lat) or mask.dtype != torch.bool:
        raise InvalidInput(f"anchor mask must be bool ({b}, {t_lat}), got {mask.dtype} {tuple(mask.shape)}")
    latents = latents.to(noise)
    mask = mask.to(noise.device).view(b, 1, t_lat, 1, 1)

    def impose(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.to(noise.dtype)
        return torch.where(mask, (1 - sigma) * latents + sigma * noise, x)

    return impose
