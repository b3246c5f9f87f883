"""Without a server, runs go to SQLite under MC_HOME, artifacts where the stack serves them."""

import mlflow

from flows import tracking
from flows.settings import EXPERIMENTS, load_settings


def test_embedded_sqlite_default(tmp_path):
    settings = load_settings()
    assert tracking.tracking_uri(settings) == f"sqlite:///{settings.mlflow_db}"
    with tracking.start_run(settings, "teacher", run_name="embedded") as run:
        mlflow.log_text("hello", "notes/hello.txt")
    assert settings.mlflow_db.exists()
    artifact = settings.mlflow_artifacts / "teacher" / run.info.run_id / "artifacts" / "notes"
    assert (artifact / "hello.txt").read_text() == "hello"
    ids = {tracking.ensure_experiment(settings, name) for name in EXPERIMENTS}
    assert len(ids) == 4
