"""Without a server, runs go to SQLite under MC_HOME, artifacts where the stack serves them;
what every run records (settings, dataset input) and how a pipeline's runs nest."""

import json

import mlflow
import pytest

from flows import tracking
from flows.datasets import dataset_ref
from flows.settings import EXPERIMENTS, load_settings
from flows.store import open_store


def test_embedded_sqlite_default(tmp_path):
    settings = load_settings()
    assert tracking.tracking_uri(settings) == f"sqlite:///{settings.mlflow_db}"
    with tracking.start_run(settings, "teacher", run_name="embedded") as run:
        mlflow.log_text("hello", "notes/hello.txt")
    assert settings.mlflow_db.exists()
    artifact = settings.mlflow_artifacts / "teacher" / run.info.run_id / "artifacts" / "notes"
    assert (artifact / "hello.txt").read_text() == "hello"
    ids = {tracking.ensure_experiment(settings, name) for name in EXPERIMENTS}
    assert len(ids) == len(EXPERIMENTS)


def _publish_manifest(settings, digest: str) -> None:
    counts = {"clips_total": 9, "clips_kept": 7, "kept_split_train": 5, "kept_split_eval": 2,
              "kept_source_synthetic": 7}
    open_store(settings).put_bytes(f"datasets/motion/{digest}/manifest.json",
                                   json.dumps({"dataset": "motion", "digest": digest,
                                               "counts": counts}).encode())


def test_a_run_records_settings_in_one_file_and_its_dataset_as_an_input():
    settings = load_settings()
    _publish_manifest(settings, "0123456789abcdef")
    dataset = dataset_ref(settings, "motion", "0123456789abcdef")
    assert dataset.splits == {"train": 5, "eval": 2}
    assert dataset.source == open_store(settings).uri("datasets/motion/0123456789abcdef")
    with tracking.start_run(settings, "teacher", run_name="reads", dataset=dataset,
                            params={"steps": 2}) as run:
        pass
    got = mlflow.get_run(run.info.run_id)
    assert got.data.params == {"steps": "2", "dataset_digest": "0123456789abcdef"}
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/settings.json")
    assert logged["profile"] == settings.profile and logged == settings.public_dict()
    (entry,) = got.inputs.dataset_inputs
    assert (entry.dataset.name, entry.dataset.digest) == ("motion", "0123456789abcdef")
    assert dataset.source in entry.dataset.source
    tags = {t.key: t.value for t in entry.tags}
    assert tags == {"mlflow.data.context": "training", "clips.train": "5", "clips.eval": "2"}
    assert "mc.prefect.flow_run_id" not in got.data.tags  # not in a Prefect flow run


def test_pipeline_run_is_the_parent_of_the_stage_runs_and_ends_as_the_pipeline_did():
    settings = load_settings()
    with tracking.pipeline_run(settings) as parent:
        with tracking.start_run(settings, "curation", run_name="stage") as child:
            pass
        tracking.record_stage(settings, "curate", child.info.run_id)
    assert mlflow.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == \
        parent.info.run_id
    done = mlflow.get_run(parent.info.run_id)
    assert done.info.status == "FINISHED"
    assert done.data.tags["mc.stage.curate.run_id"] == child.info.run_id
    assert mlflow.get_experiment(done.info.experiment_id).name == "pipeline"
    children = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = "
                                                f"'{parent.info.run_id}'")
    assert [r.info.run_id for r in children] == [child.info.run_id]

    with pytest.raises(RuntimeError), tracking.pipeline_run(settings) as failed:
        raise RuntimeError("a stage failed")
    assert mlflow.get_run(failed.info.run_id).info.status == "FAILED"
    with tracking.start_run(settings, "curation", run_name="after") as alone:
        pass  # the pipeline is over: no parent
    assert "mlflow.parentRunId" not in mlflow.get_run(alone.info.run_id).data.tags
