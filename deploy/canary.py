"""`motionctl canary`: roll a new model version out onto the Triton serving chart
(helm/motioncontrol), two ways, one entry point:

- **Argo Rollouts** (the chart's default, `rollouts.enabled`): the chart's `Rollout` owns the
  canary. This command builds and uploads the version's model repository, sets the chart's
  `version`, then follows the Rollout's own status (deploy/rollout.py): the controller moves
  the Gateway API weights, runs the AnalysisTemplates (canary vs stable) and aborts on a
  failed analysis. Stopping the command changes nothing; `--status`, `--abort`, `--promote`
  (past a manual gate) and `--retry` act on the Rollout as the kubectl plugin does.
- **Without Argo** (`rollouts.enabled=false`): this command steps the chart's two tracks
  itself, analysing the canary with Prometheus at each weight:

    canary track at weight w₁ ─► soak, analyse (error rate, p99 latency, request count; a
    probe of the canary) ─► w₂ … ─► 100 % ─► stable track = new version, canary off ───
    or, at the first failed gate: roll back (canary weight 0, off).

Shared by both: the repository build, the release (Helm SDK, or the chart rendered and applied
object by object: `AppliedRelease`), and the end: `champion` moves in MLflow only when the new
version serves all traffic *and* passes `motionctl promote`'s gates (flows/promote.py). A
version that fails those gates is refused before anything is rolled out.
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
from deploy.rollout import RolloutClient, RolloutState, rollout_values, state_table
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

    def values(self, promql: str) -> list[float]:
        """An instant query's values: a scalar's one, a vector's in order (what Argo's
        prometheus provider hands an AnalysisTemplate's conditions as `result`)."""
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
            return [float(data["result"][1])]
        return [float(sample["value"][1]) for sample in data["result"]]

    def scalar(self, promql: str) -> float | None:
        """The first value; None when the result is empty."""
        values = self.values(promql)
        return values[0] if values else None


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
    def apply(self, values: dict[str, Any], wait: bool = True) -> None: ...


class HelmRelease:
    """`helm upgrade --install` of the chart through the Helm SDK; `wait`: until the objects
    are ready (not with Argo Rollouts: its canary takes as long as its steps do)."""

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

    def apply(self, values: dict[str, Any], wait: bool = True) -> None:
        import helm_python as helm

        chart = charts.chart_path(CHART)
        how = {"wait": "watcher", "timeout": 900} if wait else {}
        try:
            if self.current_values() is None:
                self.config.install(chart, self.name, values, namespace=self.namespace, **how)
            else:
                self.config.upgrade(chart, self.name, values, namespace=self.namespace, **how,
                                    rollback_on_failure=wait)
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

    def apply(self, values: dict[str, Any], wait: bool = True) -> None:
        """`wait` is ignored: nothing here waits for readiness (no controller runs it)."""
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


# --- shared by both ways ----------------------------------------------------------------


@dataclass
class CanaryResult:
    version: int
    promoted: bool  # serves all traffic and is champion
    verdicts: list[StepVerdict] = field(default_factory=list)  # without Argo: each step's
    repository: str = ""
    reason: str = ""  # why it was not promoted


def uses_rollouts(values: dict[str, Any]) -> bool:
    """The chart's default is the Argo Rollouts Rollout; rollouts.enabled=false the tracks."""
    return bool(values.get("rollouts", {}).get("enabled", True))


def failed_gates(settings: Settings, version: int) -> str:
    """The `motionctl promote` gates (flows/promote.py) that `version` fails, as one line;
    empty when it passes them all."""
    from flows.promote import check_gates

    return "; ".join(f"{g.name}: {g.detail}" for g in check_gates(settings, version)
                     if not g.passed)


def refuse_ungated(settings: Settings, version: int) -> None:
    """A version that would not be promoted is not rolled out either."""
    if failed := failed_gates(settings, version):
        raise CanaryError(f"{STUDENT_MODEL} v{version} fails the promotion gates, so it is not "
                          f"rolled out: {failed}")


def move_champion(settings: Settings, version: int, console) -> bool:
    """`champion` = version, only if the gates pass now (the champion may have moved since)."""
    from flows.registry import set_alias

    if failed := failed_gates(settings, version):
        console.print(f"[red]v{version} serves all traffic but fails the promotion gates; "
                      f"{STUDENT_MODEL}@champion is unchanged[/]: {failed}")
        return False
    previous = set_alias(settings, STUDENT_MODEL, "champion", version)
    console.print(f"[green]promoted[/]: v{version} serves all traffic and is "
                  f"{STUDENT_MODEL}@champion (was v{previous})")
    return True


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
    """What the stable track serves (without Argo): the release's values, else the champion."""
    if values and str(values.get("version", "")).isdigit():
        return int(values["version"])
    from flows.registry import alias_version

    return alias_version(settings, STUDENT_MODEL, "champion")


