"""The run config of each profile (flows/profiles.py) and the user's overrides of it."""

import pytest
import torch

from flows.profiles import PROFILES, profile_config, run_config
from flows.settings import load_settings
from models.vae import VideoVAE, num_params
from tests.tiny_models import count_parameters


def test_every_profile_fits_together():
    for name in PROFILES:
        run = profile_config(name)
        # the DiT works on its VAE's latents, the clips make whole latent frames
        assert (run.dit.latent_channels, run.dit.temporal_factor, run.dit.spatial_factor) == \
            (run.vae.latent_channels, run.vae.temporal_factor, run.vae.spatial_factor), name
        assert (run.clip.frames - 1) % run.vae.temporal_factor == 0, name
        assert run.resolution % (run.vae.spatial_factor * run.dit.patch_size[1]) == 0, name
        assert run.resolution <= run.clip.size, name
        assert set(run.train.stages) == {0, 1, 2, 3}, name
        # a student's default guidance is what its teacher samples with
        assert run.dit.default_guidance == (run.sampling.text_scale,
                                            run.sampling.reference_scale), name


def test_profiles_grow_in_size():
    dits = {name: count_parameters(profile_config(name).dit) for name in PROFILES}
    with torch.device("meta"):  # counts without allocating base's weights
        vaes = {name: num_params(VideoVAE(profile_config(name).vae)) for name in PROFILES}
    assert dits["debug"] < 2e5  # mostly the 384-d text projections
    assert 1e6 < dits["tiny"] < 5e6 < dits["small"] < dits["base"]
    assert vaes["debug"] < vaes["tiny"] < 5e6 < vaes["small"] < vaes["base"] < 2e8
    base = profile_config("base").dit
    assert (base.dim, base.depth, base.heads) == (1536, 30, 12)  # Wan2.1-T2V-1.3B


def test_user_overrides_reach_the_run_config(monkeypatch):
    monkeypatch.setenv("MC_TRAIN__CHECKPOINT_EVERY", "7")
    monkeypatch.setenv("MC_TRAIN__SAMPLE_STEPS", "3")
    monkeypatch.setenv("MC_CURATE__CLIP_FRAMES", "9")
    run = run_config(load_settings())
    tiny = profile_config("tiny")
    assert run.train.checkpoint_every == 7 and run.sampling.teacher_steps == 3
    assert run.clip.frames == 9 and run.clip.size == tiny.clip.size
    assert run.train.stages == tiny.train.stages and run.dit == tiny.dit


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="debug"):
        profile_config("huge")
