"""`motionctl canary` end to end without a cluster, both ways (deploy/canary.py):

- the cluster is kmock's Kubernetes API emulator on loopback (no cluster can run here); the
  chart is rendered by the real Helm engine and applied with the official client;
- with Argo Rollouts: no controller can run here, so the test plays Argo Rollouts' part
  (`ScriptedController`): it writes the Rollout's status and AnalysisRuns through the API, as
  the controller would, while the command follows them. What Argo's analysis itself decides is
  tested against a real Prometheus and real tritonservers in test_rollout_analysis.py;
- without Argo: Prometheus is a tiny HTTP server on loopback answering the command's PromQL
  with scripted numbers, through the real Prometheus HTTP API shape (`/api/v1/query`);
- MLflow is real (embedded SQLite under MC_HOME): the promotion gates read real evaluation
  tags and promotion moves `champion`;
- FAKES: the model-repository build/upload (tested for real in test_serving.py) and, without
  Argo, the canary probe are injected.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow import MlflowClient
from rich.console import Console

from deploy.canary import (
    AppliedRelease,
    ProbeResult,
    Prometheus,
    rollout_action,
    run_canary,
    track_values,
)
from deploy.errors import CanaryError
from deploy.rollout import RolloutClient, rollout_values
from flows import registry, tracking
from flows.settings import STUDENT_MODEL, load_settings

NS, RELEASE = "motioncontrol", "motioncontrol"
ROUTES = {"gateway.networking.k8s.io/v1/httproutes": f"{RELEASE}-http",
          "gateway.networking.k8s.io/v1/grpcroutes": f"{RELEASE}-grpc"}
HEALTHY = {"requests": 400, "failures": 1, "p99_us": 2_500_000}  # 0.25 %, 2.5 s


class ScriptedPrometheus:
    """Answers /api/v1/query from `steps`: one dict of numbers per analysis, in order."""

    def __init__(self, steps: list[dict]) -> None:
        self.steps, self.queries = steps, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
                outer.queries.append(query)
                analysis = sum("nv_inference_request_success" in q for q in outer.queries) - 1
                numbers = outer.steps[min(analysis, len(outer.steps) - 1)]
                key = ("requests" if "nv_inference_request_success" in query else
                       "p99_us" if "quantile" in query else "failures")
                body = {"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [1700000000.0, str(numbers[key])]}]}}
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# What `motionctl evaluate` tags on a version, read by the promotion gates: v2 beats the
# champion v1 and the static reference; v3 loses to the static reference.
EVALUATIONS = {
    1: {"eval.ssim": "0.70", "eval.pose_pck": "0.40", "eval.latency_s": "2.0"},
    2: {"eval.ssim": "0.74", "eval.pose_pck": "0.45", "eval.latency_s": "2.0"},
    3: {"eval.ssim": "0.60", "eval.pose_pck": "0.20", "eval.latency_s": "2.0"},
}
STATIC = {"eval.static.ssim": "0.71", "eval.static.pose_pck": "0.42"}


def registry_with_champion(monkeypatch):
    """A real (SQLite) MLflow with evaluated versions 1-3, champion = v1."""
    monkeypatch.setenv("MC_KUBE__STEP_WAIT_S", "0")
    monkeypatch.setenv("MC_KUBE__POLL_S", "0.01")
    monkeypatch.setenv("MC_KUBE__MIN_REQUESTS", "50")
    settings = load_settings()
    tracking.connect(settings)  # point mlflow at the embedded SQLite under MC_HOME
    client = MlflowClient()
    client.create_registered_model(STUDENT_MODEL)
    for version, metrics in EVALUATIONS.items():  # the weights are not what is tested here
        weights_dir = settings.home / f"student-v{version}"
        weights_dir.mkdir(parents=True)
        client.create_model_version(STUDENT_MODEL, source=weights_dir.as_uri(),
                                    tags={**metrics, **STATIC})
    registry.set_alias(settings, STUDENT_MODEL, "champion", 1)
    return settings


@pytest.fixture
def cluster(kube, monkeypatch):
    """Without Argo: stable v1 serving on the emulated cluster's two-track chart."""
    settings = registry_with_champion(monkeypatch)
    release = AppliedRelease(settings, kube.api_client())
    release.apply(track_values({}, stable=1))
    return settings, release


