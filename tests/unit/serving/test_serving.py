"""Serving parts that need no running server: the edge limits, config.pbtxt, the repository
layout built from a registered version, and the client's own checks and errors."""

import math

import pytest
import torch

from flows.errors import ServiceUnavailable
from flows.registry import load_bundle
from flows.settings import STUDENT_MODEL, ServeSettings, load_settings
from models.assets import sample_data
from models.errors import InvalidInput
from serving.client import MotionControlClient
from serving.limits import check_intensity, check_library, check_prompt, check_seed
from serving.repository import build_and_upload, build_repository, model_config
from serving.repository import main as repository_main
from serving.spec import MODELS
from serving.weights import load_served_bundle
from tests.conftest import free_port
from tests.tiny_models import publish_tiny_student

SERVE = ServeSettings(max_prompt_chars=20, max_subject_library=2)


@pytest.mark.parametrize("check, message", [
    (lambda: check_prompt("x" * 21, SERVE), "21 characters, over the limit of 20"),
    (lambda: check_prompt("a\x00b", SERVE), "control character U\\+0000"),
    (lambda: check_seed(-1), "SEED must be within 0.."),
    (lambda: check_intensity(math.nan, SERVE), "MOTION_INTENSITY must be within"),
    (lambda: check_intensity(5.0, SERVE), "MOTION_INTENSITY must be within"),
    (lambda: check_library(3, SERVE), "3 items, over the limit of 2"),
])
def test_edge_limits_say_what_is_wrong(check, message):
    with pytest.raises(InvalidInput, match=message):
        check()


def test_good_values_pass_the_edge():
    assert check_prompt("a knight\non a beach", SERVE) == "a knight\non a beach"
    assert check_seed(None) == 0 and check_seed(2**63 - 1) == 2**63 - 1
    assert check_intensity(None, SERVE) is None and check_intensity(0.5, SERVE) == 0.5


def test_config_has_instance_groups_optional_inputs_and_parameters():
    config = model_config(MODELS["student_dit"], ServeSettings(gpu_instances=2), {"size": "64"})
    assert 'name: "student_dit"' in config and 'backend: "python"' in config
    assert "{ count: 1 kind: KIND_CPU }" in config and "{ count: 2 kind: KIND_GPU }" in config
    assert 'key: "size"\n  value: { string_value: "64" }' in config
    entry = model_config(MODELS["motion_control"], ServeSettings(), {})
    assert "KIND_GPU" not in entry and "{ count: 4 kind: KIND_CPU }" in entry
    library = entry[entry.index('name: "SUBJECT_LIBRARY"'):].split("}")[0]
    assert "optional: true" in library and "dims: [ -1 ]" in library


def test_a_registered_version_becomes_a_self_contained_repository(tmp_path):
    settings = load_settings()
    version, dit = publish_tiny_student(settings)
    root = build_repository(settings, load_bundle(settings, STUDENT_MODEL, alias="champion"),
                            tmp_path / "repo")
    for name in MODELS:
        assert (root / name / "config.pbtxt").is_file()
        assert (root / name / "1" / "model.py").is_file()
    assert (root / "prompt_enhancer" / "1" / "smollm2.gguf").stat().st_size > 50e6
    assert (root / "student_dit" / "1" / "text_encoder").is_dir()
    served = load_served_bundle(root / "student_dit" / "1")
    assert (served.name, served.version, served.frames) == (STUDENT_MODEL, version, 9)
    assert served.text.traced  # MiniLM as TorchScript: the server's start imports no transformers
    for key, tensor in dit.state_dict().items():
        assert torch.equal(served.dit.state_dict()[key], tensor), key


def test_the_serving_pod_fetches_the_repository_with_its_own_instance_groups(tmp_path,
                                                                            monkeypatch):
    """Built on a laptop without GPUs; fetched by a pod of the GPU pool (the chart's init
    step, `python -m serving.repository fetch`), whose settings give the DiT GPU instances."""
    publish_tiny_student(load_settings())
    version = int(build_and_upload(load_settings()).strip("/").rsplit("/", 1)[-1])
    monkeypatch.setenv("MC_SERVE__GPU_INSTANCES", "2")
    repository_main(["fetch", "--version", str(version), "--dest", str(tmp_path / "models")])
    dit = (tmp_path / "models" / "student_dit" / "config.pbtxt").read_text()
    assert "{ count: 2 kind: KIND_GPU }" in dit and 'value: { string_value: "9" }' in dit
    assert "KIND_GPU" not in (tmp_path / "models" / "motion_extractor" / "config.pbtxt").read_text()
    assert (tmp_path / "models" / "student_dit" / "1" / "dit.safetensors").is_file()


def test_a_server_that_is_down_says_to_run_make_serve():
    client = MotionControlClient(f"127.0.0.1:{free_port()}", retries=0)
    with pytest.raises(ServiceUnavailable, match="make serve"):
        client.animate(sample_data("opencv-doc/basketball1.png"),
                       sample_data("opencv-doc/vtest.avi"), "a person walking")


def test_the_client_refuses_inputs_over_the_server_limits(monkeypatch):
    monkeypatch.setenv("MC_SERVE__MAX_VIDEO_BYTES", "1000")
    client = MotionControlClient(f"127.0.0.1:{free_port()}", settings=load_settings())
    with pytest.raises(InvalidInput, match="driving video is .* over the limit"):
        client.animate(sample_data("opencv-doc/basketball1.png"),
                       sample_data("opencv-doc/vtest.avi"), "a person walking")
