"""Canary rollout of a new model version onto the Triton serving chart (helm/motioncontrol).

    build + upload the model repository (serving.repository) ─► canary track at weight w₁
    ─► soak, analyse (Prometheus: error rate, p99 latency, request count; a probe of the
       canary) ─► w₂ … ─► 100 % ─► promote: stable track = new version, canary off, MLflow
       alias `champion` ─── or, at the first failed gate: roll back (canary weight 0, off).

Every step is a new set of chart values applied as one release change: through Helm (the
SDK's upgrade) on a real cluster, or by rendering the chart with the same Helm engine and
applying the objects with the Kubernetes client (`AppliedRelease`: clusters without Helm
release storage, and the tests, which run it against an API emulator). The traffic split
itself is the weights of the chart's Gateway API routes.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from deploy import charts
from deploy.errors import CanaryError, ClusterError
from flows.settings import STUDENT_MODEL, Settings

CHART = "motioncontrol"
ENSEMBLE = "motion_control"


# --- the pieces another layer provides -------------------------------------------------


def default_build_and_upload(settings: Settings, version: int) -> str:
    """serving.repository builds the Triton model repository of `version` and uploads it
    under model-repository/<version>/; imported at call time (serving is a layer below)."""
    try:
        from serving.repository import build_and_upload
    except ImportError as exc:
        raise CanaryError(f"the serving model-repository builder is missing ({exc}); it is "
                          "`serving.repository.build_and_upload(settings, version=N)`, from "
                          "the serving issue") from None
    return build_and_upload(settings, version=version)


@dataclass
class ProbeResult:
    ok: bool
    detail: str


def default_probe(settings: Settings, version: int) -> ProbeResult:
    """The canary answers on Triton's HTTP API with the ensemble ready (KServe v2 protocol)."""
    import httpx

    kube = settings.kube
    url = kube.probe_url or f"http://{kube.release}-canary.{kube.namespace}.svc:8000"
    try:
        ready = httpx.get(f"{url}/v2/models/{ENSEMBLE}/ready", timeout=10)
        meta = httpx.get(f"{url}/v2/models/{ENSEMBLE}", timeout=10)
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"{url} unreachable: {exc}")
    if ready.status_code != 200 or meta.status_code != 200:
        return ProbeResult(False, f"{ENSEMBLE} not ready on the canary (HTTP {ready.status_code})")
    return ProbeResult(True, f"{ENSEMBLE} ready, versions {meta.json().get('versions')}")


# --- metrics ---------------------------------------------------------------------------


