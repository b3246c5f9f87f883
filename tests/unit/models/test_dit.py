"""MotionDiT on the debug profile: shapes, every condition path (on, dropped, off by stage),
gradients into every encoder, stage switching, the state-dict layout and the Wan2.x weight
adapter. Models are perturbed (tests/tiny_models.py): a fresh one outputs zero whatever its
inputs, which would let a condition wired to nothing pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from flows.profiles import profile_config
from models.conditions import DROP_KEYS
from models.convert_wan import convert_wan, load_wan, wan_config
from models.dit import MotionDiT
from models.errors import InvalidInput
from models.sampling import FlowMatchSampler
from tests.tiny_models import perturb_zero_init, random_conditions

CFG = profile_config("debug").dit
B, T, S = 2, 5, 8  # latents (B, C, 5, 8, 8) <-> pixels 17 x 64 x 64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/models/conftest.py


@pytest.fixture(scope="module")
def model() -> MotionDiT:
    torch.manual_seed(0)
    return perturb_zero_init(MotionDiT(CFG, stage=3)).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, CFG.latent_channels, T, S, S, generator=g)
    return x, torch.tensor([0.3, 0.8]), random_conditions(CFG, B, T, S, library=2, seed=2)


def run(model, inputs, cond=None, drop=None):
    x, t, base = inputs
    with torch.no_grad():
        return model(x, t, base if cond is None else cond, drop)


def differs(a, b) -> bool:
    return not torch.allclose(a, b, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- config, shapes

def test_config_checks():
    with pytest.raises(InvalidInput):
        dataclasses.replace(CFG, heads=3)  # 32 / 3
    with pytest.raises(InvalidInput):
        dataclasses.replace(CFG, spatial_factor=6)


@pytest.mark.parametrize("spatial_factor,side", [(8, 8), (4, 16)])
def test_fresh_model_keeps_shape_and_starts_at_zero(spatial_factor, side):
    cfg = dataclasses.replace(CFG, spatial_factor=spatial_factor, latent_channels=8,
                              reference_skip=False)
    model = MotionDiT(cfg)
    x, t = torch.randn(B, 8, T, side, side), torch.linspace(0.1, 0.9, B)  # above min_time
    cond = random_conditions(cfg, B, T, side)
    with torch.no_grad():
        out = model(x, t, cond)
    assert out.shape == x.shape
    assert out.abs().max() == 0  # adaLN-Zero + zero-initialised output head
    # Preconditioned around the still reference, the fresh model is the exact velocity of
    # clips spread `still_sigma` around the still (spread 1 around 0 without a reference):
    # at t = 1 it points from the noise to the still, and its samples are the still plus
    # still_sigma of noise.
    skip = MotionDiT(dataclasses.replace(cfg, reference_skip=True)).eval()
    ones, no_ref = torch.ones(B), {"reference": torch.tensor([True] + [False] * (B - 1))}
    with torch.no_grad():
        at_noise = skip(x, ones, cond, no_ref)
        samples = FlowMatchSampler().sample(skip, cond, x.shape, steps=50,
                                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(at_noise[1:], x[1:] - cond.still_latents[1:])
    torch.testing.assert_close(at_noise[0], x[0])  # no reference: the prior mean is 0
    spread = (samples - cond.still_latents).square().mean().sqrt() / cfg.still_sigma
    assert 0.85 < spread < 1.15, spread


def test_output_depends_on_latents_and_time(model, inputs):
    x, t, cond = inputs
    base = run(model, inputs)
    assert base.shape == x.shape and torch.isfinite(base).all()
    assert differs(base, run(model, (x + 0.1, t, cond)))
    assert differs(base, run(model, (x, t * 0.5, cond)))
    # samples are independent: perturbing sample 1 leaves sample 0 alone
    x2 = x.clone()
    x2[1] += 1
    out = run(model, (x2, t, cond))
    assert torch.allclose(out[0], base[0], atol=1e-5) and differs(out[1], base[1])


# --------------------------------------------------------------------------- condition paths

def _bump(field):
    def change(cond):
        value = getattr(cond, field)
        new = value + 0.3 if value.dtype != torch.bool else ~value
        if field == "camera":
            new[..., 2] = value[..., 2] * 1.5  # zoom stays positive
        return dataclasses.replace(cond, **{field: new})
    return change


# (name, how the condition changes, the drop key that removes it)
PATHS = [
    ("body", _bump("body_maps"), "body"),
    ("hands", _bump("hand_maps"), "hands"),
    ("face", _bump("face_codes"), "face"),
    ("text", _bump("text_tokens"), "text"),
    ("action", _bump("action_embedding"), "text"),
    ("intensity", _bump("motion_intensity"), "intensity"),
    ("camera", _bump("camera"), "camera"),
    ("identity", _bump("identity_embedding"), "reference"),
    ("appearance", _bump("reference_pixels"), "reference"),
    ("library", _bump("subject_library"), "reference"),
    ("reference", _bump("reference_latents"), "reference"),
]


def test_every_droppable_condition_has_a_path_under_test():
    assert {key for _, _, key in PATHS} == set(DROP_KEYS)


@pytest.mark.parametrize("name,change,key", PATHS, ids=[p[0] for p in PATHS])
def test_condition_changes_output_unless_dropped(model, inputs, name, change, key):
    cond = inputs[2]
    changed = change(cond)
    assert differs(run(model, inputs), run(model, inputs, changed))
    drop = {key: torch.tensor([True, False])}  # drop it for sample 0 only
    before, after = run(model, inputs, cond, drop), run(model, inputs, changed, drop)
    assert torch.allclose(before[0], after[0], atol=1e-6)
    assert differs(before[1], after[1])


@pytest.mark.parametrize("stage,path,change", [(2, "hands", _bump("hand_maps")),
                                               (1, "face", _bump("face_codes")),
                                               (1, "hands", _bump("hand_maps"))])
def test_stage_switches_paths_off(model, inputs, stage, path, change):
    try:
        model.set_stage(stage)
        assert not model.enabled(path)
        assert torch.equal(run(model, inputs), run(model, inputs, change(inputs[2])))
        assert not any(p.requires_grad for p in getattr(model, f"{path}_encoder").parameters())
    finally:
        model.set_stage(3)
    assert all(p.requires_grad for p in model.hands_encoder.parameters())


def test_anchor_frames_condition_the_output(model, inputs):
    x, _, cond = inputs
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, 0] = mask[:, -1] = True  # first and last latent frame given
    anchored = cond.with_anchors(torch.randn_like(x), mask)
    base, out = run(model, inputs), run(model, inputs, anchored)
    assert differs(base, out)
    # frames that are not given are ignored
    other = anchored.with_anchors(anchored.anchor_latents.clone(), mask)
    other.anchor_latents[:, :, 2] += 1
    assert torch.allclose(run(model, inputs, other), out, atol=1e-6)
    with pytest.raises(InvalidInput):
        cond.with_anchors(x, mask[:, :2])


def test_identity_without_face_uses_null(model, inputs):
    cond = dataclasses.replace(inputs[2], identity_valid=torch.tensor([False, True]))
    before, after = run(model, inputs, cond), run(model, inputs, _bump("identity_embedding")(cond))
    assert torch.allclose(before[0], after[0], atol=1e-6) and differs(before[1], after[1])


def test_subject_library_mask_and_empty_library(model, inputs):
    cond = dataclasses.replace(inputs[2], subject_mask=torch.tensor([[True, False], [True, True]]))
    lib = cond.subject_library.clone()
    lib[0, 1] += 0.5  # the masked image of sample 0
    latents = cond.reference_latents.clone()
    latents[0, :, 2] += 0.5  # and its latent frame
    out = run(model, inputs, dataclasses.replace(cond, subject_library=lib,
                                                 reference_latents=latents))
    assert torch.allclose(out, run(model, inputs, cond), atol=1e-6)
    empty = random_conditions(CFG, B, T, S, library=0, seed=2)
    assert run(model, inputs, empty).shape == inputs[0].shape


NULLS = [("null_body", "body"), ("null_hands", "hands"), ("null_face", "face"),
         ("null_text", "text"), ("null_action", "text"), ("null_intensity", "intensity"),
         ("null_camera", "camera"), ("identity.null", "reference")]


def test_dropped_condition_is_replaced_by_its_null(model, inputs):
    params = dict(model.named_parameters())
    # random, not a constant shift: LayerNorm would remove one added to every channel
    g = torch.Generator().manual_seed(4)
    noise = {null: torch.randn(params[null].shape, generator=g) for null, _ in NULLS}
    for null, key in NULLS:
        drop = {key: torch.tensor([True, False])}
        before, saved = run(model, inputs, drop=drop), params[null].detach().clone()
        with torch.no_grad():
            params[null].add_(noise[null])
        try:
            after = run(model, inputs, drop=drop)
        finally:
            with torch.no_grad():
                params[null].copy_(saved)
        assert differs(before[0], after[0]), null
        assert torch.allclose(before[1], after[1], atol=1e-6), null


def test_drop_all_and_bad_drop_keys(model, inputs):
    everything = {k: torch.ones(B, dtype=torch.bool) for k in DROP_KEYS}
    uncond = run(model, inputs, drop=everything)
    # the unconditional branch ignores every condition
    assert torch.allclose(uncond, run(model, inputs, _bump("body_maps")(inputs[2]), everything),
                          atol=1e-6)
    assert torch.equal(run(model, inputs, drop={"text": True}),
                       run(model, inputs, drop={"text": torch.ones(B, dtype=torch.bool)}))
    with pytest.raises(InvalidInput, match="unknown drop keys"):
        run(model, inputs, drop={"pose": torch.ones(B, dtype=torch.bool)})
    with pytest.raises(InvalidInput):
        run(model, inputs, drop={"text": torch.ones(3, dtype=torch.bool)})


def test_bad_inputs_raise(model, inputs):
    x, t, cond = inputs
    with pytest.raises(InvalidInput):
        run(model, (x[:, :3], t, cond))
    with pytest.raises(InvalidInput):
        run(model, (x, t[:1], cond))
    with pytest.raises(InvalidInput, match="body_maps"):
        run(model, inputs, dataclasses.replace(cond, body_maps=cond.body_maps[:, :, :16]))
    with pytest.raises(InvalidInput, match="text_mask"):
        run(model, inputs, dataclasses.replace(cond, text_mask=torch.zeros_like(cond.text_mask)))
    with pytest.raises(InvalidInput):
        model.set_stage(4)


# --------------------------------------------------------------------------- gradients, stages

def test_gradient_reaches_every_encoder():
    torch.manual_seed(0)
    model = perturb_zero_init(MotionDiT(CFG, stage=3))
    x = torch.randn(3, CFG.latent_channels, T, S, S)
    cond = random_conditions(CFG, 3, T, S, library=2, seed=3)
    # Sample 0 with every condition, sample 1 without a face in the reference, sample 2 with
    # every condition dropped (the nulls).
    cond = dataclasses.replace(cond, identity_valid=torch.tensor([True, False, True]))
    mask = torch.zeros(3, T, dtype=torch.bool)
    mask[:, 0] = True
    cond = cond.with_anchors(torch.randn_like(x), mask)
    drop = {k: torch.tensor([False, False, True]) for k in DROP_KEYS}
    target = torch.randn_like(x)
    ((model(x, torch.tensor([0.4, 0.7, 0.2]), cond, drop) - target) ** 2).mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []
    for encoder in ("body_encoder", "face_encoder", "face_adapters", "hands_encoder",
                    "identity.face_id", "identity.appearance", "identity.library",
                    "action_embedder", "intensity_embedder", "camera_embedder",
                    "anchor_embedding", "reference_embedding", "blocks.0.attn2.add_k_proj",
                    "blocks.0.attn2.motion_k_proj", "blocks.0.attn2.to_k", "text_embedder"):
        assert any(n.startswith(encoder) for n, _ in model.named_parameters()), encoder


def test_stage_2_to_3_changes_nothing_at_init(inputs):
    torch.manual_seed(0)
    # A trained stage-2 model: everything but the (unused) hand path has moved.
    stage2 = perturb_zero_init(MotionDiT(CFG, stage=2), skip=("hands_encoder", "null_hands"))
    x, t, cond = inputs
    with torch.no_grad():
        before = stage2(x, t, cond)
        stage3 = MotionDiT(CFG, stage=3)
        stage3.load_state_dict(stage2.state_dict())  # the next stage starts from this one
        stage2.set_stage(3)
        assert torch.equal(stage2(x, t, cond), before)
        assert torch.equal(stage3(x, t, cond), before)
    perturb_zero_init(stage3, seed=5)
    with torch.no_grad():
        assert differs(stage3(x, t, _bump("hand_maps")(cond)), stage3(x, t, cond))


def test_gradient_checkpointing_gives_the_same_output_and_gradients(inputs):
    """diffusers' test_gradient_checkpointing_equivalence: recomputing the blocks in the
    backward pass must give every parameter the gradient it gets without checkpointing."""
    torch.manual_seed(0)
    model = perturb_zero_init(MotionDiT(CFG))
    x, t, cond = inputs
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))

    def output_and_gradients(checkpointing: bool):
        model.zero_grad(set_to_none=True)
        model.gradient_checkpointing = checkpointing
        out = model(x, t, cond)
        ((out - target) ** 2).mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                              if p.grad is not None}

    plain, plain_grads = output_and_gradients(False)
    checkpointed, checkpointed_grads = output_and_gradients(True)
    torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=0)
    assert checkpointed_grads.keys() == plain_grads.keys()
    assert any(n.startswith("blocks.") for n in plain_grads)  # the checkpointed part
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_runs_in_bfloat16(inputs):
    x, t, cond = inputs  # float32 inputs are cast to the model's dtype
    model = perturb_zero_init(MotionDiT(CFG)).to(torch.bfloat16)
    out = model(x, t, cond.with_anchors(x, x[:, 0, :, 0, 0] > 0))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.isfinite(out).all()


def test_state_dict_keys_are_unchanged():
    """Checkpoints and models/convert_wan.py address weights by these names (and shapes).
    After an intended change, regenerate the file as its header says."""
    listed = Path(__file__).with_name("dit_state_dict_keys.txt").read_text().splitlines()
    expected = [line for line in listed if not line.startswith("#")]
    with torch.device("meta"):
        model = MotionDiT(dataclasses.replace(profile_config("debug").dit, guidance_embed=True))
    got = [f"{k} {'x'.join(map(str, v.shape))}" for k, v in model.state_dict().items()]
    assert sorted(got) == sorted(expected)


# --------------------------------------------------------------------------- Wan2.x adapter

WAN_DEBUG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                 in_channels=4, out_channels=4, text_dim=384, freq_dim=32, ffn_dim=64,
                 num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                 rope_max_seq_len=64)


def _random_wan(**overrides):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    wan = WanTransformer3DModel(**{**WAN_DEBUG, **overrides}).eval()
    with torch.no_grad():
        for p in wan.parameters():  # random everywhere, zeros included
            p.add_(torch.randn_like(p) * 0.05)
    return wan


def test_wan_weights_map_onto_motiondit_and_reproduce_its_output(inputs):
    assert {k: v for k, v in wan_config(CFG).items()} == \
        {k: v for k, v in WAN_DEBUG.items() if k != "rope_max_seq_len"}
    wan = _random_wan()
    # as `base`: a model that starts from Wan keeps its velocity head (no reference skip)
    model = MotionDiT(dataclasses.replace(CFG, reference_skip=False), stage=1).eval()
    report = load_wan(model, wan.state_dict())
    wan_state, ours = wan.state_dict(), model.state_dict()
    assert report.unused == [] and report.shape_mismatch == []
    assert len(report.mapped) == len(wan_state)
    for wan_key, key in report.mapped:
        assert torch.equal(ours[key], wan_state[wan_key]), key
    mapped = {key for _, key in report.mapped}
    for key in ("patch_embedding.weight", "time_embedder.linear_1.weight", "time_proj.weight",
                "text_embedder.linear_2.bias", "blocks.1.attn1.to_out.weight",
                "blocks.0.attn2.norm_k.weight", "blocks.1.ffn.linear_1.weight",
                "blocks.0.scale_shift_table", "proj_out.weight", "scale_shift_table"):
        assert key in mapped, key
    assert "body_encoder.proj.weight" in report.missing
    assert "blocks.0.attn2.add_k_proj.weight" in report.missing

    # With every MotionDiT condition off, the converted model is the Wan model.
    x, t, cond = inputs
    drop = {k: torch.ones(B, dtype=torch.bool) for k in DROP_KEYS if k != "text"}
    with torch.no_grad():
        ours_out = model(x, t, cond, drop)
        wan_out = wan(x, t * 1000, cond.text_tokens, return_dict=False)[0]
    assert ours_out.abs().max() > 0.1
    torch.testing.assert_close(ours_out, wan_out, atol=1e-4, rtol=1e-4)


def test_wan_i2v_image_branch_lands_on_identity_and_base_dims_map():
    wan = _random_wan(num_layers=1, added_kv_proj_dim=CFG.dim, image_dim=32)
    model = MotionDiT(dataclasses.replace(CFG, depth=1, face_every=1))
    report = load_wan(model, wan.state_dict())
    assert ("blocks.0.attn2.add_v_proj.weight", "blocks.0.attn2.add_v_proj.weight") in \
        report.mapped
    assert torch.equal(model.blocks[0].attn2.add_k_proj.weight,
                       wan.blocks[0].attn2.add_k_proj.weight)
    assert all(k.startswith("condition_embedder.image_embedder") for k in report.unused)

    # Wan2.1-T2V-1.3B's layout onto `base` (shapes only, on the meta device): everything
    # maps, the text projection too (base reads umT5's 4096-d states, as Wan does).
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        wan_13b = WanTransformer3DModel(num_attention_heads=12, attention_head_dim=128,
                                        ffn_dim=8960, num_layers=30, text_dim=4096)
        base = MotionDiT(profile_config("base").dit)
    _, report = convert_wan(wan_13b.state_dict(), base.state_dict())
    assert report.shape_mismatch == [] and report.unused == []
    assert len(report.mapped) == len(wan_13b.state_dict())
    assert "unused" in report.summary()


def test_a_student_starts_as_its_teacher_and_learns_a_guidance_input(model, inputs):
    student = MotionDiT(dataclasses.replace(CFG, guidance_embed=True), stage=3)
    missing, unexpected = student.load_state_dict(model.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("guidance_embedder") for k in missing)
    student.eval()
    x, t, cond = inputs
    assert torch.equal(run(student, inputs), run(model, inputs))  # zero-initialised output
    perturb_zero_init(student, skip=tuple(n for n, _ in student.named_parameters()
                             if not n.startswith("guidance_embedder")))
    low, high = (run(student, inputs, cond.with_guidance(s, 1.0)) for s in (1.0, 4.0))
    assert differs(low, high)
    default = run(student, inputs, cond.with_guidance(*CFG.default_guidance))
    assert torch.equal(default, run(student, inputs))  # no scales given: the defaults
    student.train()
    student(x, t, cond.with_guidance(2.0, 1.5)).square().mean().backward()
    assert student.guidance_embedder.linear_1.weight.grad.abs().sum() > 0
