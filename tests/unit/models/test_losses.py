"""Training losses: flow matching, region-aware weights from optical flow, ID consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import InvalidInput
from models.losses import (
    flow_magnitude,
    flow_matching_loss,
    id_consistency_loss,
    predicted_x0,
    region_weights,
    sample_timesteps,
    time_weights,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- timesteps ---------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["logit_normal", "uniform"])
def test_timesteps_are_in_unit_interval_and_seeded(distribution):
    t = sample_timesteps(4096, _gen(1), distribution=distribution)
    assert t.shape == (4096,) and t.min() > 0 and t.max() < 1
    assert torch.equal(t, sample_timesteps(4096, _gen(1), distribution=distribution))


def test_logit_normal_concentrates_in_the_middle_and_shift_moves_towards_noise():
    logit = sample_timesteps(8192, _gen(2))
    uniform = sample_timesteps(8192, _gen(2), distribution="uniform")
    middle = lambda t: ((t > 0.25) & (t < 0.75)).float().mean()  # noqa: E731
    assert middle(logit) > middle(uniform) + 0.1
    assert sample_timesteps(8192, _gen(2), shift=3.0).mean() > logit.mean() + 0.1


def test_timesteps_reject_bad_arguments():
    with pytest.raises(InvalidInput):
        sample_timesteps(4, _gen(), distribution="beta")
    with pytest.raises(InvalidInput):
        sample_timesteps(0, _gen())
    with pytest.raises(InvalidInput):
        sample_timesteps(4, _gen(), shift=0.0)


# --- flow matching -----------------------------------------------------------------------


def test_flow_matching_loss_zero_on_target_positive_otherwise():
    g = _gen(3)
    x0, noise = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    assert flow_matching_loss(noise - x0, x0, noise) == 0
    assert flow_matching_loss(noise - x0 + 0.1, x0, noise) == pytest.approx(0.01)
    weights = torch.ones(2, 1, 3, 4, 4)
    assert flow_matching_loss(noise - x0, x0, noise, weights) == 0
    assert flow_matching_loss(x0, x0, noise, weights) == pytest.approx(
        flow_matching_loss(x0, x0, noise).item()
    )


def test_clean_weighting_is_the_clean_clip_error_at_every_time():
    g = _gen(4)
    x0, noise = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    t = torch.tensor([0.05, 0.5, 0.95])
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
    v = noise - x0 + 0.3 * torch.randn(x0.shape, generator=g)  # a wrong velocity
    clean_error = (predicted_x0(x_t, t, v) - x0).square().mean()
    assert flow_matching_loss(v, x0, noise, time_weights(t, "clean")) == pytest.approx(
        clean_error.item(), rel=1e-5)
    assert flow_matching_loss(v, x0, noise, time_weights(t, "velocity")) == pytest.approx(
        flow_matching_loss(v, x0, noise).item())
    # an error in the nearly clean sample alone: the plain loss weighs it 1/t² = 400 times more
    v_near = (noise - x0).clone()
    v_near[0] += 0.3
    plain = flow_matching_loss(v_near, x0, noise)
    assert plain == pytest.approx(400 * flow_matching_loss(v_near, x0, noise,
                                                            time_weights(t, "clean")).item())
    with pytest.raises(InvalidInput, match="loss weighting"):
        time_weights(t, "x0")


def test_weights_select_where_the_error_counts():
    x0, noise = torch.zeros(1, 2, 3, 2, 2), torch.zeros(1, 2, 3, 2, 2)
    out = torch.zeros_like(x0)
    out[:, :, 0] = 1.0  # error only in latent frame 0
    weights = torch.ones(1, 1, 3, 2, 2)
    weights[:, :, 0] = 0.0
    assert flow_matching_loss(out, x0, noise, weights) == 0
    weights[:, :, 0] = 3.0
    assert flow_matching_loss(out, x0, noise, weights) == pytest.approx(1.0)  # 3 × 1/3 of elements


def test_flow_matching_loss_rejects_bad_shapes():
    x = torch.zeros(1, 2, 3, 2, 2)
    with pytest.raises(InvalidInput):
        flow_matching_loss(x, x, torch.zeros(1, 2, 3, 2, 3))
    with pytest.raises(InvalidInput):
        flow_matching_loss(x, x, x, torch.ones(1, 1, 2, 2, 2))


def test_predicted_x0_inverts_the_interpolation():
    g = _gen(4)
    x0, noise = torch.randn(3, 2, 1, 2, 2, generator=g), torch.randn(3, 2, 1, 2, 2, generator=g)
    t = torch.tensor([0.1, 0.5, 0.9])
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
    torch.testing.assert_close(predicted_x0(x_t, t, noise - x0), x0)
    with pytest.raises(InvalidInput):
        predicted_x0(x_t, t[:2], noise - x0)


# --- region-aware weights ----------------------------------------------------------------


def _moving_square_clip(frames: int = 9, size: int = 32) -> np.ndarray:
    """(1, T, size, size, 3) uint8: a textured square sliding down the left half over a static
    textured background (texture so DIS has something to match)."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 120, (size, size, 1), dtype=np.uint8).repeat(3, -1)
    square = rng.integers(150, 256, (8, 8, 1), dtype=np.uint8).repeat(3, -1)
    clip = np.repeat(background[None], frames, 0)
    for i in range(frames):
        clip[i, 2 + 2 * i : 10 + 2 * i, 4:12] = square
    return clip[None]


