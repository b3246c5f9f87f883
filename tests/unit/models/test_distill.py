"""Distillation objectives on the tiny DiT and on an analytic velocity field."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from flows.profiles import profile_config
from models.distill import GuidanceDistillation, StepDistillation, guided_velocity
from models.dit import MotionDiT
from models.sampling import FlowMatchSampler, GuidanceConfig
from tests.tiny_models import perturb_zero_init, random_conditions

CFG = profile_config("tiny").dit
B, T, S = 2, 3, 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/models/conftest.py


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = perturb_zero_init(MotionDiT(CFG, stage=3), scale=0.1).eval()
    student = MotionDiT(dataclasses.replace(CFG, guidance_embed=True), stage=3)
    student.load_state_dict(teacher.state_dict(), strict=False)
    x0 = torch.randn(B, CFG.latent_channels, T, S, S, generator=torch.Generator().manual_seed(1))
    return teacher, student, x0, random_conditions(CFG, B, T, S, seed=2)


def test_guided_velocity_is_the_samplers_formula(pair):
    teacher, _, x0, cond = pair
    t = torch.tensor([0.4, 0.9])
    ours = guided_velocity(teacher, x0, t, cond, torch.full((B,), 3.0), torch.full((B,), 1.5))
    with torch.no_grad():
        theirs = FlowMatchSampler().velocity(teacher, x0, t, cond,
                                             GuidanceConfig(3.0, 1.5, prune=False))
    torch.testing.assert_close(ours, theirs)


def test_guidance_stage_targets_the_guided_velocity(pair):
    teacher, student, x0, cond = pair
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    unguided = GuidanceDistillation(teacher, text_range=(1, 1), reference_range=(1, 1))
    # scales 1: the guided velocity is the full branch, which the fresh student already is
    assert unguided(student, x0, cond, generator=g())["total"] < 1e-10
    guided = GuidanceDistillation(teacher, text_range=(4, 4), reference_range=(2, 2))
    before = guided(student, x0, cond, generator=g())["total"]
    assert before > 1e-4
    # the whole student, as the guidance stage trains it: with the reference skip part of the
    # guided velocity depends on x_t, which the guidance embedding alone cannot add
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    for _ in range(40):
        opt.zero_grad()
        guided(student, x0, cond, generator=g())["total"].backward()
        opt.step()
    assert guided(student, x0, cond, generator=g())["total"] < 0.5 * before


class Straight(nn.Module):
    """v = (x - c) / t: every trajectory is the straight line to c, Euler is exact."""

    def __init__(self, c: torch.Tensor):
        super().__init__()
        self.c = c

    def forward(self, x, t, cond, drop=None):
        return (x - self.c) / t.view(-1, 1, 1, 1, 1)


def test_steps_stage_target_is_one_straight_step_over_the_segment():
    c = torch.randn(B, 4, T, S, S)
    cond = random_conditions(CFG, B, T, S, seed=3)
    objective = StepDistillation(Straight(c), student_steps=4, teacher_steps=48)
    assert objective.substeps == 12
    torch.testing.assert_close(objective.sigmas, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    # On straight trajectories the one-step target is the teacher's own velocity: a student
    # equal to the teacher has zero loss; one that is off does not.
    out = objective(Straight(c), c, cond, generator=torch.Generator().manual_seed(0))
    assert out["total"] < 1e-8
    assert objective(Straight(c + 1), c, cond,
                     generator=torch.Generator().manual_seed(0))["total"] > 0.1


def test_steps_stage_validation_picks_the_nearest_segment():
    c = torch.randn(B, 4, T, S, S)
    objective = StepDistillation(Straight(c), student_steps=4, teacher_steps=8)
    seen = []

    class Spy(Straight):
        def forward(self, x, t, cond, drop=None):
            seen.append(t.clone())
            return super().forward(x, t, cond)

    objective(Spy(c), c, random_conditions(CFG, B, T, S, seed=3),
              fixed_t=torch.tensor([0.2, 0.8]), noise=torch.randn(c.shape))
    torch.testing.assert_close(seen[0], torch.tensor([0.25, 0.75]))
