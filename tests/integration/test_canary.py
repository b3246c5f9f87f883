"""The canary controller end to end without a cluster:

- the cluster is kmock's Kubernetes API emulator on loopback (no cluster can run here); the
  chart is rendered by the real Helm engine and applied with the official client;
- Prometheus is a tiny HTTP server on loopback answering the controller's PromQL with scripted
  numbers, through the real Prometheus HTTP API shape (`/api/v1/query`);
- MLflow is real (embedded SQLite under MC_HOME): promotion moves `champion`;
- FAKES: only the model-repository build/upload and the evaluation probe are injected, because
  `serving.repository` is being written in parallel by the serving issue.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow import MlflowClient
from rich.console import Console

from deploy.canary import AppliedRelease, ProbeResult, Prometheus, run_canary, track_values
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


@pytest.fixture
def cluster(kube, monkeypatch):
    """Stable v1 serving on the emulated cluster, champion = v1 in a real (SQLite) MLflow."""
    monkeypatch.setenv("MC_KUBE__STEP_WAIT_S", "0")
    monkeypatch.setenv("MC_KUBE__MIN_REQUESTS", "50")
    settings = load_settings()
    tracking.connect(settings)  # point mlflow at the embedded SQLite under MC_HOME
    client = MlflowClient()
    client.create_registered_model(STUDENT_MODEL)
    for version in (1, 2):  # registry entries only: the weights are not what is tested here
        weights_dir = settings.home / f"student-v{version}"
        weights_dir.mkdir(parents=True)
        client.create_model_version(STUDENT_MODEL, source=weights_dir.as_uri())
    registry.set_alias(settings, STUDENT_MODEL, "champion", 1)
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
