"""A registered version loads as a runnable pipeline (embedded SQLite MLflow, local store).

The DiT and VAE are untrained tiny models: this tests the registry contract, not quality."""

import pytest
import torch

from flows.errors import MotionControlError
from flows.registry import load_bundle
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, load_settings
from models.assets import sample_data
from models.video import read_image, read_video
from tests.tiny_models import publish_tiny_student


@pytest.fixture
def published():
    settings = load_settings()
    version, dit = publish_tiny_student(settings, alias="candidate",
                                        tags={"teacher_version": "7"})
    return settings, version, dit


def test_a_published_version_loads_by_alias_and_number(published):
    settings, version, dit = published
    bundle = load_bundle(settings, STUDENT_MODEL, alias="candidate")
    assert bundle.version == version and bundle.kind == "student"
    assert bundle.tags["teacher_version"] == "7"
    assert bundle.model_id.startswith("m-")  # its logged model: evaluation metrics link to it
    assert (bundle.frames, bundle.resolution, bundle.steps) == (9, 64, 2)
    assert bundle.guidance().branches() == ("full",)  # a student samples without CFG
    for name, tensor in dit.state_dict().items():
        assert torch.equal(bundle.dit.state_dict()[name], tensor), name
    again = load_bundle(settings, STUDENT_MODEL, version=version)
    assert again.tags == bundle.tags


def test_the_bundle_pipeline_samples_with_the_claimed_steps(published):
    settings, version, _ = published
    pipe = load_bundle(settings, STUDENT_MODEL, version=version).pipeline()
    reference = read_image(sample_data("opencv-doc/basketball1.png"))
    driving = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=9).frames
    out = pipe(reference, driving, "a person walking", seed=1)
    assert out.frames.shape == (9, 64, 64, 3)
    assert out.nfe == 2  # two steps, one branch each


def test_unknown_alias_and_vae_versions_say_what_to_do(published):
    settings, _, _ = published
    with pytest.raises(MotionControlError, match="has no alias 'champion'"):
        load_bundle(settings, STUDENT_MODEL, alias="champion")
    with pytest.raises(MotionControlError, match="exactly one"):
        load_bundle(settings, TEACHER_MODEL)