def print_plan(settings: Settings, version: int, console) -> None:
    """DRY_RUN: the steps and the rendered manifests, without a cluster or a build."""
    kube = settings.kube
    base = _base_values(settings)
    console.print(f"canary plan: {STUDENT_MODEL} v{version}, release {kube.release} in "
                  f"namespace {kube.namespace}", soft_wrap=True)
    steps = [f"check {STUDENT_MODEL} v{version} against `motionctl promote`'s gates",
             f"build and upload model-repository/{version}/ (serving.repository)"]
    if uses_rollouts(base):
        values = rollout_values(base, version)
        steps += [f"set the chart's version to {version}: Argo Rollouts runs the Rollout's "
                  "canary steps and analyses (values rollouts.*)",
                  f"follow the Rollout every {kube.poll_s:g} s until it is Healthy at 100 %",
                  f"then {STUDENT_MODEL}@champion = v{version}; on an abort: champion unchanged"]
    else:
        stable = _stable_version(settings, base) or max(version - 1, 1)
        values = track_values(base, stable=stable, canary=version, weight=kube.canary_weights[0])
        steps += [f"canary at {w} %, wait {kube.step_wait_s:g} s, analyse the last "
                  f"{kube.analysis_window} (error rate <= {kube.max_error_rate:.2%}, p99 <= "
                  f"{kube.max_p99_latency_ms:g} ms, >= {kube.min_requests} requests) and probe"
                  for w in kube.canary_weights]
        steps += [f"promote: stable = v{version}, canary off, MLflow {STUDENT_MODEL}@champion "
                  f"= v{version}", "on any failed gate: canary weight 0 and off; champion "
                  "unchanged"]
    for i, step in enumerate(steps, 1):
        console.print(f"  {i}. {step}", soft_wrap=True)
    console.print("\n# manifests" + ("" if uses_rollouts(base) else " at the first step"))
    console.print(charts.as_yaml(charts.manifests(CHART, values, release=kube.release,
                                                  namespace=kube.namespace)),
                  markup=False, highlight=False, soft_wrap=True)


def run_canary(settings: Settings, version: int, *, dry_run: bool = False,
               build_and_upload: Callable[[Settings, int], str] | None = None,
               probe: Callable[[Settings, int], ProbeResult] | None = None,
               release: Release | None = None, prometheus: Prometheus | None = None,
               rollout: RolloutClient | None = None,
               sleep: Callable[[float], None] = time.sleep, console=None) -> CanaryResult | None:
    """Roll `version` of motioncontrol-student out (Argo Rollouts, or the tracks without it)
    and make it champion when it serves all traffic. Returns None on a dry run."""
    from rich.console import Console

    console = console or Console()
    if dry_run:
        print_plan(settings, version, console)
        return None
    release = release or HelmRelease(settings)
    build_and_upload = build_and_upload or default_build_and_upload
    current = release.current_values()
    base = current if current is not None else _base_values(settings)
    if uses_rollouts(base):
        rollout = rollout or rollout_client(settings)
        return run_rollout(settings, version, base, current is not None, release, rollout,
                           build_and_upload, sleep, console)
    return run_stepped(settings, version, current, base, release, build_and_upload,
                       probe or default_probe, prometheus or Prometheus(settings.kube.prometheus_url),
                       sleep, console)


# --- with Argo Rollouts -------------------------------------------------------------------


def rollout_client(settings: Settings) -> RolloutClient:
    from deploy.kube import api_client

    return RolloutClient(api_client(settings), settings.kube.release, settings.kube.namespace)


def run_rollout(settings: Settings, version: int, base: dict[str, Any], installed: bool,
                release: Release, rollout: RolloutClient, build_and_upload, sleep,
                console) -> CanaryResult:
    """Start (or pick up, after an interrupted command) the Rollout of `version` and follow
    it to its end."""
    state = rollout.state() if installed else None
    result = CanaryResult(version, False)
    stale = None  # the status the controller wrote before it saw the new version
    if state is not None and state.serves(version):
        console.print(f"v{version} already serves all traffic (Rollout Healthy)")
    elif state is not None and state.desired_version == str(version) and not state.failed:
        console.print(f"v{version} is already rolling out; following it")
    else:
        refuse_ungated(settings, version)
        result.repository = build_and_upload(settings, version)
        console.print(f"model repository of v{version}: {result.repository}")
        release.apply(rollout_values(base, version), wait=False)
        stale = state.pod_hash if state is not None else None
        console.print(f"the Rollout now serves v{version} as its canary; Argo Rollouts runs "
                      "the steps (Ctrl-C stops following, not the rollout)")
    state = follow(settings, version, rollout, sleep, console, stale_hash=stale)
    if state is None:
        result.reason = "stopped following; the rollout carries on (motionctl canary --status)"
    elif not ended(state, version, stale):
        result.reason = (f"still {state.phase} after {settings.kube.rollout_timeout_s:g} s; the "
                         "rollout carries on (motionctl canary --status)")
        console.print(result.reason)
    elif state.failed:
        result.reason = f"aborted by Argo Rollouts: {state.message or 'analysis failed'}"
        console.print(f"[red]rolled back[/]: {result.reason}; the stable version serves all "
                      f"traffic and {STUDENT_MODEL}@champion is unchanged. Fix, then "
                      "`motionctl canary --retry`, or roll out another version.")
    else:
        result.promoted = move_champion(settings, version, console)
        if not result.promoted:
            result.reason = "fails the promotion gates"
    return result


