"""`motionctl train` on the small curated dataset: stage 0 killed mid-run resumes from its
checkpoint in the store; stage 1 starts from the registered stage 0 and logs samples."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import mlflow
import pytest

from flows.checkpoints import latest_checkpoint, step_tag
from flows.datasets import load_manifest
from flows.settings import TEACHER_MODEL
from flows.store import open_store
from flows.tracking import connect
from tests.integration.conftest import MOTIONCTL

FAST = {"MC_TRAIN__CHECKPOINT_EVERY": "2", "MC_TRAIN__VAL_EVERY": "4",
        "MC_TRAIN__SAMPLE_EVERY": "4", "MC_TRAIN__SAMPLE_STEPS": "2",
        "MC_TRAIN__BATCH_SIZE": "2", "COLUMNS": "200",
        # a system-metrics sample every second: a 4-step run lasts only seconds
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}


def train(env: dict, stage: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([MOTIONCTL, "train", "--stage", str(stage)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained_stage0(curated):
    env = {**curated[0], **FAST, "MC_TRAIN__STEPS": "8"}
    # First run: killed (SIGKILL to the flow, torchrun and the worker) after a checkpoint.
    first = subprocess.Popen([MOTIONCTL, "train", "--stage", "0"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True,
                             env={**os.environ, **env})
    seen, deadline = [], time.monotonic() + 600
    for line in first.stdout:
        seen.append(line)
        if "checkpoint at step 4" in line or time.monotonic() > deadline:
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert any("checkpoint at step 4" in line for line in seen), "".join(seen)[-3000:]
    second = train(env, 0)
    return env, curated[1], second


def test_killed_stage_resumes_from_its_last_checkpoint(trained_stage0):
    env, settings, second = trained_stage0
    assert "resuming stage 0" in second.stdout
    assert "resumed at step 4" in second.stdout or "resumed at step 6" in second.stdout
    connect(settings)  # tracking and registry URIs both (a bare set_tracking_uri keeps a stale registry)
    runs = mlflow.search_runs(experiment_names=["teacher"], output_format="list",
                              # this plan's runs (test_deployments trains stage 0 for 3 steps)
                              filter_string="tags.`mc.stage` = '0' and params.steps = '8'")
    assert len(runs) == 1  # the same run, continued
    run = runs[0]
    assert run.data.tags["mc.done"] == "true"
    assert latest_checkpoint(open_store(settings), run.info.run_id) == step_tag(8)
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id,
                                                                       "loss_total")]
    assert max(steps) == 8
    version = mlflow.MlflowClient().get_model_version(TEACHER_MODEL, run.data.tags["mc.version"])
    assert version.tags["stage"] == "0" and version.tags["dataset_digest"]


def test_stage1_starts_from_stage0_and_logs_samples_system_metrics_and_dataset(
        trained_stage0):
    env, settings, _ = trained_stage0
    manifest = load_manifest(open_store(settings), "motion")
    proc = train({**env, "MC_TRAIN__STEPS": "4"}, 1)
    assert "stage 1" in proc.stdout
    connect(settings)  # tracking and registry URIs both (a bare set_tracking_uri keeps a stale registry)
    (run,) = mlflow.search_runs(experiment_names=["teacher"], output_format="list",
                                filter_string="tags.`mc.stage` = '1'")
    client = mlflow.MlflowClient()
    assert run.data.params["vae_weights"].startswith(f"models:/{TEACHER_MODEL}/")
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "samples/sample_000004.mp4" in samples
    # the strip: an image with its step (MLflow names the file after key and step)
    images = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
    assert any(path.startswith("images/samples+step+4+") for path in images), images
    assert any(key.startswith("system/") for key in run.data.metrics), run.data.metrics.keys()
    (read,) = run.inputs.dataset_inputs
    assert read.dataset.digest == manifest["digest"] and read.dataset.name == "motion"
    assert {t.key: t.value for t in read.tags}["mlflow.data.context"] == "training"
    # the learning curve: held-out SSIM and pose PCK, the static reference beside them
    assert {"val_loss", "sample_ssim", "sample_pose_pck", "static_ssim", "static_pose_pck",
            "loss_flow_matching", "lr"} <= run.data.metrics.keys()
    again = train({**env, "MC_TRAIN__STEPS": "4"}, 1)
    assert "reused" in again.stdout


def test_a_stage_needs_its_parent(curated):
    proc = subprocess.run([MOTIONCTL, "train", "--stage", "3"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **curated[0]})
    assert proc.returncode == 1
    assert "stage 2 is not trained yet" in proc.stderr and "Traceback" not in proc.stderr
