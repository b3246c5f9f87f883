"""The whole tiny pipeline end to end on the embedded local defaults (SQLite MLflow, Prefect's
temporary server, the local folder store) in its own MC_HOME, so its registry does not mix
with the other integration tests': curate -> train stages 0-3 -> distill -> evaluate ->
promote to champion.

Steps are cut to a few per stage (the wiring is under test, not the quality, which the
README's measured figures cover); the promotion gates are loosened accordingly (they have
their own tests in tests/unit/flows/test_promote.py)."""

from __future__ import annotations

import os
import subprocess

import mlflow
import pytest

from flows.registry import logged_model_id
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, load_settings
from flows.tracking import connect, tracking_uri
from tests.conftest import free_port
from tests.integration.conftest import FAST, MOTIONCTL, SMALL

STAGES = {"curate", "stage0", "stage1", "stage2", "stage3", "guidance", "steps",
          "evaluate-teacher", "evaluate-student"}
METRICS = {"ssim", "psnr", "lpips", "pose_pck", "hand_pck", "face_nme", "id_similarity",
           "motion_smoothness", "dynamic_degree", "latency_s", "nfe"}
PIPELINE_TIMEOUT_S = 1500


# The suite's default 600 s is too short for the pipeline on 2 busy cores (it took > 600 s
# with a demo running beside the suite): the test gets its subprocess's own limit.
@pytest.mark.timeout(PIPELINE_TIMEOUT_S)
def test_pipeline_ends_with_a_champion_student_and_an_evaluation(tmp_path, videos,
                                                                monkeypatch):
    # Hermetic: none of the session stack's MC_* settings, and ports where nothing listens,
    # so MLflow is SQLite in this MC_HOME and Prefect its temporary server.
    for key in [k for k in os.environ if k.startswith("MC_")]:
        monkeypatch.delenv(key)
    env = {"MC_HOME": str(tmp_path / "home"), **SMALL, "MC_CURATE__VIDEOS": str(videos),
           "MC_MLFLOW_PORT": str(free_port()), "MC_PREFECT_PORT": str(free_port())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert tracking_uri(settings).startswith("sqlite:")
    proc = subprocess.run([MOTIONCTL, "pipeline"], capture_output=True, text=True,
                          timeout=PIPELINE_TIMEOUT_S,
                          env={**os.environ, **FAST})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = proc.stdout[proc.stdout.index("evaluation: held-out benchmark set"):]
    assert all(word in table for word in ("pose_pck", "static", "tps", "truth", "VAE"))
    connect(settings)  # tracking and registry URIs both (a bare set_tracking_uri keeps a stale registry)
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias(STUDENT_MODEL, "champion")
    assert champion.tags["distill_stage"] == "steps" and champion.tags["nfe"] == "4"
    teacher = client.get_model_version(TEACHER_MODEL, champion.tags["teacher_version"])
    assert teacher.tags["stage"] == "3"
    runs = mlflow.search_runs(experiment_names=["evaluation"], output_format="list",
                              filter_string=f"tags.model_version = '{champion.version}' and "
                                            f"tags.model_name = '{STUDENT_MODEL}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics.keys() >= METRICS
    assert run.data.metrics["nfe"] == 4
    assert "skipped.text_alignment" in run.data.tags and "skipped.lpips" not in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"comparison.json", "comparison.png", "per_clip.json"} <= artifacts
    comparison = client.load_table(run.info.experiment_id, "comparison.json",  # log_table's
                                   run_ids=[run.info.run_id])
    assert f"{STUDENT_MODEL}@v{champion.version}" in set(comparison["model"])
    assert "gsb" in artifacts  # the blind side-by-side page of student vs teacher
    distill_runs = mlflow.search_runs(experiment_names=["distillation"], output_format="list")
    assert {r.data.tags["mc.objective"] for r in distill_runs} >= {"guidance", "steps"}
    for r in distill_runs:  # every number the run trained with, as flows/profiles.py set it
        logged = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert "run_config.json" in logged
    assert_lineage(client, champion, teacher, run)


def assert_lineage(client, champion, teacher, evaluation) -> None:
    """The walk of the MLflow UI: pipeline run -> its nested stage runs -> the version each
    registered -> the dataset it read; and the evaluation's metrics on the champion's model."""
    (pipeline,) = mlflow.search_runs(experiment_names=["pipeline"], output_format="list")
    assert pipeline.info.status == "FINISHED"
    assert pipeline.data.tags["mc.prefect.flow_run_id"]
    stages = {key.split(".")[2]: value for key, value in pipeline.data.tags.items()
              if key.startswith("mc.stage.")}
    assert set(stages) == STAGES
    nested = {r.info.run_id: r for r in mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{pipeline.info.run_id}'")}
    assert set(nested) == set(stages.values())  # a fresh pipeline: every stage nested
    assert evaluation.info.run_id == stages["evaluate-student"]
    curation = nested[stages["curate"]]
    (made,) = curation.inputs.dataset_inputs
    for version, stage in ((teacher, "stage3"), (champion, "steps")):
        trained = nested[version.tags["run_id"]]
        assert trained.info.run_id == stages[stage] == version.run_id
        (read,) = trained.inputs.dataset_inputs
        assert (read.dataset.name, read.dataset.digest) == \
            (made.dataset.name, version.tags["dataset_digest"])
        assert {t.key: t.value for t in read.tags}["mlflow.data.context"] == "training"
        assert any(key.startswith("system/") for key in trained.data.metrics)
        assert trained.data.tags["mc.prefect.flow_run_id"] != \
            pipeline.data.tags["mc.prefect.flow_run_id"]  # its own (sub)flow run
    assert {t.key: t.value for t in made.tags}["mlflow.data.context"] == "output"
    for run in nested.values():  # the settings are one artifact, not ~140 params
        assert len(run.data.params) < 30, run.data.params.keys()
    linked = client.get_logged_model(logged_model_id(champion)).metrics
    assert {m.key for m in linked if m.run_id == evaluation.info.run_id} >= METRICS
