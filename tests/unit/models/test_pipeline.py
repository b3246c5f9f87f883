"""MotionControlPipeline end to end on tiny, randomly initialised models (the trained ones
come from the train flow; here the wiring is under test): real photo as the reference, real
footage as the driver."""

import numpy as np
import pytest
import torch

from models.assets import sample_data
from models.dit import DIT_PRESETS, MotionDiT
from models.motion import NoPersonFound
from models.pipeline import MotionControlPipeline
from models.sampling import GuidanceConfig
from models.text import TextEncoder
from models.vae import VideoVAE
from models.video import read_image, read_video


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    return MotionControlPipeline(MotionDiT(DIT_PRESETS["tiny"], stage=3), VideoVAE("tiny"),
                                 TextEncoder(), size=64, frames=17, steps=2,
                                 guidance=GuidanceConfig(3.0, 1.5, prune=False))


@pytest.fixture(scope="module")
def inputs():
    reference = read_image(sample_data("opencv-doc/basketball1.png"))
    driving = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=17).frames
    return reference, driving


def test_generates_a_clip_with_the_claimed_nfe_and_timings(pipeline, inputs):
    reference, driving = inputs
    out = pipeline(reference, driving, "a person walking", seed=3)
    assert out.frames.shape == (17, 64, 64, 3) and out.frames.dtype == np.uint8
    assert out.nfe == 2 * 3  # steps × three guidance branches
    assert out.driving_keypoints.shape == (17, 133, 4)
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
