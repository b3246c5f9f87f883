"""MLflow helpers: where to track, the run context every stage uses, and the model registry.

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
from flows.settings import ALIASES, EXPERIMENTS, REPO_ROOT, Settings
from flows.stack import is_healthy, mlflow_server_url

PREVIOUS_TAG = "previous_{alias}"  # model-level tag: the version an alias pointed to before


def tracking_uri(settings: Settings) -> str:
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    return mlflow_server_url(settings) or f"sqlite:///{settings.mlflow_db}"


def _mlflow(settings: Settings):
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
    mlflow = _mlflow(settings)
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
    mlflow = _mlflow(settings)
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


# --- registry ---------------------------------------------------------------------------


def model_uri(name: str, alias: str | None = None, version: int | str | None = None) -> str:
    if (alias is None) == (version is None):
        raise ValueError("give exactly one of alias or version")
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"


def register_version(
    settings: Settings, model_uri_or_run: str, name: str, tags: dict[str, str] | None = None,
) -> int:
    """Register a logged model (`runs:/<run_id>/<name>` or `models:/m-…`) as a new version
    of `name`; returns its number."""
    mlflow = _mlflow(settings)
    mv = mlflow.register_model(model_uri_or_run, name, tags=tags or {})
    return int(mv.version)


def set_alias(settings: Settings, name: str, alias: str, version: int | str) -> int | None:
    """Point `alias` at `version`; returns the version it pointed to before (or None), and
    records that one in the model tag `previous_<alias>` so a rollback is one call."""
    if alias not in ALIASES:
        raise MotionControlError(f"unknown alias {alias!r}; expected one of {ALIASES}")
    mlflow = _mlflow(settings)
    client = mlflow.MlflowClient()
    previous = alias_version(settings, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    if previous is not None and previous != int(version):
        client.set_registered_model_tag(name, PREVIOUS_TAG.format(alias=alias), str(previous))
    return previous


def rollback_alias(settings: Settings, name: str, alias: str) -> int:
    """Move `alias` back to the version recorded before the last move."""
    mlflow = _mlflow(settings)
    client = mlflow.MlflowClient()
    previous = client.get_registered_model(name).tags.get(PREVIOUS_TAG.format(alias=alias))
    if previous is None:
        raise MotionControlError(f"{name}@{alias} has no recorded previous version to roll "
                                 "back to")
    set_alias(settings, name, alias, previous)
    return int(previous)


def alias_version(settings: Settings, name: str, alias: str) -> int | None:
    mlflow = _mlflow(settings)
    try:
        return int(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def load_model(settings: Settings, name: str, alias: str | None = None,
               version: int | str | None = None, flavor: str = "pyfunc"):
    """Load a registered model by alias or version (`flavor`: pyfunc, pytorch, …)."""
    mlflow = _mlflow(settings)
    uri = model_uri(name, alias=alias, version=version)
    try:
        return getattr(mlflow, flavor).load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise MotionControlError(f"cannot load {uri}: {exc.message}") from None


def ui_link(settings: Settings, run) -> str:
    """A link to the run in the UI, when a server is tracking; else how to see it."""
    uri = tracking_uri(settings)
    if uri.startswith(("http://", "https://")):
        return (f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/"
                f"{urllib.parse.quote(run.info.run_id)}")
    return f"run {run.info.run_id} in {uri} (open it with `make stack-up`)"
