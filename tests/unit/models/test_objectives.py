"""The training objectives (models/objectives.py) on the debug models and a real synthetic
batch: what each loss is made of, when the ID term comes in, and that validation is fixed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from flows.profiles import profile_config
from models.distill import GuidanceDistillation, StepDistillation
from models.dit import MotionDiT
from models.objectives import DistillationObjective, FlowMatchingObjective, VAEObjective
from models.sampling import GuidanceConfig
from models.synthetic import make_motion, render_cross_identity, sample_character
from models.text import TextEncoder
from models.vae import VideoVAE
from tests.tiny_models import collate, perturb_zero_init

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/models/conftest.py
RUN = profile_config("debug")
SIZE, FRAMES = RUN.resolution, RUN.clip.frames


@pytest.fixture(scope="module")
def batch() -> dict:
    motion = make_motion("wave", frames=FRAMES, fps=12)
    clips = render_cross_identity(motion, [sample_character(1), sample_character(2)],
                                  size=SIZE, camera="pan_left")
    return collate(clips)


@pytest.fixture(scope="module")
def objective() -> FlowMatchingObjective:
    torch.manual_seed(0)
    return FlowMatchingObjective(VideoVAE(RUN.vae), TextEncoder(), SIZE, steps=2,
                                 guidance=GuidanceConfig(3.0, 1.5), region_alpha=1.0,
                                 id_every=3, id_weight=0.5)


class Oracle(torch.nn.Module):
    """Predicts the exact flow-matching velocity noise - x0 of a known x0: v = (x_t - x0)/t."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0

    def forward(self, x, t, cond, drop=None):
        return (x - self.x0) / t.view(-1, 1, 1, 1, 1)


class Zero(torch.nn.Module):
    def forward(self, x, t, cond, drop=None):
        return torch.zeros_like(x)


def test_flow_matching_is_zero_for_the_true_velocity_and_positive_otherwise(objective, batch):
    x0 = objective.prepare(batch).x0
    exact = objective.loss(Oracle(x0), batch, step=0, generator=torch.Generator().manual_seed(1))
    assert float(exact["flow_matching"]) < 1e-8
    wrong = objective.loss(Zero(), batch, step=0, generator=torch.Generator().manual_seed(1))
    # v = 0 misses the whole velocity: the loss is ~ E|noise - x0|² (region-weighted), >> 0
    assert float(wrong["flow_matching"]) > 0.5
    assert set(wrong) == {"flow_matching", "total"}
    assert torch.equal(wrong["total"], wrong["flow_matching"])


def test_id_consistency_joins_the_loss_every_id_every_steps(objective, batch):
    torch.manual_seed(0)
    dit = perturb_zero_init(MotionDiT(RUN.dit, stage=3))
    added = []
    for step in range(6):
        out = objective.loss(dit, batch, step=step, generator=torch.Generator().manual_seed(2))
        added.append("id_consistency" in out)
        if added[-1]:
            expected = out["flow_matching"] + 0.5 * out["id_consistency"]
            assert torch.allclose(out["total"], expected)
            dit.zero_grad(set_to_none=True)
            out["id_consistency"].backward()  # the ID term alone reaches the DiT's blocks
            assert any(p.grad is not None and p.grad.abs().sum() > 0
                       for p in dit.blocks.parameters())
    assert added == [False, False, True, False, False, True]  # steps 3 and 6 (1-based)


