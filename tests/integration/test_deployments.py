"""The flows' Prefect deployments on the local stack: `stack up` registers one per flow on the
process work pool `local` and starts a worker for it; a flow run created through Prefect's
REST API (what the UI's "Run" button does) trains a tiny stage on that worker, and its log
lines and artifacts are readable from the same API."""

from __future__ import annotations

import subprocess
import time

import httpx

from flows import stack
from flows.deployments import DEPLOYMENT, LOCAL_POOL, register
from flows.settings import TEACHER_MODEL
from flows.tracking import connect
from tests.integration.conftest import MOTIONCTL
from tests.integration.test_train import FAST

FLOWS = ("curate", "train", "distill", "evaluate", "promote", "pipeline", "doctor")


def post(api: str, path: str, body: dict):
    resp = httpx.post(f"{api}{path}", json=body, timeout=30)
    resp.raise_for_status()
    return resp.json()


def deployment(api: str, flow: str) -> dict:
    resp = httpx.get(f"{api}/deployments/name/{flow}/{DEPLOYMENT}", timeout=30)
    resp.raise_for_status()
    return resp.json()


def run_and_wait(api: str, flow: str, parameters: dict, env: dict, timeout_s: float) -> dict:
    """Create a flow run of `flow`'s deployment through the API and wait for its end."""
    dep = deployment(api, flow)
    run = post(api, f"/deployments/{dep['id']}/create_flow_run",
               {"parameters": parameters, "job_variables": {"env": env}})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=30).json()
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run['id']} still {run['state_type']} after {timeout_s} s")


def run_logs(api: str, run_id: str, until: str = "Finished in state") -> list[str]:
    """The run's log lines; they reach the API in batches, after the run's state, so wait
    (30 s at most) for the line `until`."""
    deadline = time.monotonic() + 30
    while True:
        lines = [log["message"] for log in post(
            api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})]
        if any(until in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(1)


def run_artifacts(api: str, run_id: str) -> dict[str, dict]:
    found = post(api, "/artifacts/filter",
                 {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    return {a["key"]: a for a in found}


def test_every_flow_has_a_typed_deployment_on_the_local_pool(stack_settings):
    api = stack.prefect_api_url(stack_settings)
    for flow in FLOWS:
        dep = deployment(api, flow)
        assert dep["work_pool_name"] == LOCAL_POOL
        assert dep["entrypoint"].startswith("flows.")  # a module path: no code is pulled
    stage = deployment(api, "train")["parameter_openapi_schema"]["properties"]["stage"]
    assert stage["enum"] == [0, 1, 2, 3]  # a choice in the UI's run form, not free JSON
    to = deployment(api, "promote")["parameter_openapi_schema"]["properties"]["to"]
    assert to["enum"] == ["candidate", "champion"]
    workers = post(api, f"/work_pools/{LOCAL_POOL}/workers/filter", {})
    assert [w["status"] for w in workers] == ["ONLINE"]


def test_curation_run_shows_its_summary_in_prefect(curated):
    env, settings, manifest, _ = curated
    api = stack.prefect_api_url(settings)
    runs = post(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["curate"]}}})
    first = min(runs, key=lambda r: r["start_time"] or "~")
    summary = run_artifacts(api, first["id"])["curation"]
    rows = {row["count"]: row["clips"] for row in _table(summary)}
    assert rows["clips kept"] == manifest["counts"]["clips_kept"]
    assert any(key.startswith("dropped by") for key in rows)
    assert any(manifest["digest"] in line for line in run_logs(api, first["id"]))


def test_a_deployment_run_trains_a_stage_on_the_worker(curated):
    env, settings, manifest, _ = curated
    api = stack.prefect_api_url(settings)
    steps = 3
    run = run_and_wait(api, "train", {"stage": 0, "force": True},
                       {**FAST, "MC_TRAIN__STEPS": str(steps)}, timeout_s=900)
    logs = run_logs(api, run["id"])
    assert run["state_type"] == "COMPLETED", logs[-20:]
    # progress lines (not bar redraws), the registration, Prefect's own run lines
    assert any(f"step {steps}/{steps}" in line for line in logs), logs
    registered = [line for line in logs if f"registered {TEACHER_MODEL} version" in line]
    assert len(registered) == 1
    version = registered[0].rsplit(" ", 1)[-1]
    artifacts = run_artifacts(api, run["id"])
    figures = {row["figure"]: row["value"] for row in _table(artifacts["training-stage0"])}
    assert figures["registered"] == f"{TEACHER_MODEL} version {version}"
    assert "loss_total" in figures or any(k.startswith("loss") for k in figures)
    link = artifacts["training-stage0-mlflow-run"]
    # Prefect keeps a link artifact as markdown: [text](url)
    assert f"(http://{settings.stack_host}:{settings.mlflow_port}/" in link["data"]
    # the link is the run that registered the version
    mv = connect(settings).MlflowClient().get_model_version(TEACHER_MODEL, version)
    assert mv.run_id in link["data"]


def _table(artifact: dict) -> list[dict]:
    import json

    assert artifact["type"] == "table"
    data = artifact["data"]
    return json.loads(data) if isinstance(data, str) else data


def test_the_charts_registration_targets_a_kubernetes_pool(stack_settings):
    """What the platform chart's post-install Job runs, here against the stack's server."""
    try:
        proc = subprocess.run([MOTIONCTL, "deployments", "register", "--pool", "k8s-pool",
                               "--type", "kubernetes", "--image", "registry.example/mc:1.2.3"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.count("on work pool k8s-pool") == len(FLOWS)
        api = stack.prefect_api_url(stack_settings)
        pool = httpx.get(f"{api}/work_pools/k8s-pool", timeout=30).json()
        assert pool["type"] == "kubernetes"
        deployments = post(api, "/deployments/filter",
                           {"work_pools": {"name": {"any_": ["k8s-pool"]}}})
        assert len(deployments) == len(FLOWS)
        assert {d["job_variables"]["image"] for d in deployments} == {"registry.example/mc:1.2.3"}
        assert all("working_dir" not in d["job_variables"] for d in deployments)  # a pod's own
    finally:
        # A deployment is (flow, name): registering it on another pool moved it there. On a
        # cluster that is another Prefect server; here, move them back for the other tests.
        stack.register_on(stack_settings, register)
