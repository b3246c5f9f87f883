"""The `base` profile's code path end to end, as a user with the real Wan2.1 weights takes it:
curate -> stage 0 registers the pretrained Wan VAE -> stage 1 starts from the Wan DiT ->
stages 2-3 -> distill -> evaluate -> promote -> a request served by tritonserver.

The weights are a tiny *random* Wan checkpoint in diffusers layout (tests/tiny_models.py
write_tiny_wan), put into the object store as a user uploads the real one, and the run config
is base's with CPU sizes (MC_RUN_CONFIG, BASE_CPU): the same parts, classes and files, sized
so the whole path runs in minutes. Steps are cut as in test_pipeline.py."""

from __future__ import annotations

import json
import os
import subprocess

import mlflow
import pytest

from flows.profiles import run_config
from flows.pyfunc_model import download_bundle
from flows.registry import model_uri
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, load_settings
from flows.store import open_store
from flows.tracking import connect
from models.assets import sample_data
from models.video import encode_mp4, read_video
from serving.client import MotionControlClient, verify
from serving.repository import build_and_upload, fetch_repository
from tests.conftest import free_port
from tests.integration.conftest import FAST, MOTIONCTL, SMALL
from tests.integration.served import serving_env, start_serving
from tests.tiny_models import BASE_CPU, write_tiny_wan

WAN_PREFIX = "pretrained/wan2.1-tiny-random"


@pytest.fixture
def base_env(tmp_path, videos, monkeypatch):
    """A hermetic MC_HOME with the tiny Wan checkpoint in its object store, and MC_* for the
    base profile at CPU size."""
    for key in [k for k in os.environ if k.startswith("MC_")]:
        monkeypatch.delenv(key)
    overrides = tmp_path / "base-cpu.json"
    overrides.write_text(json.dumps(BASE_CPU))
    env = {"MC_HOME": str(tmp_path / "home"), **SMALL, "MC_CURATE__VIDEOS": str(videos),
           "MC_MLFLOW_PORT": str(free_port()), "MC_PREFECT_PORT": str(free_port()),
           "MC_PROFILE": "base", "MC_RUN_CONFIG": str(overrides),
           "MC_TRAIN__WAN_WEIGHTS": f"store:{WAN_PREFIX}",
           "MC_TRAIN__LAUNCHER": "local", "MC_TRAIN__DEVICE": "cpu"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    wan = write_tiny_wan(tmp_path / "Wan-tiny-Diffusers", run_config(settings))
    store = open_store(settings)
    for path in wan.rglob("*"):
        if path.is_file():
            store.put_file(f"{WAN_PREFIX}/{path.relative_to(wan)}", path)
    return env, settings


@pytest.mark.timeout(1500)
def test_base_runs_from_the_pretrained_wan_parts_to_a_served_request(base_env, tmp_path):
    env, settings = base_env
    proc = subprocess.run([MOTIONCTL, "pipeline"], capture_output=True, text=True, timeout=1500,
                          env={**os.environ, **FAST})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "registering the pretrained VAE" in proc.stdout

    client = connect(settings).MlflowClient()
    champion = client.get_model_version_by_alias(STUDENT_MODEL, "champion")
    teacher = client.get_model_version(TEACHER_MODEL, champion.tags["teacher_version"])
    assert teacher.tags["stage"] == "3"
    (vae_version,) = client.search_model_versions(
        f"name = '{TEACHER_MODEL}' and tag.stage = '0'")
    stage0 = client.get_run(vae_version.run_id)
    assert stage0.data.params["pretrained_vae"] == f"store:{WAN_PREFIX}/vae"
    (stage1,) = mlflow.search_runs(experiment_names=["teacher"], output_format="list",
                                   filter_string="tags.`mc.stage` = '1'")
    assert "wan_conversion.txt" in {a.path for a in client.list_artifacts(stage1.info.run_id)}
    assert "0 shape mismatches" in mlflow.artifacts.load_text(
        f"{stage1.info.artifact_uri}/wan_conversion.txt")

    # the champion carries the backbone's VAE and text encoder, as every later run read them
    bundle = download_bundle(model_uri(STUDENT_MODEL, version=champion.version))
    assert bundle.vae_meta["arch"] == "wan" and type(bundle.vae).__name__ == "WanVAEAdapter"
    assert type(bundle.text.model).__name__ == "UMT5EncoderModel"
    assert bundle.text.dim == bundle.dit.config.text_dim == BASE_CPU["dit"]["text_dim"]

    # served by tritonserver as `make serve` serves it
    build_and_upload(settings)
    served_env = {**env, **serving_env(tmp_path / "serve-home")}
    repository = fetch_repository(settings, int(champion.version), tmp_path / "served")
    server = start_serving(repository, served_env, int(champion.version)).wait_ready()
    try:
        clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=17)
        with MotionControlClient(server.grpc_url, settings=server.settings) as sdk:
            video = sdk.animate(sample_data("opencv-doc/basketball1.png").read_bytes(),
                                encode_mp4(clip.frames, clip.fps), "a person walking", seed=3)
    finally:
        server.stop()
    out = read_video(video)
    assert out.frames.shape[0] == 17 and out.frames.shape[1] == out.frames.shape[2]
    check = verify(video)
    assert check.watermark.found, check
    assert check.provenance["model"] == STUDENT_MODEL
    assert check.provenance["version"] == str(champion.version)
