"""The real local stack (MLflow server + Prefect server), started once for the integration
tests on free loopback ports, in its own MC_HOME, and stopped at the end."""

from __future__ import annotations

import pytest

from flows import stack
from flows.settings import load_settings
from tests.conftest import free_port


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory):
    env = {
        "MC_HOME": str(tmp_path_factory.mktemp("stack-home")),
        "MC_MLFLOW_PORT": str(free_port()),
        "MC_PREFECT_PORT": str(free_port()),
        "MC_STACK_TIMEOUT_S": "180",
    }
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    settings = load_settings()
    mp.undo()
    stack.up(settings, echo=lambda _: None)
    yield env
    stack.down(settings, echo=lambda _: None)


@pytest.fixture
def stack_settings(stack_env, monkeypatch):
    """Settings of the running stack, also put in the environment for code that reads it."""
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    return load_settings()
