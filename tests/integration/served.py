"""`motionctl serve --repository` in a child process, as a user runs it, for the integration
tests that need a real tritonserver (test_serving, test_rollout_analysis).

    env = serving_env(home)                       # its own MC_HOME and free loopback ports
    served = start_serving(repository, env, version)
    served.wait_ready()                           # start several, then wait: they load in parallel
    ...
    served.stop()                                 # SIGTERM; asserts a clean exit (stop_all: several)

A start costs ~40 s (mostly loading SmolLM2) and ~1.5 GB of memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from flows.settings import Settings, load_settings
from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def serving_env(home: Path) -> dict[str, str]:
    """MC_* for one server: its own home and free ports."""
    return {"MC_HOME": str(home), "MC_TRITON_HTTP_PORT": str(free_port()),
            "MC_TRITON_GRPC_PORT": str(free_port()), "MC_TRITON_METRICS_PORT": str(free_port()),
            "MLFLOW_DISABLE_TELEMETRY": "true"}


def settings_of(env: dict[str, str]) -> Settings:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        return load_settings()


@dataclass
class Served:
    """`motionctl serve` running in a child process, and where it listens."""

    process: subprocess.Popen
    settings: Settings
    version: int
    output: list[str] = field(default_factory=list)
    processes_when_ready: list[psutil.Process] = field(default_factory=list)
    terminated: bool = False  # SIGTERM sent

    @property
    def grpc_url(self) -> str:
        return self.settings.triton_grpc_address

    @property
    def metrics_address(self) -> str:
        """HOST:PORT of the metrics endpoint: a Prometheus scrape target."""
        return f"{self.settings.triton_host}:{self.settings.triton_metrics_port}"

    @property
    def metrics_url(self) -> str:
        return self.settings.triton_metrics_url

    def family(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def wait_ready(self) -> Served:
        for line in self.process.stdout:  # until the server is ready, or the command ends
            self.output.append(line)
            if line.startswith("ready"):
                break
        text = "".join(self.output)
        assert self.output and self.output[-1].startswith("ready"), text
        assert any(self.grpc_url in line for line in self.output), text
        self.processes_when_ready = self.family()
        return self

    def terminate(self) -> None:
        """One SIGTERM, what Kubernetes or Ctrl-C sends (see stop). Never a second: the
        server restores the default handler once it has stopped, and a second SIGTERM in
        that moment kills it with -15 after a clean stop."""
        if self.process.poll() is None and not self.terminated:
            self.process.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self) -> None:
        """Terminate and wait: the server and its stubs must exit cleanly."""
        self.terminate()
        rest, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0 and "tritonserver stopped" in rest, rest
        assert not [p.pid for p in self.processes_when_ready if p.is_running() and
                    p.status() != psutil.STATUS_ZOMBIE], "tritonserver left processes behind"


def stop_all(servers: list[Served]) -> None:
    """All stopping at once (each takes several seconds to drain and unload)."""
    for served in servers:
        served.terminate()
    for served in servers:
        served.stop()


def start_serving(repository: Path, env: dict[str, str], version: int) -> Served:
    """`motionctl serve --repository` with `env` over this process's, this checkout's code
    first on the path; returns at once (see Served.wait_ready)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "motionctl", "serve", "--repository", str(repository)],
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1",
             "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return Served(process, settings_of(env), version)