def weights(kube, route: str) -> list[dict[str, int]]:
    """Each version of a route as {backend: weight}, oldest first."""
    return [{ref["name"]: ref["weight"] for ref in v["spec"]["rules"][0]["backendRefs"]}
            for v in kube.history(route, NS, ROUTES[route])]


def rollout(settings, release, prometheus_steps, probe_ok=True):
    built, probed = [], []
    prometheus = ScriptedPrometheus(prometheus_steps)
    out = io.StringIO()
    try:
        result = run_canary(
            settings, 2, release=release, prometheus=Prometheus(prometheus.url),
            build_and_upload=lambda s, v: built.append(v) or f"s3://motioncontrol/model-repository/{v}/",
            probe=lambda s, v: probed.append(v) or ProbeResult(probe_ok, "scripted"),
            sleep=lambda s: None, console=Console(file=out, width=200))
    finally:
        prometheus.close()
    assert built == [2]
    return result, prometheus.queries, out.getvalue()


def deployment(kube, track):
    return kube.object("apps/v1/deployments", NS, f"{RELEASE}-{track}")


def test_promote(kube, cluster):
    settings, release = cluster
    result, queries, output = rollout(settings, release, [HEALTHY] * 3)

    assert result.promoted and [v.weight for v in result.verdicts] == [10, 50, 100]
    assert all(v.passed for v in result.verdicts)
    assert result.verdicts[0].error_rate == pytest.approx(1 / 400)
    assert result.verdicts[0].p99_ms == pytest.approx(2500)
    assert all(f'service="{RELEASE}-canary"' in q for q in queries)
    for route in ROUTES:
        canary = f"{RELEASE}-canary"
        assert weights(kube, route) == [
            {f"{RELEASE}-stable": 100},
            {f"{RELEASE}-stable": 90, canary: 10},
            {f"{RELEASE}-stable": 50, canary: 50},
            {f"{RELEASE}-stable": 0, canary: 100},
            {f"{RELEASE}-stable": 0, canary: 100},  # stable rolls to v2 under no traffic
            {f"{RELEASE}-stable": 100},
        ]
    stable = deployment(kube, "stable")
    assert stable["metadata"]["labels"]["motioncontrol.dev/model-version"] == "2"
    # the pod's init step fetches version 2's repository for Triton
    [fetch] = stable["spec"]["template"]["spec"]["initContainers"]
    assert fetch["command"][-4:] == ["--version", "2", "--dest", "/models"]
    assert deployment(kube, "canary") is None  # the canary track is gone
    assert kube.object("v1/services", NS, f"{RELEASE}-canary") is None
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 2
    assert "promoted" in output and "advance" in output


@pytest.mark.parametrize("failing_step, numbers, reason", [
    (2, {"requests": 400, "failures": 20, "p99_us": 2_000_000}, "error rate 5.00% > 1.00%"),
    (1, {"requests": 400, "failures": 0, "p99_us": 45_000_000}, "p99 45000 ms > 30000 ms"),
])
def test_rollback(kube, cluster, failing_step, numbers, reason):
    settings, release = cluster
    steps = [HEALTHY] * (failing_step - 1) + [numbers]
    result, _, output = rollout(settings, release, steps)

    assert not result.promoted
    assert len(result.verdicts) == failing_step
    assert result.verdicts[-1].reason == reason
    history = weights(kube, next(iter(ROUTES)))
    assert history[-1] == {f"{RELEASE}-stable": 100}  # all traffic back on the stable track
    assert len(history) == failing_step + 2  # install, each canary step, the rollback
    assert deployment(kube, "canary") is None
    assert deployment(kube, "stable")["metadata"]["labels"]["motioncontrol.dev/model-version"] == "1"
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 1  # unchanged
    assert "rolled back" in output and reason in output


def test_failed_probe_rolls_back(kube, cluster):
    settings, release = cluster
    result, _, _ = rollout(settings, release, [HEALTHY], probe_ok=False)
    assert not result.promoted and result.verdicts[0].reason == "probe failed: scripted"
    assert deployment(kube, "canary") is None


def test_missing_builder_is_one_clear_line(monkeypatch):
    import sys

    from deploy.canary import default_build_and_upload
    from deploy.errors import CanaryError

    monkeypatch.setitem(sys.modules, "serving.repository", None)  # as if not written yet
    with pytest.raises(CanaryError, match="serving model-repository builder is missing"):
        default_build_and_upload(load_settings(), 2)


