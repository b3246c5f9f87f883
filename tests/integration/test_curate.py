"""`motionctl curate` end to end on a small configuration, against the stack's MLflow and
Prefect servers: shards and manifest in the store, the MLflow run, reuse, bad videos."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np

from flows.datasets import shard_dataset
from flows.tracking import connect
from tests.integration.conftest import MOTIONCTL, curate


def test_manifest_records_every_clip_with_its_decision(curated):
    _, _, manifest, first = curated
    clips = manifest["clips"]
    assert manifest["digest"] in first.stdout
    assert manifest["counts"]["clips_total"] == len(clips)
    assert 0 < manifest["counts"]["clips_kept"] < len(clips)
    assert {c["source"] for c in clips if c["kept"]} == {"synthetic", "mocap"}
    for clip in clips:
        assert clip["kept"] == (clip["reason"] == "") == (not clip["failed"]), clip
    for name in {n for c in clips for n in c["failed"]}:
        assert manifest["counts"][f"dropped_by_{name}"] == sum(name in c["failed"]
                                                               for c in clips)
    broken = [c for c in clips if c["source"] == "video" and "broken" in c["key"]]
    assert broken and "broken.mp4" in broken[0]["reason"] and broken[0]["failed"] == ["input"]
    assert {c["split"] for c in clips if c["kept"]} == {"train", "eval"}
    train_ids = {c["identity_id"] for c in clips if c["split"] == "train"}
    eval_ids = {c["identity_id"] for c in clips if c["split"] == "eval"}
    assert not train_ids & eval_ids  # held-out characters are never trained on


def test_shards_stream_from_the_store_with_annotations(curated):
    _, settings, manifest, _ = curated
    kept = {c["key"] for c in manifest["clips"] if c["kept"] and c["split"] == "train"}
    examples = list(shard_dataset(settings, manifest, split="train", cross_identity=1.0))
    assert {e["key"] for e in examples} == kept
    for e in examples:
        assert e["frames"].shape == (17, 128, 128, 3) and e["frames"].dtype == np.uint8
        assert e["keypoints"].shape == (17, 133, 4)
        assert e["caption"] and e["action_phrase"] and e["camera_move"]
        assert e["motion_intensity"] > 0
    assert any(e["cross_identity"] for e in examples)


def test_mlflow_run_has_counts_digest_and_plots(curated):
    _, settings, manifest, _ = curated
    connect(settings)  # tracking and registry URIs both (a bare set_tracking_uri keeps a stale registry)
    runs = mlflow.search_runs(experiment_names=["curation"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["dataset_digest"] == manifest["digest"]
    assert run.data.metrics["clips_total"] == manifest["counts"]["clips_total"]
    assert run.data.metrics["clips_kept"] == manifest["counts"]["clips_kept"]
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "score_histograms.png", "contact_sheet.png",
            "extractor_overlays"} <= names
    overlays = {Path(a.path).name
                for a in client.list_artifacts(run.info.run_id, "extractor_overlays")}
    assert {"basketball1.png", "basketball2.png", "vtest_00.png"} <= overlays


def test_same_inputs_reuse_the_dataset(curated):
    env, settings, manifest, _ = curated
    again = curate(env)
    assert "reused" in again.stdout and manifest["digest"] in again.stdout
    connect(settings)  # tracking and registry URIs both (a bare set_tracking_uri keeps a stale registry)
    assert len(mlflow.search_runs(experiment_names=["curation"], output_format="list")) == 1


def test_unknown_action_is_one_clear_line(curated):
    env = {**curated[0], "MC_CURATE__ACTIONS": '["moonwalk"]'}
    proc = subprocess.run([MOTIONCTL, "curate"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 1
    assert "moonwalk" in proc.stderr and "Traceback" not in proc.stderr
    json.dumps(proc.stderr)  # printable
