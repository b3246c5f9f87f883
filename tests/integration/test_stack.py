"""`make stack-up` / `stack-down` / `motionctl stack status`, and a Prefect flow run against
the stack's real Prefect server. The last test stops the stack and checks nothing is left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from flows import stack
from flows.errors import ServiceUnavailable
from flows.settings import load_settings
from flows.tracking import tracking_uri
from tests.conftest import free_port

MOTIONCTL = str(Path(sys.executable).parent / "motionctl")


def test_both_uis_and_the_worker_answer_200(stack_settings):
    for row in stack.status(stack_settings):
        assert row.healthy, row
        path = "/health" if row.name == "worker" else "/"  # the worker has no UI
        assert httpx.get(row.url + path, timeout=10).status_code == 200
    # the UI's browser code calls the API on the stack's port, not Prefect's default one
    api = stack.prefect_api_url(stack_settings)
    assert httpx.get(api.removesuffix("/api") + "/ui-settings", timeout=10).json()["api_url"] == api


def test_second_up_reuses_the_running_services(stack_settings):
    before = {r.name: r.pid for r in stack.status(stack_settings)}
    lines = []
    stack.up(stack_settings, echo=lines.append)
    assert lines[:3] == ["mlflow: already running", "prefect: already running",
                         "worker: already running"]
    assert lines[3].startswith("prefect: 7 deployments on work pool 'local'")  # refreshed
    assert {r.name: r.pid for r in stack.status(stack_settings)} == before


def test_flows_and_tracking_use_the_stack_when_up(stack_settings, tmp_path, monkeypatch):
    assert tracking_uri(stack_settings) == f"http://127.0.0.1:{stack_settings.mlflow_port}"
    assert stack.prefect_api_url(stack_settings).endswith(f":{stack_settings.prefect_port}/api")
    # Another MC_HOME has no stack: embedded defaults.
    monkeypatch.setenv("MC_HOME", str(tmp_path / "elsewhere"))
    other = load_settings()
    assert tracking_uri(other) == f"sqlite:///{other.mlflow_db}"
    assert stack.prefect_api_url(other) is None


def test_doctor_flow_runs_on_the_stack_prefect_server(stack_settings):
    env = {**os.environ, "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"}
    proc = subprocess.run([MOTIONCTL, "doctor"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tritonserver" in proc.stdout and "object store" in proc.stdout
    api = stack.prefect_api_url(stack_settings)
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={},
                                                     timeout=10).json()}
    doctor_runs = [r for r in runs if flows.get(r["flow_id"]) == "doctor"]
    assert doctor_runs and all(r["state_type"] == "COMPLETED" for r in doctor_runs)


def test_cli_status_shows_the_stack(stack_settings):
    proc = subprocess.run([MOTIONCTL, "stack", "status"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("healthy") == 3


def test_a_taken_port_is_one_clear_error(stack_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("MC_HOME", str(tmp_path / "second-stack"))
    with pytest.raises(ServiceUnavailable, match=r"port \d+ .* used by another process"):
        stack.up(load_settings(), echo=lambda _: None)


def test_up_then_down_leaves_no_process_of_ours(tmp_path, monkeypatch):
    # Its own stack (the shared one keeps serving the other tests).
    monkeypatch.setenv("MC_HOME", str(tmp_path / "own-stack"))
    monkeypatch.setenv("MC_MLFLOW_PORT", str(free_port()))
    monkeypatch.setenv("MC_PREFECT_PORT", str(free_port()))
    monkeypatch.setenv("MC_PREFECT_WORKER_PORT", str(free_port()))
    settings = load_settings()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        rows = stack.up(settings, echo=lambda _: None)
        assert all(r.healthy for r in rows)
        time.sleep(3)  # let the servers spawn their workers, so those are checked too
        ours = []
        for name in ("mlflow", "prefect", "worker"):
            proc = stack._recorded_process(settings, name)
            ours += [proc, *proc.children(recursive=True)]
        assert len(ours) > 2
        assert sorted(stack.down(settings, echo=lambda _: None)) == ["mlflow", "prefect",
                                                                      "worker"]
        assert not [p for p in ours if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert bystander.poll() is None  # not ours: left alone
        assert not any(r.healthy for r in stack.status(settings))
        assert not list(settings.stack_dir.glob("*.pid"))
        assert stack.down(settings, echo=lambda _: None) == []
    finally:
        stack.down(settings, echo=lambda _: None)
        bystander.kill()
