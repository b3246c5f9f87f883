"""The rollout analysis for real: the PromQL of the chart's AnalysisTemplate (rendered by
deploy.charts for release "mc" in namespace "mc-test", its window sized to the load),
evaluated by a real Prometheus (Debian's `prometheus`) scraping real tritonservers under the
probe's load, must pass a good canary and fail a bad one.

Three `motionctl serve` processes for the module, started together (each start costs ~40 s
and ~1.5 GB): "stable" and a good "canary" serve the same tiny student; a bad "canary" serves
the same repository with the student made to raise on every request. Two Prometheus
servers on loopback, one per case, scrape stable + one canary each. On a cluster the chart's
ServiceMonitor gives every series the labels `namespace` and `service` (the stable and
canary Services of the Rollout); here static scrape targets carry the same labels for
release "mc" in namespace "mc-test", which is all that stands in. serving.probe then sends
valid requests round-robin over the tracks, and each metric's query is evaluated through
Prometheus's HTTP API and judged by its successCondition / failureCondition
(tests/argo_expr.py: the forms of Argo's expr language the template uses).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from deploy import charts
from deploy.canary import Prometheus as PrometheusAPI
from flows.errors import MotionControlError
from serving.repository import build_and_upload, fetch_repository
from serving.tritonserver import find_triton
from tests.argo_expr import judge
from tests.conftest import free_port
from tests.integration.served import (
    REPO_ROOT,
    serving_env,
    settings_of,
    start_serving,
    stop_all,
)
from tests.tiny_models import publish_tiny_student

try:
    find_triton()
except MotionControlError as exc:
    pytest.skip(f"tritonserver is not installed ({exc})", allow_module_level=True)

RELEASE, NAMESPACE = "mc", "mc-test"
METRICS = ("error-rate", "p99-latency", "request-count")
REQUESTS = 10  # per track: a bounded load; also the template's minRequests (all are scraped)
FRAMES = 9  # the tiny student's window, the probe's clip length (serving.probe.FRAMES)
SERVER_ENV = {
    # SmolLM2 rewrites every prompt: a few tokens keep each request short on CPU
    "MC_SERVE__PROMPT_MAX_NEW_TOKENS": "8",
}
SCRAPE_INTERVAL_S = 1


# --- the analysis templates -----------------------------------------------------------------


def analysis_values(window: str) -> dict:
    return {"rollouts": {"analysis": {"window": window, "minRequests": REQUESTS}}}


def analysis_metrics(window: str) -> dict[str, dict]:
    """The metrics of the chart's AnalysisTemplate(s), by name, for release mc in mc-test."""
    objects = charts.manifests("motioncontrol", analysis_values(window), release=RELEASE,
                               namespace=NAMESPACE)
    metrics = {m["name"]: m for o in objects if o["kind"] == "AnalysisTemplate"
               for m in o["spec"]["metrics"]}
    assert set(METRICS) <= set(metrics), sorted(metrics)
    return {name: metrics[name] for name in METRICS}


def query_of(metric: dict) -> str:
    query = metric["provider"]["prometheus"]["query"]
    assert "{{" not in query, f"an unrendered template argument in {query!r}"
    return query


# --- Prometheus ------------------------------------------------------------------------------


