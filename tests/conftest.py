"""Shared fixtures: every test gets its own MC_HOME, so nothing touches the user's .local/."""

from __future__ import annotations

import os
import socket

import pytest

# as serving/client.py sets it for its users, before anything in this process loads gRPC
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from flows.settings import get_settings

# Environment that would leak the developer's own services or credentials into tests.
_LEAKY = [k for k in os.environ if k.startswith(("MC_", "AWS_", "PREFECT_", "MLFLOW_"))]
# Flows run inside this process log Prefect's INFO lines to a stderr that pytest has closed
# by the time the temporary server stops at exit ("I/O operation on closed file"); the
# flows' own lines for the Prefect UI (flows/ui.py) do not depend on this level.
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    for key in _LEAKY:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MC_HOME", str(tmp_path / "mc-home"))
    monkeypatch.setenv("MC_SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
