"""The serving chart's Argo Rollouts `Rollout`, as `motionctl canary` sees and steers it.

The controller (Argo Rollouts, in the cluster) owns the canary: it moves the traffic weights
through the Gateway API plugin, runs the chart's AnalysisTemplates at each step and aborts on
a failed analysis. This module only reads its state and sends the same patches as the
`kubectl argo rollouts` plugin (abort, promote, retry), so stopping `motionctl canary` at any
moment changes nothing: the Rollout carries on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploy.errors import CanaryError, ClusterError

GROUP, API_VERSION = "argoproj.io", "v1alpha1"
VERSION_LABEL = "motioncontrol.dev/model-version"


@dataclass
class Measurement:
    metric: str
    phase: str  # Successful, Failed, Inconclusive, Running, Error
    value: str


@dataclass
class Analysis:
    name: str
    phase: str
    measurements: list[Measurement] = field(default_factory=list)


@dataclass
class RolloutState:
    """What the controller reports, in the words an operator uses."""

    phase: str  # Healthy, Progressing, Paused, Degraded
    message: str
    desired_version: str  # what the pod template serves: the canary while one runs
    step: int | None  # index into the canary steps (== steps: all done)
    steps: int
    canary_weight: int
    aborted: bool
    paused: list[str]  # pause reasons, e.g. CanaryPauseStep (a manual gate waits here)
    fully_promoted: bool  # the desired version is the stable one and takes all traffic
    pod_hash: str | None  # of the pod template the controller last saw (status.currentPodHash)
    analyses: list[Analysis] = field(default_factory=list)

    def serves(self, version: int) -> bool:
        """`version` is stable at 100 % and the controller calls the rollout Healthy."""
        return (self.phase == "Healthy" and self.fully_promoted and not self.aborted
                and self.desired_version == str(version))

    @property
    def failed(self) -> bool:
        return self.aborted or self.phase == "Degraded"


def parse_state(rollout: dict, analysis_runs: list[dict]) -> RolloutState:
    """A RolloutState from the Rollout object and its AnalysisRuns (as the API returns them)."""
    spec, status = rollout.get("spec", {}), rollout.get("status", {}) or {}
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    steps = spec.get("strategy", {}).get("canary", {}).get("steps", [])
    weights = (status.get("canary") or {}).get("weights") or {}
    current = status.get("currentPodHash")
    analyses = []
    for run in sorted(analysis_runs, key=lambda r: r["metadata"].get("creationTimestamp", "")):
        run_labels = run["metadata"].get("labels", {})
        if current and run_labels.get("rollouts-pod-template-hash") not in (None, current):
            continue  # an earlier rollout's analysis
        results = (run.get("status") or {}).get("metricResults", [])
        analyses.append(Analysis(
            run["metadata"]["name"], (run.get("status") or {}).get("phase", "Pending"),
            [Measurement(r["name"], m.get("phase", ""), str(m.get("value", "")))
             for r in results for m in r.get("measurements", [])[-1:]]))
    return RolloutState(
        phase=status.get("phase", "Progressing"), message=status.get("message", ""),
        desired_version=str(labels.get(VERSION_LABEL, "")),
        step=status.get("currentStepIndex"), steps=len(steps),
        canary_weight=int((weights.get("canary") or {}).get("weight", 0)),
        aborted=bool(status.get("abort")),
        paused=[c.get("reason", "") for c in status.get("pauseConditions") or []],
        fully_promoted=bool(current) and current == status.get("stableRS"),
        pod_hash=current, analyses=analyses)


class RolloutClient:
    """Reads and patches one Rollout (and lists its AnalysisRuns) with the Kubernetes client."""

    def __init__(self, api_client, name: str, namespace: str) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.name, self.namespace = name, namespace

    def _call(self, what: str, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(GROUP, API_VERSION, self.namespace, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and what == "get":
                raise CanaryError(
                    f"no Rollout {self.name!r} in namespace {self.namespace!r}: install the "
                    "serving chart with rollouts.enabled=true (helm/motioncontrol/README.md) "
                    "and Argo Rollouts in the cluster") from None
            raise ClusterError(f"{what} rollout {self.name}: {exc.reason} ({exc.status})") \
                from None

    def get(self) -> dict:
        return self._call("get", self.api.get_namespaced_custom_object, "rollouts", self.name)

    def state(self) -> RolloutState:
        runs = self._call("list", self.api.list_namespaced_custom_object,
                          "analysisruns")["items"]
        mine = [r for r in runs if any(o.get("kind") == "Rollout" and o.get("name") == self.name
                                       for o in r["metadata"].get("ownerReferences", []))]
        return parse_state(self.get(), mine)

    def _patch_status(self, patch: dict) -> None:
        self._call("patch", self.api.patch_namespaced_custom_object_status, "rollouts",
                   self.name, patch)

    def abort(self) -> None:
        """Back to the stable version at 100 %; the pod template still names the new one."""
        self._patch_status({"status": {"abort": True}})

    def retry(self) -> None:
        """Start an aborted rollout's steps again."""
        self._patch_status({"status": {"abort": False}})

    def promote(self) -> None:
        """Past the current pause (a manual gate): what `kubectl argo rollouts promote` does."""
        rollout = self.get()
        if rollout.get("spec", {}).get("paused"):
            self._call("patch", self.api.patch_namespaced_custom_object, "rollouts", self.name,
                       {"spec": {"paused": False}})
        if (rollout.get("status") or {}).get("pauseConditions"):
            self._patch_status({"status": {"pauseConditions": None}})
        else:  # in the middle of an analysis or a timed pause: on to the next step
            steps = len(rollout["spec"].get("strategy", {}).get("canary", {}).get("steps", []))
            index = min((rollout.get("status") or {}).get("currentStepIndex") or 0, steps)
            self._patch_status({"status": {"pauseConditions": None,
                                           "currentStepIndex": min(index + 1, steps)}})


def state_table(version: int | str, state: RolloutState):
    """One rich table: the rollout's step and weight, then each analysis's latest values."""
    from rich.table import Table

    step = "-" if state.step is None else f"{min(state.step + 1, state.steps)}/{state.steps}"
    table = Table(title=f"rollout of v{version}: {state.phase}"
                  + (" (aborted)" if state.aborted else "")
                  + (f" — {state.message}" if state.message else ""))
    for col in ("step", "canary %", "paused", "analysis", "metric", "value", "result"):
        table.add_column(col)
    paused = ", ".join(state.paused) or "-"
    if not state.analyses:
        table.add_row(step, str(state.canary_weight), paused, "-", "-", "-", "-")
    for i, run in enumerate(state.analyses):
        rows = run.measurements or [Measurement("-", run.phase, "-")]
        for j, m in enumerate(rows):
            first = i == 0 and j == 0
            table.add_row(step if first else "", str(state.canary_weight) if first else "",
                          paused if first else "", run.name if j == 0 else "", m.metric,
                          m.value, _coloured(m.phase))
    return table


def _coloured(phase: str) -> str:
    colour = {"Successful": "green", "Failed": "red", "Error": "red",
              "Inconclusive": "yellow"}.get(phase)
    return f"[{colour}]{phase}[/]" if colour else phase


def rollout_values(base: dict[str, Any], version: int) -> dict[str, Any]:
    """The chart's values that make the Rollout serve `version` (the controller does the rest)."""
    import copy

    values = copy.deepcopy(base)
    values["version"] = str(version)
    values.setdefault("rollouts", {})["enabled"] = True
    return values