class Prometheus:
    """Debian's prometheus on loopback, scraping Triton metrics ports with the labels the
    chart's ServiceMonitor would give them, in its own storage folder."""

    def __init__(self, folder: Path, targets: dict[str, str]):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                       "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
            "scrape_configs": [{"job_name": "triton", "static_configs": [
                {"targets": [address], "labels": {"namespace": NAMESPACE, "service": service}}
                for service, address in targets.items()]}],
        }
        folder.mkdir(parents=True)
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus",
             f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout_s: float = 30) -> Prometheus:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_text()
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout_s} s:\n{self.log_text()}")

    def query(self, promql: str) -> list[float]:
        """An instant query's values, as Argo's prometheus provider hands them to `result`
        (through the same HTTP API reader as `motionctl canary` without Argo)."""
        return PrometheusAPI(self.url).values(promql)

    def wait_for_counts(self, expected: dict[str, int], timeout_s: float = 30) -> None:
        """Until the scraped request counters of each service reach the expected totals."""
        promql = ('sum by (service) (nv_inference_request_success{model="motion_control"}) + '
                  'sum by (service) (nv_inference_request_failure{model="motion_control"})')
        deadline = time.monotonic() + timeout_s
        while True:
            body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql},
                             timeout=15).json()
            seen = {s["metric"]["service"]: float(s["value"][1]) for s in body["data"]["result"]}
            if all(seen.get(k, 0) >= v for k, v in expected.items()):
                return
            assert time.monotonic() < deadline, f"scraped counts {seen}, expected {expected}"
            time.sleep(SCRAPE_INTERVAL_S)

    def log_text(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


# --- servers, load and measurements ----------------------------------------------------------


def make_student_fail(repository: Path) -> None:
    """The student raises on every request: a broken new model version. Triton answers each
    request with an error, counted by nv_inference_request_failure."""
    model = repository / "student_dit" / "1" / "model.py"
    model.write_text(model.read_text() + '''

class TritonPythonModel(TritonPythonModel):  # noqa: F811 - the failing canary of the test
    def stream(self, inputs):
        raise RuntimeError("a deliberately failing canary")
''')


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """{"stable", "good-canary", "bad-canary"}: three `motionctl serve` processes."""
    home = tmp_path_factory.mktemp("analysis-home")
    publisher = settings_of({"MC_HOME": str(home / "registry")})
    with pytest.MonkeyPatch.context() as mp:  # MLflow and the store read MC_HOME
        mp.setenv("MC_HOME", str(publisher.home))
        version, _ = publish_tiny_student(publisher, frames=FRAMES)
        build_and_upload(publisher)
    good = fetch_repository(publisher, version, home / "repository-good")
    bad = home / "repository-bad"
    shutil.copytree(good, bad)
    make_student_fail(bad)
    repositories = {"stable": good, "good-canary": good, "bad-canary": bad}
    started = {}
    try:
        for name, repository in repositories.items():  # all start, then all load at once
            env = {**serving_env(home / name), **SERVER_ENV}
            started[name] = start_serving(repository, env, version)
        yield {name: served.wait_ready() for name, served in started.items()}
    finally:
        stop_all(list(started.values()))


@pytest.fixture(scope="module")
def analysis(servers, tmp_path_factory):
    """Both cases measured: {"good" | "bad": (probe results, {metric: (values, verdict)})}."""
    folder = tmp_path_factory.mktemp("prometheus")
    stable = servers["stable"].metrics_address
    prometheus = {
        case: Prometheus(folder / case, {f"{RELEASE}-stable": stable,
                                         f"{RELEASE}-canary": servers[f"{case}-canary"]
                                         .metrics_address})
        for case in ("good", "bad")}
    try:
        for server in prometheus.values():
            server.wait_ready()
        time.sleep(3 * SCRAPE_INTERVAL_S)  # every counter scraped at zero before the load
        start = time.monotonic()
        probes = run_probes(servers)
        elapsed = time.monotonic() - start
        prometheus["good"].wait_for_counts({f"{RELEASE}-stable": REQUESTS,
                                            f"{RELEASE}-canary": REQUESTS})
        prometheus["bad"].wait_for_counts({f"{RELEASE}-canary": REQUESTS})
        # the template's range covers the whole load (whole minutes, as an operator sets it)
        window = f"{math.ceil((elapsed + 20) / 60)}m"
        metrics = analysis_metrics(window)
        results = {}
        for case, server in prometheus.items():
            results[case] = {}
            for name, metric in metrics.items():
                values = server.query(query_of(metric))
                results[case][name] = (values, judge(metric, values))
        print(f"\nload {elapsed:.0f} s, window {window}")
        for case in results:
            for name, (values, verdict) in results[case].items():
                print(f"{case} canary {name}: {values} -> {verdict}")
        yield probes, results
    finally:
        for server in prometheus.values():
            server.stop()


def probe(*urls: str) -> subprocess.Popen:
    args = [arg for url in urls for arg in ("--url", url)]
    return subprocess.Popen(
        [sys.executable, "-m", "serving.probe", *args, "--requests", str(REQUESTS),
         "--timeout", "120"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def run_probes(servers) -> dict[str, subprocess.CompletedProcess]:
    """The probe as the rollout's Job runs it: stable and the good canary in one run (side
    by side, so their latencies are comparable), the bad canary in another at the same time."""
    runs = {"good": probe(servers["good-canary"].grpc_url, servers["stable"].grpc_url),
            "bad": probe(servers["bad-canary"].grpc_url)}
    results = {}
    for case, process in runs.items():
        out, _ = process.communicate(timeout=600)
        results[case] = subprocess.CompletedProcess(process.args, process.returncode, out)
    return results


# --- the tests -------------------------------------------------------------------------------


def test_the_good_canary_passes_every_metric(analysis, servers):
    probes, results = analysis
    assert probes["good"].returncode == 0, probes["good"].stdout
    lines = probes["good"].stdout.strip().splitlines()
    assert len(lines) == 2, lines  # one line per URL
    for url in (servers["good-canary"].grpc_url, servers["stable"].grpc_url):
        assert any(line.startswith(f"{url}: {REQUESTS}/{REQUESTS} ok, 0 failed")
                   for line in lines), lines
    verdicts = {name: verdict for name, (_, verdict) in results["good"].items()}
    assert verdicts == dict.fromkeys(METRICS, "Successful"), results["good"]


def test_the_bad_canary_fails_the_error_rate(analysis, servers):
    probes, results = analysis
    assert probes["bad"].returncode == 1, probes["bad"].stdout
    line = probes["bad"].stdout.strip()
    assert line.startswith(f"{servers['bad-canary'].grpc_url}: 0/{REQUESTS} ok, "
                           f"{REQUESTS} failed"), line
    assert "a deliberately failing canary" in line, line
    values, verdict = results["bad"]["error-rate"]
    assert verdict == "Failed", results["bad"]
    assert values[0] == pytest.approx(1.0), values  # every canary request failed, none of stable's
    # it was measured: enough requests reached the canary for a verdict
    assert results["bad"]["request-count"][1] == "Successful", results["bad"]
