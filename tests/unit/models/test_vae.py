"""Causal video VAE: shapes, causality, gradients, overfitting a tiny batch, latent
normalisation, the pretrained-Wan adapter through a tiny random diffusers model, and errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from flows.profiles import profile_config
from models.errors import InvalidInput
from models.vae import (
    DiagonalGaussian,
    VAEConfig,
    VideoVAE,
    WanVAEAdapter,
    decode_dtype_for,
    load_vae,
)

# patch_size 1 and mid attention: the code paths the tiny profile's VAE does not take
MICRO = VAEConfig(latent_channels=4, base_channels=8, channel_mult=(1, 2, 2),
                  spatial_down=(True, True), temporal_down=(True, True), patch_size=1,
                  num_res_blocks=1, attention=True, norm_groups=4)


# A x8 shortcut VAE (the tiny profile's before it went to x2): its shapes are what these
# tests spell out; the tiny profile's own VAE is covered by the parametrised tests.
TINY = VAEConfig(latent_channels=16, base_channels=16, channel_mult=(1, 2, 4),
                 spatial_down=(True, True), temporal_down=(True, True), patch_size=2,
                 num_res_blocks=1, attention=False, norm_groups=8, shortcut=True)
PROFILE = profile_config("tiny").vae


def video(b=1, t=9, hw=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, hw, hw, generator=g) * 2 - 1


def vae(config) -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(config).eval()


@pytest.fixture(scope="module")
def tiny() -> VideoVAE:
    return vae(TINY)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("t", [1, 5, 9])
def test_tiny_shapes_for_images_and_videos(tiny, t):
    x = video(b=2, t=t)
    with torch.no_grad():
        posterior = tiny.encode(x)
        z = posterior.sample()
        assert z.shape == (2, 16, 1 + (t - 1) // 4, 4, 4) == (2, *tiny.latent_shape(t, 32, 32))
        assert tiny.decode(z).shape == x.shape
        recon, post = tiny(x)  # eval mode: decodes the mean
        torch.testing.assert_close(recon, tiny.decode(posterior.mean))
        assert not torch.allclose(tiny(x, sample=True)[0], recon)
    assert recon.shape == x.shape and post.mean.shape == z.shape


def test_micro_config_shapes_non_square():
    model = vae(MICRO)
    x = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    with torch.no_grad():
        z = model.encode(x).mode()
        assert z.shape == (1, 4, 2, 4, 6)
        assert model.decode(z).shape == x.shape


# ---------------------------------------------------------------- causality


@pytest.mark.parametrize("config", [TINY, PROFILE, MICRO], ids=["x8", "tiny", "micro"])
def test_encoder_is_causal_and_images_encode_like_first_frames(config):
    model = vae(config)
    x = video(t=9)
    with torch.no_grad():
        z = model.encode(x).mean
        for frame, unchanged in ((1, 1), (5, 2), (8, 2)):  # latent j sees frames <= 4j
            y = x.clone()
            y[:, :, frame] = -y[:, :, frame]
            zy = model.encode(y).mean
            torch.testing.assert_close(zy[:, :, :unchanged], z[:, :, :unchanged])
            assert not torch.allclose(zy[:, :, unchanged:], z[:, :, unchanged:])
        torch.testing.assert_close(model.encode(x[:, :, :1]).mean, z[:, :, :1])


def test_decoder_is_causal(tiny):
    z = torch.randn(1, 16, 3, 4, 4)
    with torch.no_grad():
        out = tiny.decode(z)
        z[:, :, 2] += 1.0
        changed = tiny.decode(z)
    torch.testing.assert_close(changed[:, :, :5], out[:, :, :5])  # latent 2 -> frames 5..8
    assert not torch.allclose(changed[:, :, 5:], out[:, :, 5:])


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("config", [TINY, PROFILE, MICRO], ids=["x8", "tiny", "micro"])
def test_gradient_reaches_every_parameter(config):
    model = vae(config).train()
    x = video(b=2, t=5, hw=16 if config is MICRO else 32)

    def backward():
        model.zero_grad()
        recon, posterior = model(x, generator=torch.Generator().manual_seed(0))
        model.loss(x, recon, posterior, kl_weight=1e-2)["total"].backward()

    backward()
    if model.config.shortcut:  # zero-initialised heads pass no gradient before one step
        torch.optim.SGD(model.parameters(), lr=1e-2).step()
        backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_loss_terms_and_overfitting_a_fixed_batch():
    model = vae(TINY).train()
    # smooth moving blobs: learnable structure, unlike noise
    t = torch.linspace(0, 1, 5).view(1, 1, 5, 1, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x = torch.cat([torch.sin(3 * xx + 2 * t + c) * torch.cos(2 * yy - t) for c in (0, 1, 2)], 1)
    x = torch.cat([x, x.flip(-1)]).clamp(-1, 1)

    g = torch.Generator().manual_seed(0)
    recon, posterior = model(x, generator=g)
    first = model.loss(x, recon, posterior, kl_weight=1e-3)
    torch.testing.assert_close(first["total"], first["recon_l1"] + 1e-3 * first["kl"])
    torch.testing.assert_close(first["recon_l1"], (recon - x).abs().mean())

    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(30):
        recon, posterior = model(x, generator=g)
        losses = model.loss(x, recon, posterior, kl_weight=1e-3)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    assert losses["recon_l1"].item() < 0.5 * first["recon_l1"].item()


# ---------------------------------------------------------------- posterior and latent scale


def test_diagonal_gaussian():
    mean, logvar = torch.randn(2, 3, 1, 2, 2), torch.randn(2, 3, 1, 2, 2)
    q = DiagonalGaussian(torch.cat([mean, logvar], 1))
    assert q.mode() is q.mean
    a, b = (q.sample(torch.Generator().manual_seed(1)) for _ in range(2))
    torch.testing.assert_close(a, b)
    prior = DiagonalGaussian(torch.zeros(2, 6, 1, 2, 2))
    torch.testing.assert_close(prior.kl(), torch.zeros(2))
    assert (q.kl() > 0).all() and q.kl().shape == (2,)


def test_fit_latent_stats_gives_unit_variance_and_travels_with_the_state_dict():
    model = vae(TINY)
    mean = torch.tensor([1.0, -2.0, 0.5, 0.0]).repeat(4)
    std = torch.tensor([3.0, 0.5, 1.0, 2.0]).repeat(4)
    z = torch.randn(8, 16, 3, 4, 4) * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)
    model.fit_latent_stats([z[:4], z[4:]])
    n = model.normalize_latents(z)
    torch.testing.assert_close(n.mean(dim=(0, 2, 3, 4)), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.std(dim=(0, 2, 3, 4)), torch.ones(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.denormalize_latents(n), z)

    fresh = vae(TINY)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.scaling_factor, 1 / z.transpose(0, 1).flatten(1).std(1))
    x = video(t=5)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_latents(x), model.normalize_latents(
            model.encode(x).mode()))
        assert fresh.decode_latents(fresh.encode_latents(x)).abs().max() <= 1


# ---------------------------------------------------------------- pretrained Wan (diffusers)


def test_wan_adapter_round_trip_through_a_local_diffusers_folder(tmp_path):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    mean, std = [0.1, -0.2, 0.3, 0.0], [1.5, 2.0, 0.5, 1.0]
    wan = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=mean,
                           latents_std=std).eval()
    wan.save_pretrained(tmp_path)

    adapter = load_vae(tmp_path)
    assert isinstance(adapter, WanVAEAdapter)
    assert (adapter.latent_channels, adapter.temporal_factor, adapter.spatial_factor) == (4, 4, 8)
    x = video(t=5, hw=16)
    with torch.no_grad():
        posterior = adapter.encode(x)
        assert posterior.mean.shape == (1, 4, 2, 2, 2)
        torch.testing.assert_close(posterior.mean, wan.encode(x).latent_dist.mean)
        z = adapter.encode_latents(x)
        torch.testing.assert_close(
            z, (posterior.mean - torch.tensor(mean).view(1, 4, 1, 1, 1))
            / torch.tensor(std).view(1, 4, 1, 1, 1))
        assert adapter.decode_latents(z).shape == x.shape
        torch.testing.assert_close(adapter.decode(posterior.mean),
                                   wan.decode(posterior.mean).sample)
    with pytest.raises(InvalidInput, match="1 \\+ 4k"):
        adapter.encode(video(t=4, hw=16))

    # a bfloat16 decode (serving's decode_dtype) casts only what decode runs
    adapter.set_decode_dtype(torch.bfloat16)
    assert adapter.model.decoder.conv_in.weight.dtype == torch.bfloat16
    assert adapter.model.encoder.conv_in.weight.dtype == torch.float32
    with torch.no_grad():
        half = adapter.decode(posterior.mean)
        assert half.dtype == torch.float32
        assert (half - wan.decode(posterior.mean).sample).abs().mean() < 0.02
        torch.testing.assert_close(adapter.encode(x).mean, posterior.mean)


@pytest.mark.parametrize("config", [TINY, PROFILE, MICRO], ids=["x8", "tiny", "micro"])
def test_a_bfloat16_decode_stays_within_a_grey_level_of_float32(config):
    """Serving decodes in bfloat16 where the hardware has it (ServeSettings.decode_dtype):
    the frames must stay those of the float32 decode, to ~1/255 on average and well under
    a few grey levels at the 99th percentile. Trained-like latents: the
    encoding of a smooth video (random weights give the same order of error)."""
    model = vae(config)
    t = torch.linspace(-1, 1, 32)
    x = (torch.sin(3 * t)[None, :] * torch.cos(2 * t)[:, None]).expand(1, 3, 9, 32, 32)
    with torch.no_grad():
        z = model.encode_latents(x.contiguous())
        full = model.decode_latents(z)
        model.set_decode_dtype(torch.bfloat16)
        assert model.decode_dtype == torch.bfloat16
        assert model.encoder.layers[0].weight.dtype == torch.float32
        half = model.decode_latents(z)
    assert half.dtype == torch.float32 and half.shape == full.shape
    diff = (half - full).abs() * 127.5  # in 8-bit grey levels
    assert diff.mean() < 1.0 and torch.quantile(diff.flatten(), 0.99) < 6.0


def test_decode_dtype_choices():
    assert decode_dtype_for("float32", "cpu") == torch.float32
    assert decode_dtype_for("bfloat16", "cpu") == torch.bfloat16
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert decode_dtype_for("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(InvalidInput, match="auto, float32 or bfloat16"):
        decode_dtype_for("fp8", "cpu")


def test_load_vae_configs_and_bad_sources(tmp_path):
    assert load_vae(TINY).config == TINY
    assert load_vae(MICRO).config == MICRO
    with pytest.raises(InvalidInput, match="VAEConfig"):
        load_vae("huge")
    with pytest.raises(InvalidInput, match="config.json"):
        load_vae(tmp_path)  # an empty folder is not a diffusers VAE


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("x", "match"), [
    (video(t=8), "1 \\+ 4k frames"),
    (video(hw=30), "not divisible by the spatial compression 8"),
    (torch.rand(1, 4, 5, 32, 32), "4 channels, expected 3"),
    (torch.rand(1, 3, 32, 32), "unsqueeze\\(2\\)"),
    (torch.randint(0, 255, (1, 3, 5, 32, 32), dtype=torch.uint8), "127.5"),
    (video() * 127.5 + 127.5, "\\[-1, 1\\]"),
])
def test_bad_videos_are_refused_with_a_fix(tiny, x, match):
    with pytest.raises(InvalidInput, match=match):
        tiny.encode(x)


def test_bad_latents_and_configs_are_refused(tiny):
    with pytest.raises(InvalidInput, match="latents \\(B, 16"):
        tiny.decode(torch.randn(1, 8, 2, 4, 4))
    with pytest.raises(InvalidInput, match="one flag per downsampling step"):
        dataclasses.replace(MICRO, temporal_down=(True,))
    with pytest.raises(InvalidInput, match="norm_groups"):
        dataclasses.replace(MICRO, base_channels=6)
    with pytest.raises(InvalidInput, match="latents \\(B, 16"):
        tiny.fit_latent_stats(torch.randn(2, 3, 1, 4, 4))
    with pytest.raises(InvalidInput, match="shortcut needs latent_channels >= 12"):
        dataclasses.replace(MICRO, shortcut=True)


def test_the_residual_shortcut_starts_as_an_exact_thumbnail():
    model = vae(TINY).eval()
    # a still video whose pixels are constant on every 4x4 sub-block of each 8x8 latent cell
    # is exactly what the parameter-free path carries: at init it comes back unchanged
    coarse = torch.rand(1, 3, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x = F.interpolate(coarse, scale_factor=(1, 4, 4), mode="nearest").expand(-1, -1, 9, -1, -1)
    with torch.no_grad():
        recon, _ = model(x)
        plain_recon, _ = vae(dataclasses.replace(TINY, shortcut=False))(x)
    torch.testing.assert_close(recon, x)
    assert (plain_recon - x).abs().mean() > 0.3
