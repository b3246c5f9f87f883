"""Distilling the teacher into a few-step student without classifier-free guidance.

Two stages, each a plain loss over (clean latents, conditions) that
models/objectives.DistillationObjective feeds with dataset batches:

The guidance stage (Meng et al., "On Distillation of Guided Diffusion Models", CVPR 2023):
   the student, initialised from the teacher plus a zero-initialised guidance-scale
   embedding, regresses the teacher's three-branch guided velocity at random scales in one
   evaluation. Afterwards one call replaces three.

The steps stage: few steps, by segment-wise trajectory distillation, the one-phase form of
   progressive distillation (Salimans & Ho, ICLR 2022) that TRACT (Berthelot et al., 2023)
   generalised: the sampling interval is cut into `student_steps` segments; for a noised latent at a
   segment's start the frozen guidance-stage model integrates the segment with `teacher_steps /
   student_steps` Euler steps, and the student learns the single straight step that lands
   on the same point. Rectified-flow trajectories are nearly straight, so one phase
   suffices (rather than halving steps over log2(50/4) rounds), and unlike consistency or
   distribution-matching distillation (DMD) it needs no discriminator, no second "fake
   score" network and no ODE pairs stored in advance: it costs the teacher's segment
   integration per training step and nothing else, which fits the CPU profile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.conditions import Conditions
from models.losses import sample_timesteps
from models.sampling import DROP_KEYS, FlowMatchSampler, GuidanceConfig


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1, 1)


def guided_velocity(teacher: nn.Module, x: Tensor, t: Tensor, cond: Conditions,
                    text_scale: Tensor, reference_scale: Tensor,
                    uncond_drops: tuple[str, ...] = GuidanceConfig.uncond_drops) -> Tensor:
    """The teacher's naive three-branch guided velocity (GuidanceConfig's formula) with
    per-sample scales (B,)."""
    b = x.shape[0]

    def branch(dropped: tuple[str, ...]) -> Tensor:
        drop = {k: torch.full((b,), k in dropped, dtype=torch.bool, device=x.device)
                for k in DROP_KEYS} if dropped else None
        return teacher(x, t, cond, drop)

    v_u, v_r, v_f = branch(uncond_drops), branch(("text",)), branch(())
    s_t, s_r = _per_sample(text_scale), _per_sample(reference_scale)
    return v_u + s_r * (v_r - v_u) + s_t * (v_f - v_r)


class GuidanceDistillation:
    """The guidance stage: student(x_t, t, cond + scales) ≈ the teacher's guided velocity at
    those scales."""

    def __init__(self, teacher: nn.Module, *, text_range: tuple[float, float],
                 reference_range: tuple[float, float], shift: float = 1.0):
        self.teacher = teacher.eval().requires_grad_(False)
        self.text_range, self.reference_range, self.shift = text_range, reference_range, shift

    def __call__(self, student: nn.Module, x0: Tensor, cond: Conditions, *,
                 generator: torch.Generator | None = None, fixed_t: Tensor | None = None,
                 noise: Tensor | None = None) -> dict[str, Tensor]:
        b = x0.shape[0]
        t = fixed_t if fixed_t is not None else sample_timesteps(b, generator, self.shift)
        noise = noise if noise is not None else torch.randn(x0.shape, generator=generator)
        t, noise = t.to(x0.device), noise.to(x0.device)
        x_t = (1 - _per_sample(t)) * x0 + _per_sample(t) * noise
        scales = torch.rand(2, b, generator=generator).to(x0.device)
        s_text = self.text_range[0] + (self.text_range[1] - self.text_range[0]) * scales[0]
        s_ref = self.reference_range[0] + (self.reference_range[1] - self.reference_range[0]) \
            * scales[1]
        with torch.no_grad():
            target = guided_velocity(self.teacher, x_t, t, cond, s_text, s_ref)
        pred = student(x_t, t, cond.with_guidance(s_text, s_ref))
        loss = F.mse_loss(pred.float(), target.float())
        return {"guidance": loss, "total": loss}


class StepDistillation:
    """The steps stage: one student step per segment = the guidance-stage model's `teacher_steps /
    student_steps` Euler steps over it (the student keeps its default guidance scales)."""

    def __init__(self, teacher: nn.Module, *, student_steps: int, teacher_steps: int,
                 shift: float = 1.0):
        if student_steps < 1 or teacher_steps < student_steps:
            raise ValueError(f"need 1 <= student_steps ({student_steps}) <= teacher_steps "
                             f"({teacher_steps})")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student_steps, self.shift = student_steps, shift
        self.substeps = max(1, round(teacher_steps / student_steps))
        # The student's sampling times (the sampler's own schedule, ending at 0).
        self.sigmas = FlowMatchSampler(shift=shift).scheduler(student_steps).sigmas.float()

    def segment_target(self, x: Tensor, t_start: Tensor, t_end: Tensor,
                       cond: Conditions) -> Tensor:
        """Where the teacher's Euler steps take x from t_start to t_end (per sample)."""
        for k in range(self.substeps):
            a = t_start + (t_end - t_start) * k / self.substeps
            b = t_start + (t_end - t_start) * (k + 1) / self.substeps
            x = x + _per_sample(b - a) * self.teacher(x, a, cond)
        return x

    def __call__(self, student: nn.Module, x0: Tensor, cond: Conditions, *,
                 generator: torch.Generator | None = None, fixed_t: Tensor | None = None,
                 noise: Tensor | None = None) -> dict[str, Tensor]:
        b = x0.shape[0]
        if fixed_t is not None:  # validation: the segment whose start is nearest
            segment = (self.sigmas[:-1, None] - fixed_t[None].cpu()).abs().argmin(0)
        else:
            segment = torch.randint(0, self.student_steps, (b,), generator=generator)
        t_start = self.sigmas[segment].to(x0.device)
        t_end = self.sigmas[segment + 1].to(x0.device)
        noise = noise if noise is not None else torch.randn(x0.shape, generator=generator)
        x = (1 - _per_sample(t_start)) * x0 + _per_sample(t_start) * noise.to(x0.device)
        with torch.no_grad():
            landing = self.segment_target(x, t_start, t_end, cond)
        target = (landing - x) / _per_sample(t_end - t_start)  # the one straight step
        pred = student(x, t_start, cond)
        loss = F.mse_loss(pred.float(), target.float())
        return {"steps": loss, "total": loss}
