"""MLflow helpers against the real MLflow server of the stack: runs, registry, aliases."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import registry, stack, tracking
from flows.errors import MotionControlError, ServiceUnavailable
from flows.settings import STUDENT_MODEL, load_settings
from tests.conftest import free_port


def _log_tiny_model(settings, scale: float) -> str:
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(scale)
        model.bias.zero_()
    with tracking.start_run(settings, "distillation", run_name=f"scale-{scale}"):
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                        pip_requirements=[])
    return info.model_uri


def test_runs_record_settings_commit_prefect_flow_run_and_pipeline_parent(stack_settings, monkeypatch):
    monkeypatch.setenv("MC_S3_SECRET_KEY", "do-not-log-me")
    settings = load_settings()

    @flow(name="stage")
    def stage() -> str:
        with tracking.start_run(settings, "curation", run_name="t",
                                params={"clips_total": 3}) as run:
            mlflow.log_metric("clips_kept", 2)
        return run.info.run_id

    @flow(name="pipeline")
    def pipeline() -> tuple[str, str]:  # as flows/pipeline.py calls the stage flows
        with tracking.pipeline_run(settings) as parent:
            return parent.info.run_id, stage()

    # the stack's Prefect server, as flows.runtime.configure points every entry point at it
    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url(settings)}):
        parent_id, run_id = pipeline()
    got, parent = mlflow.get_run(run_id), mlflow.get_run(parent_id)
    assert got.data.tags["mlflow.parentRunId"] == parent_id  # through the Prefect subflow
    assert parent.data.tags["mc.prefect.flow_run_id"] != got.data.tags["mc.prefect.flow_run_id"]
    assert tracking.tracking_uri(settings).startswith("http://127.0.0.1:")
    assert got.data.params == {"clips_total": "3"}  # the settings are one artifact, not params
    logged = mlflow.artifacts.load_dict(f"runs:/{got.info.run_id}/settings.json")
    assert logged["profile"] == "tiny" and logged["s3_secret_key"] == "***"
    assert "do-not-log-me" not in json.dumps(logged)
    assert len(got.data.tags["mlflow.source.git.commit"]) >= 7
    flow_run_id = got.data.tags["mc.prefect.flow_run_id"]
    assert flow_run_id in got.data.tags["mc.prefect.flow_run_url"]
    assert got.data.tags["mc.prefect.flow_run_url"].startswith(
        stack.prefect_api_url(settings).removesuffix("/api"))
    assert got.data.metrics["clips_kept"] == 2
    exp = mlflow.get_experiment(got.info.experiment_id)
    assert exp.name == "curation"


def test_a_version_registered_from_a_logged_model_links_metrics_to_it(stack_settings):
    s = stack_settings
    model_uri = _log_tiny_model(s, 1.0)
    version = registry.register_version(s, model_uri, STUDENT_MODEL)
    mv = mlflow.MlflowClient().get_model_version(STUDENT_MODEL, str(version))
    model_id = registry.logged_model_id(mv)
    assert model_uri == f"models:/{model_id}" and mv.run_id  # the run that logged it
    with tracking.start_run(s, "evaluation", run_name="eval"):
        mlflow.log_metrics({"ssim": 0.5}, model_id=model_id)
    logged = mlflow.MlflowClient().get_logged_model(model_id)
    assert {(m.key, m.value) for m in logged.metrics} == {("ssim", 0.5)}


def test_register_alias_load_and_rollback(stack_settings):
    s = stack_settings
    v1 = registry.register_version(s, _log_tiny_model(s, 1.0), STUDENT_MODEL,
                                   tags={"teacher_version": "7"})
    v2 = registry.register_version(s, _log_tiny_model(s, 2.0), STUDENT_MODEL)
    assert v2 == v1 + 1

    assert registry.set_alias(s, STUDENT_MODEL, "champion", v1) is None
    assert registry.set_alias(s, STUDENT_MODEL, "champion", v2) == v1
    assert registry.alias_version(s, STUDENT_MODEL, "champion") == v2
    model = registry.load_model(s, STUDENT_MODEL, alias="champion", flavor="pytorch")
    assert torch.allclose(model(torch.ones(1, 3)), torch.full((1, 2), 6.0))

    assert registry.rollback_alias(s, STUDENT_MODEL, "champion") == v1
    model = registry.load_model(s, STUDENT_MODEL, alias="champion", flavor="pytorch")
    assert torch.allclose(model(torch.ones(1, 3)), torch.full((1, 2), 3.0))
    client = mlflow.MlflowClient()
    assert client.get_model_version(STUDENT_MODEL, str(v1)).tags["teacher_version"] == "7"


def test_registry_errors_are_clear(stack_settings):
    with pytest.raises(MotionControlError, match="unknown alias"):
        registry.set_alias(stack_settings, STUDENT_MODEL, "prod", 1)
    with pytest.raises(MotionControlError, match="cannot load models:/nope@champion"):
        registry.load_model(stack_settings, "nope", alias="champion")
    with pytest.raises(MotionControlError, match="unknown experiment"):
        tracking.ensure_experiment(stack_settings, "scratch")


def test_a_down_server_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("MC_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceUnavailable, match="not reachable.*make stack-up"):
        tracking.ensure_experiment(load_settings(), "teacher")


def test_the_champion_loads_with_pyfunc_from_the_server_and_makes_an_mp4(stack_settings):
    """What a user of the MLflow server does with a registered version: load it by alias over
    HTTP and generate (an untrained tiny student: the contract, not quality)."""
    from models.assets import sample_data
    from models.video import encode_mp4, read_video
    from tests.tiny_models import publish_tiny_student

    version, _ = publish_tiny_student(stack_settings, alias="champion")
    assert tracking.tracking_uri(stack_settings).startswith("http://")
    model = mlflow.pyfunc.load_model(f"models:/{STUDENT_MODEL}@champion")
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=12)
    [mp4] = model.predict({"reference_image": sample_data("opencv-doc/basketball1.png")
                           .read_bytes(), "driving_video": encode_mp4(clip.frames, clip.fps),
                           "prompt": "a person walking", "seed": 1})
    out = read_video(mp4)  # decodable, the model's size and frame count, the driver's fps
    assert out.frames.shape == (9, 64, 64, 3) and out.fps == pytest.approx(clip.fps)
    assert version == int(mlflow.MlflowClient().get_model_version_by_alias(
        STUDENT_MODEL, "champion").version)