class Prometheus:
    """Instant queries through the Prometheus HTTP API (/api/v1/query)."""

    def __init__(self, url: str, timeout_s: float = 15.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def scalar(self, promql: str) -> float | None:
        """The value of a one-element vector or a scalar; None when the result is empty."""
        import httpx

        try:
            answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql},
                               timeout=self.timeout_s)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise CanaryError(f"Prometheus at {self.url} did not answer ({exc}); set "
                              "MC_KUBE__PROMETHEUS_URL") from None
        if body.get("status") != "success":
            raise CanaryError(f"Prometheus rejected {promql!r}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        if not data["result"]:
            return None
        return float(data["result"][0]["value"][1])


def canary_queries(settings: Settings) -> dict[str, str]:
    """PromQL over the canary track's Service (the ServiceMonitor labels series `service`)."""
    kube = settings.kube
    sel = f'namespace="{kube.namespace}",service="{kube.release}-canary"'
    w = kube.analysis_window
    return {
        "requests": f"sum(increase(nv_inference_request_success{{{sel}}}[{w}]))"
                    f" + sum(increase(nv_inference_request_failure{{{sel}}}[{w}]))",
        "failures": f"sum(increase(nv_inference_request_failure{{{sel}}}[{w}]))",
        # Triton's latency summaries (--metrics-config summary_latencies=true); quantiles do
        # not add up across pods, so the worst pod counts.
        "p99_us": f'max(nv_inference_request_summary_us{{{sel},quantile="0.99"}})',
    }


@dataclass
class StepVerdict:
    step: int
    weight: int
    requests: float
    error_rate: float | None
    p99_ms: float | None
    probe: ProbeResult
    passed: bool
    reason: str


def analyse(settings: Settings, prometheus: Prometheus, probe: ProbeResult, step: int,
            weight: int) -> StepVerdict:
    """Compare the canary's numbers with the gates of MC_KUBE__*; the reason names the
    first gate that failed."""
    kube, q = settings.kube, canary_queries(settings)
    requests = prometheus.scalar(q["requests"]) or 0.0
    failures = prometheus.scalar(q["failures"]) or 0.0
    p99_us = prometheus.scalar(q["p99_us"])
    error_rate = failures / requests if requests else None
    p99_ms = p99_us / 1000.0 if p99_us is not None else None
    if requests < kube.min_requests:
        reason = f"only {requests:.0f} requests (< MC_KUBE__MIN_REQUESTS={kube.min_requests})"
    elif error_rate > kube.max_error_rate:
        reason = f"error rate {error_rate:.2%} > {kube.max_error_rate:.2%}"
    elif p99_ms is not None and p99_ms > kube.max_p99_latency_ms:
        reason = f"p99 {p99_ms:.0f} ms > {kube.max_p99_latency_ms:.0f} ms"
    elif not probe.ok:
        reason = f"probe failed: {probe.detail}"
    else:
        return StepVerdict(step, weight, requests, error_rate, p99_ms, probe, True, "gates passed")
    return StepVerdict(step, weight, requests, error_rate, p99_ms, probe, False, reason)


# --- how a set of values reaches the cluster -------------------------------------------


class Release(Protocol):
    def current_values(self) -> dict[str, Any] | None: ...
    def apply(self, values: dict[str, Any]) -> None: ...


class HelmRelease:
    """`helm upgrade --install` of the chart through the Helm SDK, waiting for the rollout."""

    def __init__(self, settings: Settings) -> None:
        import helm_python as helm

        self.name, self.namespace = settings.kube.release, settings.kube.namespace
        self.config = helm.Config(kube_context=settings.kube.context, namespace=self.namespace)

    def current_values(self) -> dict[str, Any] | None:
        import helm_python as helm

        try:
            return dict(self.config.get_values(self.name))
        except helm.HelmNotFoundError:
            return None
        except helm.HelmError as exc:
            raise ClusterError(f"helm get values {self.name}: {exc}") from None

    def apply(self, values: dict[str, Any]) -> None:
        import helm_python as helm

        chart = charts.chart_path(CHART)
        try:
            if self.current_values() is None:
                self.config.install(chart, self.name, values, namespace=self.namespace,
                                    wait="watcher", timeout=900)
            else:
                self.config.upgrade(chart, self.name, values, namespace=self.namespace,
                                    wait="watcher", timeout=900, rollback_on_failure=True)
        except helm.HelmError as exc:
            raise ClusterError(f"helm upgrade {self.name}: {str(exc).strip()}") from None


class AppliedRelease:
    """The chart rendered by the Helm engine and applied object by object with the
    Kubernetes client; objects that a new render no longer has (the canary track when it is
    switched off) are deleted. Its values and object list live in one ConfigMap, the way
    Helm keeps a release record."""

    def __init__(self, settings: Settings, api) -> None:
        from deploy.kube import Applier

        self.name, self.namespace = settings.kube.release, settings.kube.namespace
        self.applier = Applier(api)
        self.record_name = f"{self.name}-release"

    def _record(self) -> dict | None:
        record = self.applier.get("v1", "ConfigMap", self.record_name, self.namespace)
        return json.loads(record["data"]["release.json"]) if record else None

    def current_values(self) -> dict[str, Any] | None:
        record = self._record()
        return record["values"] if record else None

    def apply(self, values: dict[str, Any]) -> None:
        objects = charts.manifests(CHART, values, release=self.name, namespace=self.namespace)
        self.applier.apply(objects)
        kept = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects}
        for api_version, kind, name in (self._record() or {}).get("objects", []):
            if (api_version, kind, name) not in kept:
                self.applier.delete(api_version, kind, name, self.namespace)
        self.applier.apply([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.record_name, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/instance": self.name}},
            "data": {"release.json": json.dumps({"values": values,
                                                 "objects": sorted(kept)})}}])


# --- the controller --------------------------------------------------------------------


def track_values(base: dict[str, Any], *, stable: int, canary: int | None = None,
                 weight: int = 0) -> dict[str, Any]:
    """`base` with the tracks set: canary off when `canary` is None."""
    values = copy.deepcopy(base)
    values.setdefault("stable", {})["version"] = str(stable)
    values["canary"] = {**values.get("canary", {}), "enabled": canary is not None,
                        "version": "" if canary is None else str(canary),
                        "weight": weight if canary is not None else 0}
    return values


@dataclass
class CanaryResult:
    version: int
    stable_before: int
    promoted: bool
    verdicts: list[StepVerdict] = field(default_factory=list)
    repository: str = ""


def _verdict_table(version: int, verdicts: list[StepVerdict]):
    from rich.table import Table

    table = Table(title=f"canary of {STUDENT_MODEL} v{version}")
    for col in ("step", "canary %", "requests", "error rate", "p99 ms", "probe", "decision"):
        table.add_column(col)
    for v in verdicts:
        table.add_row(str(v.step), str(v.weight), f"{v.requests:.0f}",
                      "-" if v.error_rate is None else f"{v.error_rate:.2%}",
                      "-" if v.p99_ms is None else f"{v.p99_ms:.0f}",
                      "ok" if v.probe.ok else "failed",
                      ("[green]advance[/] " if v.passed else "[red]roll back[/] ") + v.reason)
    return table


