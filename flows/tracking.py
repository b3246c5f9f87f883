"""MLflow tracking: where to track and the run context every stage uses (the model registry
is flows/registry.py).

Every run records its settings (`settings.json`, secrets masked), the git commit, the Prefect
flow run it ran in (tags `mc.prefect.flow_run_id`/`_url`) and, when it reads or writes the
curated dataset, that dataset as an MLflow dataset input (name, digest, store URI, clips per
split). Inside `pipeline_run` every run nests under the pipeline's parent run
(`mlflow.parentRunId`, across experiments), so the MLflow UI shows one tree per pipeline.

Tracking URI, in order: `MC_MLFLOW_TRACKING_URI` if set; the local stack's MLflow server
when it is up (`make stack-up`); else SQLite at `MC_HOME/mlflow.db` with artifacts in
`MC_HOME/mlartifacts` -- the same files the stack's server serves, so runs logged without a
server show up in the UI later.
"""

from __future__ import annotations

import contextlib
import contextvars
import subprocess
import urllib.parse
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flows.errors import MotionControlError, ServiceUnavailable
from flows.settings import EXPERIMENTS, REPO_ROOT, Settings
from flows.stack import is_healthy, mlflow_server_url

if TYPE_CHECKING:
    from flows.datasets import DatasetRef

# What the dataset is to a run of each experiment (the input's `mlflow.data.context`).
DATASET_CONTEXT = {"curation": "output", "teacher": "training", "distillation": "training",
                   "evaluation": "evaluation"}
# The pipeline's parent run while `pipeline_run` is open. A context variable, not a global:
# Prefect runs subflows in the caller's context (or a copy of it), so the stages see it.
_PARENT_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("mc_parent_run",
                                                                         default=None)


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
    """Id of the experiment `name` (one of EXPERIMENTS), created if needed."""
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


def prefect_tags() -> dict[str, str]:
    """The Prefect flow run we are in (empty outside one): where the run came from."""
    from prefect.runtime import flow_run

    tags = {"mc.prefect.flow_run_id": flow_run.id, "mc.prefect.flow_run_url": flow_run.ui_url}
    return {k: v for k, v in tags.items() if v}  # no URL without a UI (the temporary server)


def _run_tags(settings: Settings, tags: dict[str, str] | None) -> dict[str, str]:
    return {"mlflow.source.git.commit": git_commit(), "mc.profile": settings.profile,
            **prefect_tags(), **(tags or {})}


def _record_settings(client, run_id: str, settings: Settings) -> None:
    """Every setting in one artifact, not one param each (~140 of them drowned the few
    that differ between runs)."""
    client.log_dict(run_id, settings.public_dict(), "settings.json")


def mlflow_dataset(ref: DatasetRef):
    """The dataset as MLflow sees it: metadata only (the shards stay in the store), with its
    own digest and the store URI as source (file:// or s3://)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # file:// matches two equal local sources; either is right
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(ref.source)
    return MetaDataset(source, name=ref.name, digest=ref.digest)


@contextlib.contextmanager
def start_run(
    settings: Settings,
    experiment: str,
    run_name: str | None = None,
    dataset: DatasetRef | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """An MLflow run that records what every run of the platform must (see the module's
    docstring); nested under the pipeline's run when one is open. `params`: the few that
    tell this run from others (the settings are in `settings.json`)."""
    mlflow = connect(settings)
    experiment_id = ensure_experiment(settings, experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          parent_run_id=_PARENT_RUN.get(),
                          tags=_run_tags(settings, tags)) as run:
        _record_settings(mlflow.MlflowClient(), run.info.run_id, settings)
        if dataset is not None:
            mlflow.log_param("dataset_digest", dataset.digest)  # searchable: params.dataset_digest
            mlflow.log_input(mlflow_dataset(dataset), context=DATASET_CONTEXT[experiment],
                             tags={f"clips.{split}": str(n) for split, n in dataset.splits.items()})
        if params:
            mlflow.log_params(params)
        yield run


@contextlib.contextmanager
def pipeline_run(settings: Settings, run_name: str = "pipeline") -> Iterator[Any]:
    """The parent run of a whole pipeline (experiment `pipeline`); yields it. Every
    `start_run` inside nests under it; it ends FINISHED, or FAILED on an exception.

    Not the active (fluent) run: a stage's own run must be the one its metrics go to."""
    client = connect(settings).MlflowClient()
    run = client.create_run(ensure_experiment(settings, "pipeline"), run_name=run_name,
                            tags=_run_tags(settings, None))
    run_id = run.info.run_id
    _record_settings(client, run_id, settings)
    token = _PARENT_RUN.set(run_id)
    print(f"MLflow pipeline run: {ui_link(settings, run)}")
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        _PARENT_RUN.reset(token)
        client.set_terminated(run_id, status)


def record_stage(settings: Settings, stage: str, run_id: str | None) -> None:
    """Tag the open pipeline run with a stage's run (`mc.stage.<stage>.run_id`): a reused
    stage's run was made by an earlier pipeline and is not nested under this one."""
    parent = _PARENT_RUN.get()
    if parent and run_id:
        connect(settings).MlflowClient().set_tag(parent, f"mc.stage.{stage}.run_id", run_id)


def ui_link(settings: Settings, run) -> str:
    """A link to the run in the UI, when a server is tracking; else how to see it."""
    uri = tracking_uri(settings)
    if uri.startswith(("http://", "https://")):
        return (f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/"
                f"{urllib.parse.quote(run.info.run_id)}")
    return f"run {run.info.run_id} in {uri} (open it with `make stack-up`)"