def test_flow_magnitude_finds_the_moving_square():
    mag = flow_magnitude(_moving_square_clip())
    assert mag.shape == (1, 9, 32, 32) and mag.dtype == torch.float32
    torch.testing.assert_close(mag[:, 0], mag[:, 1])
    assert mag[0, 1:, :, :16].mean() > 4 * mag[0, 1:, :, 16:].mean()


def test_flow_magnitude_rejects_bad_frames():
    with pytest.raises(InvalidInput):
        flow_magnitude(np.zeros((1, 4, 8, 8, 3), np.float32))
    with pytest.raises(InvalidInput):
        flow_magnitude(np.zeros((1, 1, 8, 8, 3), np.uint8))


def test_region_weights_have_latent_shape_mean_one_and_follow_motion():
    mag = torch.zeros(2, 9, 16, 16)
    mag[0, :, :, :8] = 2.0  # clip 0: left half moves
    mag[1, 5:, 8:, :] = 1.0  # clip 1: bottom half moves, in the last latent frame only
    w = region_weights(mag, (2, 4, 3, 4, 4), alpha=2.0, temporal_stride=4)
    assert w.shape == (2, 1, 3, 4, 4)
    torch.testing.assert_close(w.mean(dim=(1, 2, 3, 4)), torch.ones(2))
    assert (w[0, :, :, :, :2] > w[0, :, :, :, 2:]).all()
    assert w[1, 0, 2, 2:].min() > w[1, 0, 2, :2].max()
    assert w[1, 0, 2, 2:].min() > w[1, 0, :2].max()  # frames 5..8 -> latent frame 2


def test_region_weights_static_clip_is_uniform_and_threshold_gives_a_mask():
    torch.testing.assert_close(region_weights(torch.zeros(1, 5, 8, 8), (2, 2, 2), temporal_stride=4), torch.ones(1, 1, 2, 2, 2))
    mag = torch.linspace(0, 1, 8).expand(1, 5, 8, 8)
    w = region_weights(mag, (2, 2, 2), alpha=1.0, threshold=0.5, temporal_stride=4)
    assert w.unique().numel() == 2  # foreground and background weights only
    assert w.mean().item() == pytest.approx(1.0)


def test_region_weights_follow_the_vae_temporal_factor():
    mag = torch.zeros(1, 5, 8, 8)
    mag[:, 3:] = 1.0  # frames 3, 4 -> latent frame 2 with a factor of 2
    w = region_weights(mag, (3, 2, 2), temporal_stride=2)
    assert w[0, 0, 2].min() > w[0, 0, :2].max()


def test_region_weights_from_frames():
    w = region_weights(_moving_square_clip(), (3, 4, 4), alpha=3.0, temporal_stride=4)
    assert w.shape == (1, 1, 3, 4, 4)
    assert w[..., :2].mean() > w[..., 2:].mean()  # the square moves in the left half


@pytest.mark.parametrize("latent", [(3, 4, 4), (2, 3, 3), (2,)])
def test_region_weights_reject_grids_that_do_not_divide(latent):
    with pytest.raises(InvalidInput):
        region_weights(torch.zeros(1, 5, 8, 8), latent, temporal_stride=4)


# --- ID consistency ----------------------------------------------------------------------


def _identity_encoder(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def test_id_loss_zero_for_the_reference_larger_for_other_frames_and_differentiable():
    g = _gen(5)
    reference = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    same = reference.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    assert id_consistency_loss(same, reference, _identity_encoder).item() == pytest.approx(0, abs=1e-6)

    other = (torch.rand(2, 3, 4, 8, 8, generator=g) * 2 - 1).requires_grad_()
    loss = id_consistency_loss(other, reference, _identity_encoder)
    assert loss.item() > 0.1
    loss.backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_id_loss_embeds_only_the_sampled_frames():
    calls = []

    def encoder(x):
        calls.append(x.shape[0])
        return x.flatten(1)

    frames = torch.zeros(2, 3, 9, 4, 4).uniform_(-1, 1)
    id_consistency_loss(frames, torch.zeros(2, 3, 4, 4).uniform_(-1, 1), encoder, num_frames=3)
    assert calls == [6, 2]


def test_id_loss_rejects_mismatched_shapes():
    with pytest.raises(InvalidInput):
        id_consistency_loss(torch.zeros(2, 3, 4, 8, 8), torch.zeros(2, 3, 4, 4), _identity_encoder)
    with pytest.raises(InvalidInput):
        id_consistency_loss(torch.zeros(2, 3, 4, 8, 8), torch.zeros(2, 3, 8, 8), _identity_encoder, num_frames=5)