def _base_values(settings: Settings) -> dict[str, Any]:
    import yaml

    path = settings.kube.values_file
    if path is None:
        return {}
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CanaryError(f"cannot read MC_KUBE__VALUES_FILE {path}: {exc}") from None


def _stable_version(settings: Settings, values: dict[str, Any] | None) -> int | None:
    """What the stable track serves: the release's values, else the MLflow champion."""
    if values and str(values.get("stable", {}).get("version", "")).isdigit():
        return int(values["stable"]["version"])
    from flows.registry import alias_version

    return alias_version(settings, STUDENT_MODEL, "champion")


def print_plan(settings: Settings, version: int, console) -> None:
    """DRY_RUN: the steps and the rendered manifests, without a cluster or a build."""
    kube = settings.kube
    base = _base_values(settings)
    stable_given = str(base.get("stable", {}).get("version", "")).isdigit()
    # No cluster and no registry here: without a values file, show the previous version.
    stable = int(base["stable"]["version"]) if stable_given else max(version - 1, 1)
    console.print(f"canary plan: {STUDENT_MODEL} v{version} against stable v{stable}"
                  + ("" if stable_given else " (at run time: the release's stable version)")
                  + f", release {kube.release} in namespace {kube.namespace}", soft_wrap=True)
    steps = [f"build and upload model-repository/{version}/ (serving.repository)"]
    steps += [f"canary at {w} %, wait {kube.step_wait_s:g} s, analyse the last "
              f"{kube.analysis_window} (error rate <= {kube.max_error_rate:.2%}, p99 <= "
              f"{kube.max_p99_latency_ms:g} ms, >= {kube.min_requests} requests) and probe"
              for w in kube.canary_weights]
    steps += [f"promote: stable = v{version}, canary off, MLflow {STUDENT_MODEL}@champion = "
              f"v{version}", "on any failed gate: canary weight 0 and off; champion unchanged"]
    for i, step in enumerate(steps, 1):
        console.print(f"  {i}. {step}", soft_wrap=True)
    first = track_values(base, stable=stable, canary=version, weight=kube.canary_weights[0])
    console.print(f"\n# manifests at the first step ({kube.canary_weights[0]} %)")
    console.print(charts.as_yaml(charts.manifests(CHART, first, release=kube.release,
                                                  namespace=kube.namespace)),
                  markup=False, highlight=False, soft_wrap=True)


def run_canary(settings: Settings, version: int, *, dry_run: bool = False,
               build_and_upload: Callable[[Settings, int], str] | None = None,
               probe: Callable[[Settings, int], ProbeResult] | None = None,
               release: Release | None = None, prometheus: Prometheus | None = None,
               sleep: Callable[[float], None] = time.sleep, console=None) -> CanaryResult | None:
    """Roll `version` of motioncontrol-student out through MC_KUBE__CANARY_WEIGHTS, then
    promote it or roll it back. Returns None on a dry run."""
    from rich.console import Console

    from flows.registry import set_alias

    console = console or Console()
    if dry_run:
        print_plan(settings, version, console)
        return None
    kube = settings.kube
    build_and_upload = build_and_upload or default_build_and_upload
    probe = probe or default_probe
    release = release or HelmRelease(settings)
    prometheus = prometheus or Prometheus(kube.prometheus_url)

    current = release.current_values()
    base = current if current is not None else _base_values(settings)
    stable = _stable_version(settings, current)
    if stable is None:
        raise CanaryError("nothing serves yet (no release values, no champion alias): install "
                          "the first version with `helm install` (see README, Deploy on "
                          "Kubernetes)")
    if stable == version:
        raise CanaryError(f"v{version} is already the stable version")

    repository = build_and_upload(settings, version)
    console.print(f"model repository of v{version}: {repository}")
    result = CanaryResult(version, stable, False, repository=repository)
    for step, weight in enumerate(kube.canary_weights, 1):
        release.apply(track_values(base, stable=stable, canary=version, weight=weight))
        console.print(f"step {step}: canary v{version} at {weight} %; soaking "
                      f"{kube.step_wait_s:g} s")
        sleep(kube.step_wait_s)
        verdict = analyse(settings, prometheus, probe(settings, version), step, weight)
        result.verdicts.append(verdict)
        console.print(_verdict_table(version, result.verdicts))
        if not verdict.passed:
            release.apply(track_values(base, stable=stable))
            console.print(f"[red]rolled back[/]: v{version} off, stable v{stable} takes all "
                          f"traffic ({verdict.reason})")
            return result
    # The stable track rolls to the new version while the canary still takes all traffic,
    # then the canary goes away: no request meets the old version again.
    release.apply(track_values(base, stable=version, canary=version, weight=100))
    release.apply(track_values(base, stable=version))
    previous = set_alias(settings, STUDENT_MODEL, "champion", version)
    result.promoted = True
    console.print(f"[green]promoted[/]: v{version} is stable and {STUDENT_MODEL}@champion "
                  f"(was v{previous if previous is not None else stable})")
    return result
