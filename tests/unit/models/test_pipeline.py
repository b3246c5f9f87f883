"""MotionControlPipeline end to end on the debug models, randomly initialised and perturbed
(tests/tiny_models.py) so that every condition changes the output; the trained ones come from
the train flow, here the wiring is under test. Real photo as the reference, real footage as
the driver; the golden-slice test starts after motion extraction, from a synthetic clip's
ground-truth keypoints."""

import numpy as np
import pytest
import torch

from flows.profiles import profile_config
from models.assets import sample_data
from models.dit import MotionDiT
from models.extraction import ReferenceIdentity
from models.motion import NoPersonFound
from models.pipeline import MotionControlPipeline
from models.sampling import GuidanceConfig
from models.synthetic import make_motion, render_clip, sample_character
from models.text import TextEncoder
from models.vae import VideoVAE
from models.video import read_image, read_video
from tests.tiny_models import perturb_zero_init

DEBUG = profile_config("debug")

SIZE, FRAMES = 64, 17

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/models/conftest.py


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    # scale 0.1: each condition moves the golden slice below 100x past its tolerance
    dit = perturb_zero_init(MotionDiT(DEBUG.dit, stage=3), seed=1, scale=0.1)
    return MotionControlPipeline(dit, VideoVAE(DEBUG.vae), TextEncoder(), size=SIZE,
                                 frames=FRAMES, steps=2,
                                 guidance=GuidanceConfig(3.0, 1.5, prune=False))


@pytest.fixture(scope="module")
def inputs():
    reference = read_image(sample_data("opencv-doc/basketball1.png"))
    driving = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=FRAMES).frames
    return reference, driving


def test_generates_a_clip_with_the_claimed_nfe_and_timings(pipeline, inputs):
    reference, driving = inputs
    out = pipeline(reference, driving, "a person walking", seed=3)
    assert out.frames.shape == (FRAMES, SIZE, SIZE, 3) and out.frames.dtype == np.uint8
    assert out.nfe == 2 * 3  # steps × three guidance branches
    assert out.driving_keypoints.shape == (FRAMES, 133, 4)
    assert {"motion_extraction", "identity_and_conditions", "sampling", "decode"} <= \
        out.timings.keys()
    again = pipeline(reference, driving, "a person walking", seed=3,
                     driving_keypoints=None)
    assert np.array_equal(out.frames, again.frames)  # same seed, same clip


def test_bad_inputs_say_what_to_do(pipeline, inputs):
    reference, driving = inputs
    with pytest.raises(NoPersonFound, match="reference image"):
        pipeline(np.full((128, 128, 3), 200, np.uint8), driving)
    with pytest.raises(ValueError, match="at least 17"):
        pipeline(reference, driving[:5])
    with pytest.raises(ValueError, match="uint8"):
        pipeline(reference.astype(np.float32), driving)


# --------------------------------------------------------------------------- generation

@pytest.fixture(scope="module")
def conditions(pipeline):
    """The pipeline's conditions of fixed inputs: a synthetic clip's ground-truth keypoints
    (MediaPipe's and dlib's floats can differ in their last bits between CPUs, and a pose
    map rasterised from them by a pixel) and a fixed identity embedding."""
    clip = render_clip(sample_character(1), make_motion("wave", frames=FRAMES, fps=24),
                       size=SIZE)
    embedding = np.random.default_rng(0).normal(size=128).astype(np.float32)
    identity = ReferenceIdentity(clip.reference_image, np.zeros((0, SIZE, SIZE, 3), np.uint8),
                                 embedding / np.linalg.norm(embedding))
    pose = clip.keypoints[None]
    return pipeline.conditions(identity, pose, pose, clip.caption, clip.action_phrase, 0.01)


def generate(pipeline: MotionControlPipeline, cond) -> tuple[torch.Tensor, np.ndarray]:
    """The pipeline's generation stages: latents sampled from seed 3, and their frames."""
    latents = pipeline.sample(cond, seed=3)
    return latents, pipeline.decode(latents)[0]


def latent_slice(latents: torch.Tensor) -> torch.Tensor:
    return latents[0, :2, -1, -3:, -3:]  # a corner of the last latent frame, 2 channels


def frame_slice(frames: np.ndarray) -> np.ndarray:
    return frames[-1, -3:, -3:, 0].astype(int)  # a corner of the last frame, red


# Regenerate after an intended change: print latent_slice and frame_slice of
# generate(pipeline, conditions) (this module's fixtures) as lists, rounded to 5 decimals.
GOLDEN_LATENTS = [[[0.97301, 1.96787, -0.69046], [-0.84468, -0.66723, -0.78792],
                   [-1.29266, -0.66716, -2.3552]],
                  [[1.79708, -0.41637, -0.40302], [1.65436, 1.2375, 1.66316],
                   [2.09543, 0.43626, -2.54827]]]
