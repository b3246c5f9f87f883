"""The base profile's pretrained parts (flows/backbone.py) on a tiny random Wan checkpoint in
diffusers layout (tests/tiny_models.py write_tiny_wan): where the weights come from, the
one-line stops on missing or mismatched weights, and what each part loads as."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from flows.backbone import check_wan, init_from_wan, load_wan_vae, wan_folder, wan_vae_meta
from flows.errors import MotionControlError
from flows.profiles import apply_overrides, profile_config
from flows.registry import build_model
from flows.settings import load_settings
from flows.store import open_store
from models.dit import MotionDiT
from models.errors import InvalidInput
from models.text import TextEncoder
from tests.tiny_models import BASE_CPU, write_tiny_wan

RUN = apply_overrides(profile_config("base"), BASE_CPU)


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    return write_tiny_wan(tmp_path_factory.mktemp("wan") / "Wan-tiny-Diffusers", RUN)


def test_the_weights_come_from_a_folder_or_the_object_store(wan, monkeypatch):
    with pytest.raises(MotionControlError, match="set MC_TRAIN__WAN_WEIGHTS"):
        wan_folder(load_settings())
    monkeypatch.setenv("MC_TRAIN__WAN_WEIGHTS", str(wan))
    assert wan_folder(load_settings()) == wan

    settings = load_settings()
    store = open_store(settings)
    for path in wan.rglob("*"):
        if path.is_file():
            store.put_file(f"pretrained/wan-tiny/{path.relative_to(wan)}", path)
    got = wan_folder(settings, "store:pretrained/wan-tiny")
    assert got == settings.home / "cache" / "wan" / "pretrained" / "wan-tiny"
    assert sorted(p.relative_to(got) for p in got.rglob("*")) == \
        sorted(p.relative_to(wan) for p in wan.rglob("*"))
    with pytest.raises(MotionControlError, match="nothing under"):
        wan_folder(settings, "store:pretrained/elsewhere")


def test_missing_parts_are_named(wan, tmp_path):
    broken = shutil.copytree(wan, tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    for shard in (broken / "transformer").glob("*.safetensors"):
        shard.unlink()
    with pytest.raises(MotionControlError,
                       match=r"not a Wan2\.x diffusers folder: no vae, transformer/\*\.safetensors"):
        wan_folder(load_settings(), str(broken))


def test_weights_of_other_sizes_stop_in_one_line(wan):
    check_wan(wan, RUN)  # the sizes it was made with
    deeper = dataclasses.replace(RUN, dit=dataclasses.replace(RUN.dit, depth=3))
    with pytest.raises(MotionControlError) as info:
        check_wan(wan, deeper)
    message = str(info.value)
    assert "\n" not in message
    assert "transformer num_layers 2 (the run config needs 3)" in message
    assert "MC_RUN_CONFIG" in message
    real = profile_config("base")  # the profile itself wants Wan2.1-1.3B's sizes
    with pytest.raises(MotionControlError, match=r"num_attention_heads 2 .*needs 12.*"
                                                 r"vae z_dim 4 .*needs 16.*d_model 32 .*4096"):
        check_wan(wan, real)


def test_stage1_starts_as_the_pretrained_dit(wan):
    from safetensors.torch import load_file

    model = MotionDiT(RUN.dit, stage=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_wan(model, wan)
    wan_state = load_file(next((wan / "transformer").glob("*.safetensors")))
    assert len(report.mapped) == len(wan_state) and not report.unused
    state = model.state_dict()
    for wan_key, key in report.mapped:
        assert torch.equal(state[key], wan_state[wan_key]), key
    for key in report.missing:  # the condition branches keep their (zero) initialisation
        assert torch.equal(state[key], fresh[key]), key


def test_the_pretrained_vae_round_trips_through_its_meta(wan):
    vae = load_wan_vae(wan)
    assert (vae.latent_channels, vae.spatial_factor, vae.temporal_factor) == (4, 8, 4)
    meta = wan_vae_meta(wan, RUN)
    assert meta["kind"] == "vae" and meta["arch"] == "wan" and meta["config"]["z_dim"] == 4
    rebuilt = build_model(meta)  # what a registered stage-0 version loads into
    rebuilt.load_state_dict(vae.state_dict())
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        recon, posterior = rebuilt.eval()(x)
        assert torch.equal(recon, vae(x)[0])
    assert recon.shape == x.shape and posterior.mode().shape == (1, 4, 2, 4, 4)


def test_the_text_encoder_is_the_backbones_umt5(wan, tmp_path):
    text = TextEncoder(wan)  # the diffusers folder: text_encoder/ + tokenizer/
    assert type(text.model).__name__ == "UMT5EncoderModel" and text.dim == RUN.dit.text_dim
    tokens, mask = text.tokens(["a person waving", "ein Mensch winkt, 人が手を振る"])
    assert tokens.shape[-1] == 32 and mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1]
    text.save(tmp_path / "text_encoder")  # what a registered DiT version carries
    again, _ = TextEncoder(tmp_path / "text_encoder").tokens(["a person waving"])
    assert torch.allclose(again[0], tokens[0, : again.shape[1]], atol=1e-5)  # batch padding
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="not a text encoder folder"):
        TextEncoder(tmp_path / "empty")


def test_doctor_checks_the_backbone_of_base_only(wan, tmp_path, monkeypatch):
    from flows.doctor import check_backbone
    from flows.settings import get_settings

    assert check_backbone.fn() == []  # tiny starts from scratch
    overrides = tmp_path / "base-cpu.json"
    overrides.write_text(json.dumps(BASE_CPU))
    monkeypatch.setenv("MC_PROFILE", "base")
    monkeypatch.setenv("MC_RUN_CONFIG", str(overrides))
    get_settings.cache_clear()
    (missing,) = check_backbone.fn()
    assert not missing.ok and "MC_TRAIN__WAN_WEIGHTS" in missing.detail
    monkeypatch.setenv("MC_TRAIN__WAN_WEIGHTS", str(wan))
    get_settings.cache_clear()
    (found,) = check_backbone.fn()
    assert found.ok and found.detail == str(wan)
