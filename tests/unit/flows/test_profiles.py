"""The run config of each profile (flows/profiles.py) and the user's overrides of it."""

import pytest
import torch

from flows.errors import MotionControlError
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


def test_an_override_file_changes_any_field_and_the_environment_wins(tmp_path, monkeypatch):
    path = tmp_path / "base-cpu.toml"
    path.write_text('resolution = 64\nclip = {size = 64, frames = 9, fps = 12.0}\n'
                    'vae = {latent_channels = 4}\n'
                    'dit = {dim = 32, depth = 2, heads = 2, face_every = 1}\n'
                    'train = {checkpoint_every = 3, stages = {1 = {steps = 5}}}\n')
    monkeypatch.setenv("MC_PROFILE", "base")
    monkeypatch.setenv("MC_RUN_CONFIG", str(path))
    monkeypatch.setenv("MC_TRAIN__CHECKPOINT_EVERY", "4")  # a setting beats the file
    run, base = run_config(load_settings()), profile_config("base")
    assert (run.resolution, run.clip.frames, run.dit.dim, run.dit.depth) == (64, 9, 32, 2)
    assert run.dit.latent_channels == 4  # follows the VAE's
    assert run.train.stages[1].steps == 5 and run.train.stages[1].lr == base.train.stages[1].lr
    assert run.train.stages[2] == base.train.stages[2] and run.train.checkpoint_every == 4
    assert run.backbone == "wan" and run.dit.ffn_dim == base.dit.ffn_dim

    path.write_text('dit = {dimm = 32}\n')
    with pytest.raises(MotionControlError, match=r"dit\.dimm is not a run-config field"):
        run_config(load_settings())
    path.write_text('dit = {depth = 2}\n')  # base's face adapters come every 5 blocks
    with pytest.raises(MotionControlError, match="face_every 5 > depth 2"):
        run_config(load_settings())
    path.write_text('dit = {depth = "deep"}\n')
    with pytest.raises(MotionControlError, match=r"MC_RUN_CONFIG: dit\.depth: .*integer"):
        run_config(load_settings())
    path.write_text('train = {loss_weighting = "x0"}\n')
    with pytest.raises(MotionControlError, match=r"MC_RUN_CONFIG: train\.loss_weighting: "):
        run_config(load_settings())
    path.write_text('dit = {depth = \n')
    with pytest.raises(MotionControlError, match="is not valid TOML"):
        run_config(load_settings())
