"""The sanity ladder: what a MotionDiT on the debug profile must learn in seconds, each rung
checked not to hold before training (or for a broken variant), so a model that learned
nothing, or a conditioning path wired to nothing, fails.

    (a) it overfits one moving clip: sampled and decoded, SSIM >= 0.9 to the target
    (b) a still pose gives the reference as the first frame, and another reference (all
        else equal) gives that one: the reference path, not a memorised image
    (c) moving one limb in the pose maps moves the output there, and little elsewhere

Rungs (a) and (c) run with `reference_skip` off (every profile) and on; (b) with it off
(what the skip does there is a finding, at the test). The VAE is the debug profile's, untrained,
with its latent statistics fitted as stage 0's finalize does: its decoder is a fixed random
function of the latents, so the targets are the true clips through that same VAE (the DiT's
job is the latents). It is very sensitive (a latent error of 0.1 std costs ~0.1 SSIM) and not
local (one latent cell changes pixels all over the frame), so rung (c) measures in latents.
Clips have 5 frames (2 latent frames) instead of the profile's 9, halving every step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flows.profiles import profile_config
from flows.train_worker import warmup_cosine
from models import keypoints as K
from models.dit import MotionDiT
from models.frames import to_uint8
from models.keypoints import BODY_INDEX
from models.losses import flow_matching_loss, sample_timesteps
from models.metrics import ssim
from models.objectives import FlowMatchingObjective, LatentBatch, VAEObjective
from models.sampling import FlowMatchSampler, GuidanceConfig
from models.synthetic import CameraPath, make_motion, render_clip, sample_character, still
from models.text import TextEncoder
from models.vae import VideoVAE
from tests.tiny_models import collate

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/models/conftest.py
RUN = profile_config("debug")
SIZE, FPS, FRAMES = RUN.resolution, RUN.clip.fps, 5
SEED, NOISE = 0, 5  # the model's init and training; the sampler's noise
# The debug profile's stages run 4 steps at 1e-3 ("not meant to learn"); these run a few
# hundred at 1e-2, with its weight decay, clipping and cosine floor. Samples take 10 Euler
# steps (the profile's 2 are for speed, not quality).
LR, BATCH, SAMPLE_STEPS = 1e-2, 4, 10
MOVING_INTENSITY = 0.01  # the still clips get 0, as the dataset's still examples


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    return TextEncoder()


# --------------------------------------------------------------------------- shared helpers

def latents(clips, text, vae=None, caption: str | None = None) -> tuple[LatentBatch, VideoVAE]:
    """The clean latents and conditions of `clips` through the objective's own preparation
    (pose maps, face codes, identity, text, reference and still latents). Without `vae` a
    debug VAE whose latent statistics are fitted on these clips. caption: one caption for
    every clip, its action phrase appended (default: each clip's own, which names the
    character's clothes)."""
    batch = {k: v for k, v in collate(clips, cross=False).items() if k != "drop"}
    batch["motion_intensity"] = torch.tensor(
        [0.0 if c.action == "static" else MOVING_INTENSITY for c in clips])
    if caption is not None:
        batch["caption"] = [f"{caption}, {c.action_phrase}" for c in clips]
    if vae is None:
        torch.manual_seed(SEED)
        vae = VideoVAE(RUN.vae)
        VAEObjective(SIZE, RUN.train.kl_weight).finalize(vae, [batch])
    objective = FlowMatchingObjective(vae, text, SIZE, steps=SAMPLE_STEPS,
                                      guidance=GuidanceConfig(), region_alpha=0.0,
                                      id_weight=0.0, id_every=0)
    return objective.prepare(batch, prior="still"), vae  # the skip models read it


def trained(data: LatentBatch, *, skip: bool, steps: int) -> MotionDiT:
    """A fresh stage-3 MotionDiT trained `steps` steps on minibatches of BATCH clips drawn
    from `data`, as the train worker does: flow matching, AdamW, warmup + cosine, clipping."""
    torch.manual_seed(SEED)
    model = MotionDiT(dataclasses.replace(RUN.dit, reference_skip=skip))
    if steps == 0:
        return model.eval()
    cfg = RUN.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # warmup 5%: the profile's 1 step is for 4
        optimizer, warmup_cosine(steps // 20, steps, cfg.min_lr_ratio))
    g = torch.Generator().manual_seed(SEED)
    for _ in range(steps):
        i = torch.randint(len(data.x0), (BATCH,), generator=g)
        x0, cond = data.x0[i], data.cond.map(lambda v, i=i: v[i])
        t = sample_timesteps(BATCH, g, RUN.sampling.timestep_shift).view(-1, 1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=g)
        loss = flow_matching_loss(model((1 - t) * x0 + t * noise, t.flatten(), cond), x0, noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
    return model.eval()


def sample(model, data: LatentBatch, index: int = 0, drop: dict | None = None) -> torch.Tensor:
    """Latents (1, C, T', h, w) of clip `index`, Euler-sampled from the fixed noise."""
    cond = data.cond.map(lambda v: v[index:index + 1])

    def velocity(x, t, c, d):
        return model(x, t, c, drop if d is None else d)

    return FlowMatchSampler(shift=RUN.sampling.timestep_shift).sample(
        velocity, cond, (1, *data.x0.shape[1:]), steps=SAMPLE_STEPS,
        generator=torch.Generator().manual_seed(NOISE))


def frames(vae: VideoVAE, z: torch.Tensor) -> np.ndarray:
    """Latents (B, C, T', h, w) -> uint8 frames (B, T, H, W, 3) through the VAE."""
    with torch.no_grad():
        return to_uint8(vae.decode_latents(z))


def clip(character, action: str, length: int = FRAMES):
    motion = still(length, FPS) if action == "static" else \
        make_motion(action, frames=length, fps=FPS)
    return render_clip(character, motion, size=SIZE)


# --------------------------------------------------------------------------- (a) one clip

@pytest.mark.parametrize("skip,steps", [(False, 300), (True, 500)])
def test_the_dit_overfits_one_moving_clip(text, skip, steps):
    data, vae = latents([clip(sample_character(1), "walk")], text)
    target = frames(vae, data.x0)[0]
    static = frames(vae, data.cond.still_latents)[0]  # the reference held still
    assert ssim(static, target) < 0.6  # measured 0.31: the clip really moves
    before = ssim(frames(vae, sample(trained(data, skip=skip, steps=0), data))[0], target)
    assert before < 0.6  # measured 0.20 off (noise); on: the still under the prior's noise
    after = ssim(frames(vae, sample(trained(data, skip=skip, steps=steps), data))[0], target)
    # off, over 5 seeds (VAE, model, training, noise): 0.948-0.983 after 300 steps; on, the
    # preconditioned skip must also learn to remove its prior's noise: 0.845 after 300 steps
    assert after >= 0.9, f"SSIM {after:.3f} after {steps} steps"


# --------------------------------------------------------------------------- (b) reference

# Not with reference_skip: preconditioned around the still (spread 0.5), the model's first
# frame of a still clip stays the reference under the prior's noise (SSIM 0.46 to it before
# and after 600 steps); a finding of the ladder, the reason no profile turns the skip on.
@pytest.mark.parametrize("skip,steps", [(False, 600)])
def test_a_still_pose_gives_the_reference_as_first_frame(text, skip, steps):
    """Two characters on one skeleton, captioned alike: their still clips differ in the
    reference alone, so only the reference can say which first frame to draw. (With their
    own captions, which name hair and clothes, the model without the skip takes the
    character from the caption as much as from the reference: after 600 steps a swapped
    reference moves the first frame only partway, SSIM 0.45-0.87 to the new reference.)
    The rung checks that training drew the reference, kept it while it taught the walk, and
    that the reference, not a copy, is used."""
    a = sample_character(2)
    b = dataclasses.replace(sample_character(3), body=a.body, preset=a.preset)
    clips = [clip(a, "static"), clip(b, "static"), clip(a, "walk"), clip(b, "walk")]
    data, vae = latents(clips, text, caption="a character")
    # A's still clip with B's reference: the control
    swapped, _ = latents([dataclasses.replace(clips[0], reference_image=clips[1].reference_image)],
                         text, vae, caption="a character")
    ref_a, ref_b = frames(vae, data.cond.reference_latents[:2])  # (1, H, W, 3) each

    def first(model, data, drop=None):
        return frames(vae, sample(model, data, 0, drop))[0, :1]

    before = ssim(first(trained(data, skip=skip, steps=0), data), ref_a)
    assert before < 0.5  # measured 0.27: noise
    model = trained(data, skip=skip, steps=steps)
    matched = ssim(first(model, data), ref_a)
    assert matched >= 0.7  # measured 0.84-0.98; SSIM(ref A, ref B) is 0.27
    control = first(model, swapped)
    assert ssim(control, ref_b) >= 0.7
    assert ssim(control, ref_a) < 0.5
    # broken variant: with the reference dropped the first frame is no longer A's
    assert ssim(first(model, data, {"reference": True}), ref_a) < matched - 0.2
    assert matched > before + 0.2
    # and the model did learn motion: A's walk is nearer its target than the reference is
    walk, static = frames(vae, data.x0[2:3])[0], frames(vae, data.cond.still_latents[2:3])[0]
    assert ssim(frames(vae, sample(model, data, 2))[0], walk) > ssim(static, walk) + 0.15


# --------------------------------------------------------------------------- (c) one limb

# The right wrist and the right hand's 21 points (models/keypoints.py), shifted together: the
# forearm turns about the elbow and the hand follows it.
RIGHT_HAND = [BODY_INDEX["right_wrist"], *range(K.RIGHT_HAND.start, K.RIGHT_HAND.stop)]
SHIFT = 0.12  # of the frame's width: ~8 px at 64 px


def token_region(before, after) -> torch.Tensor:
    """Where two sets of pose maps (1, channels, T, H, W) differ, as the latent cells
    (T', h, w) of the DiT tokens that cover it: the finest grid on which the DiT can answer
    a pose change (a token is 16 px here). Differences of a few levels are left out: moving
    one point changes the body's spread, which shades every bone by a level or two
    (models/motion/render.py)."""
    changed = ((after - before).abs().amax(1) > 8 / 255).float()  # (1, T, H, W)
    tf, patch = RUN.vae.temporal_factor, RUN.dit.patch_size[1]
    token = RUN.vae.spatial_factor * patch
    changed = torch.cat([changed[:, :1], F.max_pool3d(changed[:, 1:], (tf, 1, 1))], 1)
    tokens = F.max_pool3d(changed, (1, token, token))
    return F.interpolate(tokens[None], scale_factor=(1, patch, patch))[0, 0] > 0


@pytest.mark.parametrize("skip,steps", [(False, 200), (True, 200)])
def test_moving_one_limb_moves_the_output_there(text, skip, steps):
    """One character raising its arms, in clips of FRAMES frames: with the reference and the
    caption fixed, the pose alone says what each frame shows."""
    long = clip(sample_character(1), "arms_up", 8 * FRAMES)
    clips = [dataclasses.replace(long, frames=long.frames[s:s + FRAMES],
                                 keypoints=long.keypoints[s:s + FRAMES],
                                 camera=CameraPath.static(FRAMES))
             for s in range(0, 8 * FRAMES, FRAMES)]
    data, vae = latents(clips, text)
    base = clips[2]
    keypoints = base.keypoints.copy()
    keypoints[:, RIGHT_HAND, K.X] += SHIFT
    pair, _ = latents([base, dataclasses.replace(base, keypoints=keypoints)], text, vae)
    region = token_region(*(torch.cat([m[i:i + 1] for m in (pair.cond.body_maps,
                                                             pair.cond.hand_maps)], 1)
                            for i in (0, 1)))
    assert 0 < region.float().mean() < 0.25  # measured 0.125: an eighth of the frame

    def response(model) -> tuple[float, float]:
        """Mean |latent difference| of the two samples inside and outside the region."""
        diff = (sample(model, pair, 0) - sample(model, pair, 1)).abs()[0].mean(0)
        return float(diff[region].mean()), float(diff[~region].mean())

    inside, _ = response(trained(pair, skip=skip, steps=0))
    assert inside < 0.1  # exactly 0: a fresh model's pose path is zero-initialised
    inside, outside = response(trained(data, skip=skip, steps=steps))
    # over 5 seeds: inside 0.21-0.83 (latents of unit variance), inside / outside 2.5-5.2
    # without the skip and 2.2-6.3 with it; a pose path that acted globally would give ~1
    assert inside >= 0.1, f"the pose change moved the output by {inside:.3f} only"
    assert inside >= 1.5 * outside, f"inside {inside:.3f}, outside {outside:.3f}"