def test_validation_is_fixed_and_sampling_gives_frames(objective, batch):
    torch.manual_seed(0)
    dit = perturb_zero_init(MotionDiT(RUN.dit, stage=3))
    first, again = objective.validate(dit, [batch]), objective.validate(dit, [batch])
    assert first == again and np.isfinite(first)
    assert dit.training  # validation gives the model back in train mode
    frames = objective.sample(dit, batch)
    assert frames.shape == (2, FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8


def test_vae_objective_reconstructs_and_fits_latent_stats(batch):
    torch.manual_seed(0)
    vae, objective = VideoVAE(RUN.vae), VAEObjective(SIZE, kl_weight=1e-4)
    out = objective.loss(vae.eval(), batch)  # eval: the posterior's mode, as validation
    assert torch.allclose(out["total"], out["recon_l1"] + 1e-4 * out["kl"])
    assert objective.validate(vae, [batch]) == pytest.approx(out["recon_l1"].item(), rel=1e-5)
    assert objective.sample(vae, batch).shape == (2, FRAMES, SIZE, SIZE, 3)
    objective.finalize(vae, [batch])
    latents = vae.encode_latents(torch.zeros(1, 3, FRAMES, SIZE, SIZE))
    assert torch.isfinite(latents).all() and not torch.allclose(vae.scaling_factor,
                                                                torch.ones_like(vae.scaling_factor))


class Counting(torch.nn.Module):
    """A DiT that counts its evaluations."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


@pytest.mark.parametrize("stage", ["guidance", "steps"])
def test_distillation_objective_trains_and_samples_the_student(objective, batch, stage):
    torch.manual_seed(0)
    teacher = perturb_zero_init(MotionDiT(RUN.dit, stage=3)).eval()
    student = MotionDiT(dataclasses.replace(RUN.dit, guidance_embed=True), stage=3)
    student.load_state_dict(teacher.state_dict(), strict=False)
    loss = GuidanceDistillation(teacher, text_range=(1.0, 4.0), reference_range=(1.0, 2.0)) \
        if stage == "guidance" else StepDistillation(teacher, student_steps=2, teacher_steps=4)
    distill = DistillationObjective(objective.vae, objective.text, SIZE, distill=loss, steps=2)
    out = distill.loss(student, batch, step=0, generator=torch.Generator().manual_seed(3))
    assert set(out) == {stage, "total"} and out["total"].item() > 0
    out["total"].backward()  # the student learns; the teacher it imitates stays frozen
    assert student.guidance_embedder.linear_2.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    counted = Counting(student)
    frames = distill.sample(counted, batch)
    assert frames.shape == (2, FRAMES, SIZE, SIZE, 3)
    assert counted.calls == 2  # its own 2 steps, one branch each: no CFG at sampling


# --------------------------------------------------------------------------- data preparation

def _examples(batch: dict) -> list[dict]:
    """The collated batch back as the dataset's single examples."""
    n = len(batch["caption"])
    return [{"key": f"clip{i}", "driver_key": f"clip{(i + 1) % n}",
             **{k: (v[i] if not isinstance(v, dict) else {kk: vv[i] for kk, vv in v.items()})
                for k, v in batch.items()}} for i in range(n)]


def test_worker_prepared_batches_give_the_same_loss_as_raw_ones(objective, batch):
    """PrepareConditions (DataLoader workers) + default collate and the in-process path
    build the same latents, conditions and region weights: one code path, two places."""
    from torch.utils.data import default_collate

    from models.conditions import PREPARED, PrepareConditions

    raw = {k: v for k, v in batch.items() if k != "drop"}  # no keys: nothing to cache by
    prepare = PrepareConditions(SIZE, motion=True)
    examples = [prepare({k: (v.numpy() if isinstance(v, torch.Tensor) else v)
                         for k, v in e.items()}) for e in _examples(raw)]
    prepared = default_collate(examples)
    assert prepared[PREPARED]["body_maps"].dtype == torch.uint8  # 4x less to move than float
    # the next epoch's same example is not prepared again; another driver is
    again = {k: (v.numpy() if isinstance(v, torch.Tensor) else v)
             for k, v in _examples(raw)[0].items()}
    assert prepare(again)[PREPARED] is examples[0][PREPARED]
    assert prepare({**again, "driver_key": "other"})[PREPARED] is not examples[0][PREPARED]
    a, b = objective.prepare(raw, prior="still"), objective.prepare(prepared, prior="still")
    assert a.cond.still_latents.shape == a.x0.shape
    assert objective.prepare(raw).cond.still_latents is None  # a velocity head reads none
    torch.testing.assert_close(a.x0, b.x0)
    torch.testing.assert_close(a.motion, b.motion)
    for field in dataclasses.fields(a.cond):
        x, y = getattr(a.cond, field.name), getattr(b.cond, field.name)
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, msg=field.name)
    noise = torch.randn(a.x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((a.x0.shape[0],), 0.5)
    model = perturb_zero_init(MotionDiT(RUN.dit).eval())
    with torch.no_grad():
        la = objective.loss_at(model, raw, t=t, noise=noise, generator=None, step=None)
        lb = objective.loss_at(model, prepared, t=t, noise=noise, generator=None, step=None)
    torch.testing.assert_close(la["total"], lb["total"])


def test_frozen_latents_encode_each_clip_once(objective, batch):
    from models.frames import to_pixels
    from models.objectives import FrozenLatents

    calls = []
    vae = objective.vae

    class Counting(torch.nn.Module):
        def encode_latents(self, x):
            calls.append(len(x))
            return vae.encode_latents(x)

    cache = FrozenLatents(Counting())
    x = to_pixels(batch["frames"], SIZE)
    first = cache(x)
    again = cache(torch.cat([x, x[:1]]))  # every clip seen already
    torch.testing.assert_close(first, vae.encode_latents(x))
    torch.testing.assert_close(again[:2], first)
    assert calls == [2]
    small = FrozenLatents(Counting(), max_bytes=first[0].numel() * 4)  # room for one clip
    small(x)
    small(x[:1])
    assert calls == [2, 2, 1] and len(small._cache) == 1
