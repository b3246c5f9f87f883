"""What a flow run shows in the Prefect UI: its log lines and its artifacts.

The terminal keeps what it had (printed lines, progress bars, rich tables); the flow run's
page in the Prefect UI gets the same lines in its logs at INFO, progress as one line per
tenth of the work (a progress bar is noise in a log), and artifacts: tables and links that
say what the run made. Outside a flow run (unit tests, helpers called directly) nothing is
sent anywhere.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

# Lines for the flow run's logs in the Prefect API only: the terminal already printed them,
# and Prefect's console handler would print them a second time.
_API_LOG = logging.getLogger("motioncontrol.flow_run")


def in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def _api_log() -> logging.Logger:
    if not _API_LOG.handlers:
        from prefect.logging.handlers import APILogHandler

        _API_LOG.addHandler(APILogHandler())
        _API_LOG.setLevel(logging.INFO)
        _API_LOG.propagate = False
    return _API_LOG


def say(message: str) -> None:
    """Print a line for the terminal and put it in the flow run's logs (Prefect UI)."""
    print(message, flush=True)
    log(message)


def log(message: str) -> None:
    """A line for the flow run's logs only (the terminal showed it its own way)."""
    if in_flow_run():
        _api_log().info(message)


def log_progress(done: int, total: int, message: str) -> None:
    """One INFO line in the flow run's logs per tenth of the work, and at its end (the
    terminal shows a progress bar instead)."""
    every = max(1, math.ceil(total / 10))
    if done % every == 0 or done == total:
        log(message)


def artifact_key(*parts: Any) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) from `parts`."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact of the flow run (rows of one dict each, same keys)."""
    if in_flow_run():
        from prefect.artifacts import create_table_artifact

        create_table_artifact(rows, key=artifact_key(key), description=description)


def markdown(key: str, text: str, description: str) -> None:
    if in_flow_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(text, key=artifact_key(key), description=description)


def link(key: str, url: str, text: str, description: str) -> None:
    """A link artifact when `url` is one (an MLflow server tracks); else a markdown
    artifact saying where the run is (SQLite tracking has no page to link to)."""
    if not url.startswith(("http://", "https://")):
        markdown(key, f"{text}: {url}", description)
    elif in_flow_run():
        from prefect.artifacts import create_link_artifact

        create_link_artifact(url, link_text=text, key=artifact_key(key),
                             description=description)


def report_run(settings, name: str, run_id: str, rows: list[dict[str, Any]],
               description: str) -> None:
    """The artifacts of a flow run that made the MLflow run `run_id`: `rows` as the table
    artifact `name`, and a link to the run in the MLflow UI (`name`-mlflow-run)."""
    table(name, rows, description)
    link_run(settings, f"{name}-mlflow-run", run_id, description)


def link_run(settings, key: str, run_id: str, description: str) -> None:
    """A link artifact to the MLflow run `run_id` in the MLflow UI."""
    if not in_flow_run():
        return
    from flows.tracking import connect, ui_link

    run = connect(settings).MlflowClient().get_run(run_id)
    link(key, ui_link(settings, run), f"MLflow run {run.info.run_name}", description)
