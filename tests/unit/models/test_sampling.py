"""Flow-matching sampler: time convention, multi-condition CFG, NFE, seeds, anchors.

The models here stand in for MotionDiT (models/dit.py, written separately): they have its
forward signature model(x, t, cond, drop) -> velocity, with velocities simple enough to check.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.errors import InvalidInput
from models.sampling import DROP_KEYS, FlowMatchSampler, GuidanceConfig

SHAPE = (2, 4, 3, 4, 4)  # B, C, T', h, w


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _kept(drop: dict[str, torch.Tensor] | None, key: str, batch: int) -> torch.Tensor:
    return torch.ones(batch, dtype=torch.bool) if drop is None else ~drop[key]


class AnalyticDiT(nn.Module):
    """Stands in for MotionDiT. Returns the exact velocity (x - x0*) / t toward a known x0*;
    each dropped condition moves x0* by its own offset, so the CFG branches differ."""

    OFFSETS = {"text": 1.0, "reference": 10.0, "intensity": 100.0}

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target
        self.calls: list[tuple[torch.Tensor, dict | None]] = []

    def forward(self, x, t, cond, drop=None):
        self.calls.append((t.clone(), drop))
        b = x.shape[0]
        target = self.target.clone()
        for key, offset in self.OFFSETS.items():
            target = target + offset * (~_kept(drop, key, b)).float().view(b, 1, 1, 1, 1)
        return (x - target) / t.view(b, 1, 1, 1, 1)


class ConvDiT(nn.Module):
    """Stands in for MotionDiT. A fixed per-position linear map of x (no mixing across frames
    or pixels) plus a drop-dependent bias; the output depends on the initial noise."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.randn(SHAPE[1], SHAPE[1], generator=_gen(0)) / SHAPE[1]
        self.inputs: list[torch.Tensor] = []

    def forward(self, x, t, cond, drop=None):
        self.inputs.append(x.clone())
        text = _kept(drop, "text", x.shape[0]).float().view(-1, 1, 1, 1, 1)
        mixed = torch.einsum("oc,bcthw->bothw", self.weight, x)  # channels only
        return mixed * (1 + t.view(-1, 1, 1, 1, 1)) + 0.5 * text


@pytest.mark.parametrize(("steps", "shift"), [(1, 1.0), (4, 1.0), (4, 3.0)])
def test_recovers_the_target_of_an_exact_velocity_field(steps, shift):
    target = torch.randn(SHAPE, generator=_gen(1))
    model = AnalyticDiT(target)
    sampler = FlowMatchSampler(shift=shift)
    out = sampler.sample(model, None, SHAPE, steps=steps, generator=_gen(2))
    torch.testing.assert_close(out, target, atol=1e-4, rtol=1e-4)
    # The model saw t = sigma (in [0, 1], 1 first), not the scheduler's timestep (sigma·1000).
    seen = torch.stack([t[0] for t, _ in model.calls])
    torch.testing.assert_close(seen, sampler.scheduler(steps).sigmas[:-1])
    assert seen[0] == 1.0


def test_unit_scales_equal_the_single_conditional_branch():
    model, sampler = ConvDiT(), FlowMatchSampler()
    x, t = torch.randn(SHAPE, generator=_gen(3)), torch.full((2,), 0.7)
    v = sampler.velocity(model, x, t, None, GuidanceConfig(text_scale=1.0, reference_scale=1.0))
    assert len(model.inputs) == 1
    torch.testing.assert_close(v, model(x, t, None, None))


def test_three_branch_guidance_follows_the_formula():
    model, sampler = AnalyticDiT(torch.zeros(SHAPE)), FlowMatchSampler()
    x, t = torch.randn(SHAPE, generator=_gen(4)), torch.full((2,), 0.5)
    guidance = GuidanceConfig(text_scale=3.0, reference_scale=2.0)
    v = sampler.velocity(model, x, t, None, guidance)
    drops = [d for _, d in model.calls]
    assert len(drops) == 3 and set(drops[0]) == set(DROP_KEYS)
    dropped = [{k for k, m in d.items() if m.all()} if d else set() for d in drops]
    assert dropped == [{"text", "reference", "intensity"}, {"text"}, set()]

    def branch(keys):
        drop = {k: torch.full((2,), k in keys) for k in DROP_KEYS}
        return model(x, t, None, drop)

    v_u, v_r, v_f = branch({"text", "reference", "intensity"}), branch({"text"}), branch(set())
    torch.testing.assert_close(v, v_u + 2.0 * (v_r - v_u) + 3.0 * (v_f - v_r))


@pytest.mark.parametrize(
    ("text", "ref", "prune", "branches"),
    [(1, 1, True, 1), (5, 2, True, 3), (0, 2, True, 2), (3, 1, True, 2), (2, 2, True, 2),
     (0, 0, True, 1), (1, 1, False, 3)],
)
def test_nfe_is_steps_times_branches(text, ref, prune, branches):
    model, sampler = ConvDiT(), FlowMatchSampler()
    guidance = GuidanceConfig(text_scale=text, reference_scale=ref, prune=prune)
    sampler.sample(model, None, SHAPE, steps=5, guidance=guidance, generator=_gen())
    assert sampler.last_nfe == len(model.inputs) == 5 * branches