GOLDEN_FRAMES = [[113, 118, 70], [110, 134, 132], [100, 125, 82]]


def test_generation_matches_its_golden_slice(pipeline, conditions):
    """The numbers pin down the debug pipeline's arithmetic (conditions, DiT, sampler,
    guidance, VAE), so that a change to any of it fails here."""
    latents, frames = generate(pipeline, conditions)
    assert latents.shape == (1, 4, 5, 8, 8) and frames.shape == (FRAMES, SIZE, SIZE, 3)
    torch.testing.assert_close(latent_slice(latents), torch.tensor(GOLDEN_LATENTS),
                               atol=1e-4, rtol=0)
    # uint8 frames: a value within 1e-4 of a rounding boundary may land on either side
    assert np.abs(frame_slice(frames) - GOLDEN_FRAMES).max() <= 1


@pytest.mark.parametrize("encoder", ["body_encoder", "hands_encoder", "face_encoder",
                                     "identity", "camera_embedder", "intensity_embedder"])
def test_an_unwired_condition_changes_the_generated_clip(pipeline, conditions, monkeypatch,
                                                          encoder):
    """A condition encoder whose output reaches nothing (here: all zeros) changes what the
    pipeline generates, by far more than the golden slice's tolerance: that test catches it."""
    wired_latents, wired_frames = generate(pipeline, conditions)
    module = getattr(pipeline.dit, encoder)
    wired = module.forward
    monkeypatch.setattr(module, "forward", lambda *args: torch.zeros_like(wired(*args)))
    latents, frames = generate(pipeline, conditions)
    moved = (latent_slice(latents) - latent_slice(wired_latents)).abs().max()
    assert moved > 100 * 1e-4  # the golden slice's atol
    assert not np.array_equal(frames, wired_frames)


def test_a_warp_model_starts_from_the_reference_warped_by_the_photos_keypoints(inputs):
    """A DiT with reference_prior "warp" gets the reference warped to each frame's pose by
    the keypoints the motion stage extracted from the photo (the real photo and footage)."""
    import dataclasses

    from models.baselines import WARP_PRIOR_SMOOTHING, tps_warp
    from models.conditions import decode_frames
    from models.errors import InvalidInput
    from models.extraction import extract_motion, reference_identity_of
    from models.frames import to_pixels

    config = dataclasses.replace(DEBUG.dit, reference_skip=True, reference_prior="warp")
    pipe = MotionControlPipeline(MotionDiT(config, stage=3), VideoVAE(DEBUG.vae), TextEncoder(),
                                 size=SIZE, frames=FRAMES, steps=1,
                                 guidance=GuidanceConfig(1.0, 1.0))
    reference, driving = inputs
    motion = extract_motion(reference, driving, size=SIZE)
    identity = reference_identity_of(reference, None, SIZE)
    cond = pipe.conditions(identity, motion.pose[None], motion.driver[None], "walking",
                           motion.action_phrase, motion.intensity, reference_pose=motion.reference)
    warped = tps_warp(identity.reference, motion.reference, motion.pose, SIZE,
                      smoothing=WARP_PRIOR_SMOOTHING)
    assert not np.array_equal(warped[0], warped[-1])  # the walker moves the photo
    with torch.no_grad():
        torch.testing.assert_close(cond.still_latents,
                                   pipe.vae.encode_latents(to_pixels(warped[None], SIZE)))
    # The output is decoded onto the warp's own pixels: latents the model left at the prior
    # give the warped reference exactly, not its (lossy) trip through the VAE.
    prior = to_pixels(warped[None], SIZE)
    torch.testing.assert_close(cond.prior_pixels, prior)
    with torch.no_grad():
        onto = decode_frames(pipe.vae, cond.still_latents, cond)
        through_vae = pipe.vae.decode_latents(cond.still_latents)
        moved = cond.still_latents + 0.5 * torch.randn_like(cond.still_latents)
        out = decode_frames(pipe.vae, moved, cond)
        # what the latents change, added to the prior; clamped to the pixel range
        expected = prior + pipe.vae.decode_latents(moved) - through_vae
    inside = expected.abs() < 1
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(out[inside], expected[inside])
    torch.testing.assert_close(onto, prior)
    assert (through_vae - prior).abs().mean() > 0.01
    with pytest.raises(InvalidInput, match="reference's keypoints"):
        pipe.conditions(identity, motion.pose[None], motion.driver[None], "walking",
                        motion.action_phrase, motion.intensity)
    assert pipe(reference, driving, seed=0).frames.shape == (FRAMES, SIZE, SIZE, 3)