def test_a_version_that_fails_the_gates_is_not_rolled_out(kube, cluster):
    settings, release = cluster
    with pytest.raises(CanaryError, match="fails the promotion gates.*static reference"):
        run_canary(settings, 3, release=release, build_and_upload=lambda s, v: pytest.fail(
            "built a version the gates refuse"), console=Console(file=io.StringIO()))
    assert deployment(kube, "canary") is None


# --- with Argo Rollouts -----------------------------------------------------------------------

ROLLOUT = "argoproj.io/v1alpha1/rollouts"


class ScriptedController:
    """Plays Argo Rollouts: each time the command waits (its `sleep`), the next status in
    `script` is written to the Rollout through the API, with an AnalysisRun when the entry
    has `analysis` ({metric: (phase, value)}), as the controller would write them."""

    def __init__(self, kube, script: list[dict]) -> None:
        self.kube, self.script, self.calls = kube, list(script), 0
        self.api = RolloutClient(kube.api_client(), RELEASE, NS).api

    def write(self, status: dict, analysis: dict | None = None) -> None:
        self.api.patch_namespaced_custom_object_status(
            "argoproj.io", "v1alpha1", NS, "rollouts", RELEASE, {"status": status})
        if analysis:
            name = f"{RELEASE}-{status['currentPodHash']}-{status.get('currentStepIndex', 0)}"
            run = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
                   "metadata": {"name": name, "namespace": NS,
                                "labels": {"rollouts-pod-template-hash": status["currentPodHash"]},
                                "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1",
                                                     "kind": "Rollout", "name": RELEASE,
                                                     "uid": "u1"}]},
                   "spec": {"metrics": []},
                   "status": {"phase": "Running" if any(p == "Running" for p, _ in
                                                        analysis.values()) else "Successful",
                              "metricResults": [{"name": metric, "measurements": [
                                  {"phase": phase, "value": value}]}
                                  for metric, (phase, value) in analysis.items()]}}
            self.api.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS,
                                                     "analysisruns", run)

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        if self.script:
            step = self.script.pop(0)
            if step == "interrupt":
                raise KeyboardInterrupt
            self.write(**step)


def healthy(pod_hash: str) -> dict:
    return {"status": {"phase": "Healthy", "currentPodHash": pod_hash, "stableRS": pod_hash,
                       "currentStepIndex": 5, "canary": {"weights": {"canary": {"weight": 0}}}}}


def progressing(step: int, weight: int, **analysis) -> dict:
    return {"status": {"phase": "Progressing", "currentPodHash": "h2", "stableRS": "h1",
                       "currentStepIndex": step,
                       "canary": {"weights": {"canary": {"weight": weight}}}},
            "analysis": analysis or None}


@pytest.fixture
def argo(kube, monkeypatch):
    """With Argo: the chart's Rollout serving v1 (Healthy), champion = v1."""
    settings = registry_with_champion(monkeypatch)
    release = AppliedRelease(settings, kube.api_client())
    release.apply(rollout_values({}, 1))
    ScriptedController(kube, []).write(**healthy("h1"))
    return settings, release, RolloutClient(kube.api_client(), RELEASE, NS)


def roll(settings, release, rollout, controller, version=2):
    built, out = [], io.StringIO()
    result = run_canary(settings, version, release=release, rollout=rollout, sleep=controller,
                        build_and_upload=lambda s, v: built.append(v) or f"model-repository/{v}/",
                        console=Console(file=out, width=200))
    return result, built, out.getvalue()


def served_version(kube) -> tuple[str, list[str]]:
    """The Rollout's pod template: its version label and what its init step fetches."""
    template = kube.object(ROLLOUT, NS, RELEASE)["spec"]["template"]
    [fetch] = template["spec"]["initContainers"]
    return template["metadata"]["labels"]["motioncontrol.dev/model-version"], fetch["command"]


def test_rollout_is_followed_to_healthy_then_champion_moves(kube, argo):
    settings, release, rollout = argo
    ok = {"error-rate": ("Successful", "[0]"), "p99-latency": ("Successful", "[1.02]"),
          "request-count": ("Successful", "[40]")}
    controller = ScriptedController(kube, [
        progressing(1, 10), progressing(2, 10, **ok), progressing(4, 50, **ok),
        healthy("h2")])
    result, built, output = roll(settings, release, rollout, controller)

    assert result.promoted and built == [2]
    version, fetch = served_version(kube)
    assert version == "2" and fetch[-4:] == ["--version", "2", "--dest", "/models"]
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 2
    # the live table showed the analyses' measurements as the controller wrote them
    assert "error-rate" in output and "1.02" in output and "Healthy" in output
    # the command only changed the chart's version: weights are the controller's business
    assert not kube.object(ROLLOUT, NS, RELEASE)["status"].get("abort")