def test_pruned_branches_change_nothing():
    x, t = torch.randn(SHAPE, generator=_gen(5)), torch.full((2,), 0.3)
    for text, ref in [(0, 2), (3, 1), (2, 2)]:
        pruned, full = (
            FlowMatchSampler().velocity(ConvDiT(), x, t, None, GuidanceConfig(text, ref, prune=p))
            for p in (True, False)
        )
        torch.testing.assert_close(pruned, full)


def test_same_seed_same_output_different_seed_different_output():
    sampler, guidance = FlowMatchSampler(), GuidanceConfig(text_scale=4.0, reference_scale=2.0)
    run = lambda seed: sampler.sample(  # noqa: E731
        ConvDiT(), None, SHAPE, steps=4, guidance=guidance, generator=_gen(seed)
    )
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))
    x_T = torch.randn(SHAPE, generator=_gen(7))
    assert torch.equal(sampler.sample(ConvDiT(), None, SHAPE, steps=4, guidance=guidance, x_T=x_T), run(7))


def test_anchored_frames_are_kept_at_the_current_noise_level():
    sampler, steps = FlowMatchSampler(), 4
    latents = torch.randn(SHAPE, generator=_gen(9))
    mask = torch.tensor([[True, False, False], [False, False, True]])
    model = ConvDiT()
    out = sampler.sample(model, None, SHAPE, steps=steps, generator=_gen(1), anchor=(latents, mask))
    plain = sampler.sample(ConvDiT(), None, SHAPE, steps=steps, generator=_gen(1))

    m = mask.view(2, 1, 3, 1, 1).expand(SHAPE)
    assert torch.equal(out[m], latents[m])
    torch.testing.assert_close(out[~m], plain[~m])  # no mixing across frames in ConvDiT
    noise = torch.randn(SHAPE, generator=_gen(1))
    for sigma, seen in zip(sampler.scheduler(steps).sigmas, model.inputs, strict=False):
        torch.testing.assert_close(seen[m], ((1 - sigma) * latents + sigma * noise)[m])


def test_progress_is_reported_each_step():
    seen = []
    FlowMatchSampler().sample(ConvDiT(), None, SHAPE, steps=3, progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_bad_arguments_raise_invalid_input():
    sampler, model = FlowMatchSampler(), ConvDiT()
    with pytest.raises(InvalidInput):
        sampler.sample(model, None, SHAPE, steps=0)
    with pytest.raises(InvalidInput):
        sampler.sample(model, None, SHAPE[:4], steps=2)
    with pytest.raises(InvalidInput):
        sampler.sample(model, None, SHAPE, steps=2, x_T=torch.zeros(1, 4, 3, 4, 4))
    with pytest.raises(InvalidInput):
        sampler.sample(model, None, SHAPE, steps=2, anchor=(torch.zeros(SHAPE), torch.ones(2, 2, dtype=torch.bool)))
    with pytest.raises(InvalidInput):
        GuidanceConfig(uncond_drops=("text", "style"))
    with pytest.raises(InvalidInput):
        FlowMatchSampler(shift=0)


def test_dual_branch_costs_two_evaluations_per_step_plus_one():
    model, sampler = ConvDiT(), FlowMatchSampler()
    guidance = GuidanceConfig(text_scale=3.0, reference_scale=1.5, dual=True)
    sampler.sample(model, None, SHAPE, steps=6, guidance=guidance, generator=_gen())
    assert sampler.last_nfe == len(model.inputs) == 2 * 6 + 1
    # Fewer than three branches needed: dual changes nothing.
    sampler.sample(ConvDiT(), None, SHAPE, steps=6, generator=_gen(),
                   guidance=GuidanceConfig(text_scale=3.0, reference_scale=1.0, dual=True))
    assert sampler.last_nfe == 12


def test_dual_branch_is_exact_when_the_predicted_clean_latents_differ_by_constants():
    # AnalyticDiT's branches predict x0* shifted by fixed offsets: the reused t·d is exact.
    target = torch.randn(SHAPE, generator=_gen(8))
    naive, dual = (FlowMatchSampler().sample(
        AnalyticDiT(target), None, SHAPE, steps=5, generator=_gen(7),
        guidance=GuidanceConfig(text_scale=3.0, reference_scale=1.5, dual=d))
        for d in (False, True))
    torch.testing.assert_close(dual, naive)


def test_dual_branch_approximates_naive_otherwise():
    # ConvDiT's text direction is a constant velocity, i.e. an x0 difference that shrinks
    # with t: the one-step-stale direction is off a little, not a lot.
    guidance = {d: GuidanceConfig(text_scale=3.0, reference_scale=1.5, dual=d)
                for d in (False, True)}
    naive, dual = (FlowMatchSampler().sample(ConvDiT(), None, SHAPE, steps=20,
                                             generator=_gen(9), guidance=guidance[d])
                   for d in (False, True))
    assert not torch.equal(naive, dual)
    assert (dual - naive).abs().mean() < 0.1 * naive.abs().mean()