def ended(state: RolloutState, version: int, stale_hash: str | None) -> bool:
    """The rollout of `version` is over: it serves all traffic, or it failed. A status whose
    pod hash is `stale_hash` predates the new version (the controller has not reconciled it
    yet), so it says nothing about this rollout (an earlier abort included)."""
    fresh = stale_hash is None or state.pod_hash != stale_hash
    return fresh and (state.serves(version) or state.failed)


def follow(settings: Settings, version: int, rollout: RolloutClient, sleep, console,
           stale_hash: str | None = None) -> RolloutState | None:
    """Poll the Rollout with a live table until the rollout of `version` has `ended` or the
    timeout passes; None when the user stops following (Ctrl-C)."""
    from rich.live import Live

    deadline = time.monotonic() + settings.kube.rollout_timeout_s
    told_gate = False
    state = rollout.state()
    try:
        with Live(state_table(version, state), console=console, auto_refresh=False) as live:
            while not (ended(state, version, stale_hash) or time.monotonic() > deadline):
                if "CanaryPauseStep" in state.paused and not told_gate:
                    live.console.print("paused at a manual gate: `motionctl canary --promote` "
                                       "goes on, `motionctl canary --abort` rolls back")
                    told_gate = True
                sleep(settings.kube.poll_s)
                state = rollout.state()
                live.update(state_table(version, state), refresh=True)
        console.print()
    except KeyboardInterrupt:
        console.print(f"stopped following; the Rollout of v{version} carries on under Argo "
                      "Rollouts: `motionctl canary --status`")
        return None
    return state


def rollout_action(settings: Settings, action: str, console=None,
                   rollout: RolloutClient | None = None) -> RolloutState:
    """--status / --abort / --promote / --retry on the release's Rollout; prints its state."""
    from rich.console import Console

    console = console or Console()
    rollout = rollout or rollout_client(settings)
    if action != "status":
        getattr(rollout, action)()
        console.print(f"rollout {rollout.name!r}: {action} sent")
    state = rollout.state()
    console.print(state_table(state.desired_version, state))
    return state


# --- without Argo Rollouts: the tracks, stepped by this command ----------------------------


def track_values(base: dict[str, Any], *, stable: int, canary: int | None = None,
                 weight: int = 0) -> dict[str, Any]:
    """`base` with the tracks set: canary off when `canary` is None."""
    values = copy.deepcopy(base)
    values["version"] = str(stable)
    values.setdefault("rollouts", {})["enabled"] = False
    values["canary"] = {**values.get("canary", {}), "enabled": canary is not None,
                        "version": "" if canary is None else str(canary),
                        "weight": weight if canary is not None else 0}
    return values


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


def run_stepped(settings: Settings, version: int, current: dict[str, Any] | None,
                base: dict[str, Any], release: Release, build_and_upload, probe,
                prometheus: Prometheus, sleep, console) -> CanaryResult:
    """Step the canary track through MC_KUBE__CANARY_WEIGHTS, analysing each step."""
    kube = settings.kube
    stable = _stable_version(settings, current)
    if stable is None:
        raise CanaryError("nothing serves yet (no release values, no champion alias): install "
                          "the first version with `helm install` (see README, Deploy on "
                          "Kubernetes)")
    if stable == version:
        raise CanaryError(f"v{version} is already the stable version")
    refuse_ungated(settings, version)

    repository = build_and_upload(settings, version)
    console.print(f"model repository of v{version}: {repository}")
    result = CanaryResult(version, False, repository=repository)
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
            result.reason = verdict.reason
            console.print(f"[red]rolled back[/]: v{version} off, stable v{stable} takes all "
                          f"traffic ({verdict.reason})")
            return result
    # The stable track rolls to the new version while the canary still takes all traffic,
    # then the canary goes away: no request meets the old version again.
    release.apply(track_values(base, stable=version, canary=version, weight=100))
    release.apply(track_values(base, stable=version))
    result.promoted = move_champion(settings, version, console)
    return result
