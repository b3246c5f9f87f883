"""Process environment for the libraries the platform drives (Prefect, MLflow, Hugging Face).

Called once by every entry point before Prefect or MLflow is imported: both read part of
their configuration from the environment at import time. Values the user set win.
"""

from __future__ import annotations

import os

from flows.settings import Settings, get_settings


def configure(settings: Settings | None = None) -> Settings:
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    defaults = {
        # Telemetry off, and nothing reaches for a model hub at run time.
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Prefect keeps its database and profiles under MC_HOME, never in ~/.prefect.
        "PREFECT_HOME": str(settings.prefect_home),
        # INFO: flow runs' lines reach the Prefect UI (flows/ui.py), and the terminal shows
        # Prefect's own run lines (start, the run's UI link, final state).
        "PREFECT_LOGGING_LEVEL": "INFO",
        # The temporary server's default 20 s start budget is too short on a busy 2-core
        # machine ("Timed out while attempting to connect to ephemeral Prefect API server").
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)

    # Flows talk to the local stack's Prefect server when it is up; otherwise Prefect
    # starts its own temporary server for the run (the embedded default).
    from flows.stack import prefect_api_url

    if settings.prefect_api_url:
        os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    elif "PREFECT_API_URL" not in os.environ and (url := prefect_api_url(settings)):
        os.environ["PREFECT_API_URL"] = url
    return settings
