"""MLflow tracking: where to track and the run context every stage uses (the model registry
is flows/registry.py).

Tracking URI, in order: `MC_MLFLOW_TRACKING_URI` if set; the local stack's MLflow server
when it is up (`make stack-up`); else SQLite at `MC_HOME/mlflow.db` with artifacts in
`MC_HOME/mlartifacts` -- the same files the stack's server serves, so runs logged without a
server show up in the UI later.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Any

from flows.errors import MotionControlError, ServiceUnavailable
from flows.settings import EXPERIMENTS, REPO_ROOT, Settings
from flows.stack import is_healthy, mlflow_server_url


def tracking_uri(settings: Settings) -> str:
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    return mlflow_server_url(settings) or f"sqlite:///{settings.mlflow_db}"


def connect(settings: Settings):
    """mlflow, pointed at the right place; raises one clear line if a server is down."""
    import mlflow

    uri = tracking_uri(settings)
    if uri.startswith(("http://", "https://")) and not is_healthy(uri.rstrip("/") + "/health",
                                                                   timeout=3.0):
        raise ServiceUnavailable(
            f"MLflow server at {uri} is not reachable; start it with `make stack-up`, "
            "or unset MC_MLFLOW_TRACKING_URI to track into the local SQLite file"
        )
    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow


def ensure_experiment(settings: Settings, name: str) -> str:
    """Id of the experiment `name` (one of the design's four), created if needed."""
    if name not in EXPERIMENTS:
        raise MotionControlError(f"unknown experiment {name!r}; expected one of {EXPERIMENTS}")
    mlflow = connect(settings)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # Without a server, artifacts go where the stack's server will serve them from.
    location = None
    if not tracking_uri(settings).startswith(("http://", "https://")):
        location = (settings.mlflow_artifacts / name).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=5, check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def start_run(
    settings: Settings,
    experiment: str,
    run_name: str | None = None,
    dataset_digest: str | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """An MLflow run that records what every run of the platform must: its settings
    (secrets masked), the git commit and, when it reads a dataset, the dataset digest."""
    mlflow = connect(settings)
    experiment_id = ensure_experiment(settings, experiment)
    commit = git_commit()
    all_tags = {"mlflow.source.git.commit": commit, "mc.profile": settings.profile,
                **(tags or {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags) as run:
        mlflow.log_params({f"settings.{k}": v for k, v in settings.public_dict().items()})
        mlflow.log_param("git_commit", commit)
        if dataset_digest:
            mlflow.log_param("dataset_digest", dataset_digest)
        if params:
            mlflow.log_params(params)
        yield run


def ui_link(settings: Settings, run) -> str:
    """A link to the run in the UI, when a server is tracking; else how to see it."""
    uri = tracking_uri(settings)
    if uri.startswith(("http://", "https://")):
        return (f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/"
                f"{urllib.parse.quote(run.info.run_id)}")
    return f"run {run.info.run_id} in {uri} (open it with `make stack-up`)"