def test_an_aborted_rollout_leaves_champion_where_it_was(kube, argo):
    settings, release, rollout = argo
    failed = {"error-rate": ("Failed", "[0.35]")}
    controller = ScriptedController(kube, [progressing(1, 10, **failed), {"status": {
        "phase": "Degraded", "abort": True, "currentPodHash": "h2", "stableRS": "h1",
        "message": "RolloutAborted: Metric \"error-rate\" assessed Failed"}}])
    result, _, output = roll(settings, release, rollout, controller)

    assert not result.promoted and "error-rate" in result.reason
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 1
    assert "rolled back" in output and "0.35" in output


def test_stopping_the_command_leaves_the_rollout_in_charge(kube, argo):
    settings, release, rollout = argo
    result, built, output = roll(settings, release, rollout,
                                 ScriptedController(kube, [progressing(1, 10), "interrupt"]))
    assert not result.promoted and "carries on" in output and built == [2]
    assert served_version(kube)[0] == "2"  # nothing was undone
    assert not kube.object(ROLLOUT, NS, RELEASE)["status"].get("abort")
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 1

    out = io.StringIO()
    state = rollout_action(settings, "status", console=Console(file=out, width=200),
                           rollout=rollout)
    assert state.phase == "Progressing" and state.canary_weight == 10
    assert "Progressing" in out.getvalue()

    # Argo finishes on its own; running the command again picks the rollout up (no rebuild)
    ScriptedController(kube, []).write(**healthy("h2"))
    result, built, _ = roll(settings, release, rollout, ScriptedController(kube, []))
    assert result.promoted and built == []
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 2


def test_manual_gate_abort_promote_and_retry_patch_the_rollout(kube, argo):
    settings, release, rollout = argo
    gate = {"status": {"phase": "Paused", "currentPodHash": "h2", "stableRS": "h1",
                       "currentStepIndex": 6, "pauseConditions": [
                           {"reason": "CanaryPauseStep", "startTime": "2026-12-02T00:00:00Z"}],
                       "canary": {"weights": {"canary": {"weight": 50}}}}}
    controller = ScriptedController(kube, [gate, "interrupt"])
    _, _, output = roll(settings, release, rollout, controller)
    assert "manual gate" in output

    quiet = Console(file=io.StringIO())
    rollout_action(settings, "promote", console=quiet, rollout=rollout)
    assert not kube.object(ROLLOUT, NS, RELEASE)["status"].get("pauseConditions")
    rollout_action(settings, "abort", console=quiet, rollout=rollout)
    assert kube.object(ROLLOUT, NS, RELEASE)["status"]["abort"] is True
    rollout_action(settings, "retry", console=quiet, rollout=rollout)
    assert kube.object(ROLLOUT, NS, RELEASE)["status"]["abort"] is False
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 1


def test_a_healthy_rollout_of_a_version_that_no_longer_passes_the_gates_keeps_champion(
        kube, argo):
    settings, release, rollout = argo

    def reevaluated(seconds):  # v2 is evaluated again while it rolls out, and loses
        MlflowClient().set_model_version_tag(STUDENT_MODEL, "2", "eval.ssim", "0.50")
        ScriptedController(kube, []).write(**healthy("h2"))

    result, built, output = roll(settings, release, rollout, reevaluated)
    assert built == [2] and not result.promoted and result.reason == "fails the promotion gates"
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 1
    assert "champion is unchanged" in output and "static reference" in output


def test_a_status_from_before_the_new_version_is_not_taken_for_its_end(kube, argo,
                                                                       monkeypatch):
    settings, release, rollout = argo
    # the previous rollout was aborted; the controller then never picks the new version up
    ScriptedController(kube, []).write({"phase": "Degraded", "abort": True,
                                        "currentPodHash": "h1", "stableRS": "h1"})
    monkeypatch.setenv("MC_KUBE__ROLLOUT_TIMEOUT_S", "0.05")
    result, built, output = roll(load_settings(), release, rollout,
                                 lambda seconds: time.sleep(0.01))
    assert built == [2] and not result.promoted
    assert result.reason.startswith("still Degraded") and "rolled back" not in output
    assert registry.alias_version(settings, STUDENT_MODEL, "champion") == 1
