"""The serving chart's Argo Rollouts canary (helm/motioncontrol, `rollouts.*`), rendered with
the real Helm engine and checked without a cluster:

- every rendered `Rollout` and `AnalysisTemplate` validates against the CRD schemas of Argo
  Rollouts (tests/schemas/argo-rollouts/, SOURCE.md), strictly (tests/crd_schema.py): unknown
  fields are refused except where the CRD preserves them; the Rollout's pod template and the
  probe's Job also validate against the official Kubernetes schemas;
- the steps, routes, Services, HPA, PDB, NetworkPolicy and analysis follow the values;
- the analysis's success/failure conditions never pass a measurement without canary data;
- `rollouts.enabled=false` renders the plain Deployments and no Argo kinds.
"""

from __future__ import annotations

import copy
import math
import re

import jsonschema
import kubernetes_validate
import pytest

from deploy import charts
from tests import crd_schema
from tests.argo_expr import judge
from tests.unit.deploy.test_helm_charts import KUBE_VERSION, value_sets, values_of

CRD_SCHEMAS = {"Rollout": "rollout.json", "AnalysisTemplate": "analysistemplate.json"}
METRICS = ("error-rate", "p99-latency", "request-count")


def validator(kind: str) -> jsonschema.Draft7Validator:
    return crd_schema.validator(f"argo-rollouts/{CRD_SCHEMAS[kind]}")


def render(values: dict | None = None, *, release: str = "mc",
           namespace: str = "mc-test") -> dict[tuple[str, str], dict]:
    objects = charts.manifests("motioncontrol", values or {}, release=release,
                               namespace=namespace)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def with_rollouts(**rollouts) -> dict:
    return {"rollouts": rollouts}


# --- the CRD schemas --------------------------------------------------------------------

# Value sets that reach every branch of the Argo templates.
EXTRA_VALUES = {
    "no-probe": with_rollouts(probe={"enabled": False, "requests": 1}),
    "no-gateway-no-hpa": {"gateway": {"enabled": False}, "autoscaling": {"enabled": False}},
    "gate-one-step": with_rollouts(steps=[25], manualGate=True, analysis={"model": ""}),
}


def all_value_sets() -> list[tuple[str, dict]]:
    sets = [(name, values_of(chart, name)) for chart, name in value_sets()
            if chart == "motioncontrol"]
    return sets + list(EXTRA_VALUES.items())


def test_strict_schema_refuses_unknown_fields_and_takes_int_or_string():
    rollout = render()["Rollout", "mc"]
    check = validator("Rollout")
    assert not list(check.iter_errors(rollout))
    typo = copy.deepcopy(rollout)
    typo["spec"]["strategy"]["canary"]["step"] = typo["spec"]["strategy"]["canary"].pop("steps")
    assert [e.message for e in check.iter_errors(typo)] == [
        "Additional properties are not allowed ('step' was unexpected)"]
    bad_pod = copy.deepcopy(rollout)
    bad_pod["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert list(check.iter_errors(bad_pod))
    # pause durations are int-or-string; the plugin's config is preserved as is
    numeric = copy.deepcopy(rollout)
    numeric["spec"]["strategy"]["canary"]["steps"][1]["pause"]["duration"] = 120
    numeric["spec"]["strategy"]["canary"]["trafficRouting"]["plugins"]["x"] = {"any": 1}
    assert not list(check.iter_errors(numeric))
    numeric["spec"]["strategy"]["canary"]["steps"][1]["pause"]["duration"] = 1.5
    assert list(check.iter_errors(numeric))


@pytest.mark.parametrize("name, values", all_value_sets(), ids=lambda v: v if isinstance(v, str) else "")
def test_argo_objects_validate_against_the_crd_schemas(name, values):
    objects = render(values)
    argo = [o for o in objects.values() if o["apiVersion"].startswith("argoproj.io/")]
    if values.get("rollouts", {}).get("enabled", True) is False:
        assert argo == []
        return
    assert {o["kind"] for o in argo} == {"Rollout", "AnalysisTemplate"}
    for obj in argo:
        assert crd_schema.errors(validator(obj["kind"]), obj) == [], (
            obj["kind"], obj["metadata"]["name"])
    # the parts that are core Kubernetes types, against the official schemas
    rollout = objects["Rollout", "mc"]
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                  "metadata": {"name": "t"},
                                  "template": rollout["spec"]["template"]},
                                 KUBE_VERSION, strict=True)
    for template in (o for o in argo if o["kind"] == "AnalysisTemplate"):
        for metric in template["spec"]["metrics"]:
            if "job" in metric["provider"]:
                kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job",
                                              "metadata": {"name": "probe"},
                                              **metric["provider"]["job"]},
                                             KUBE_VERSION, strict=True)


# --- the Rollout ------------------------------------------------------------------------


def steps_of(values: dict | None = None) -> list[dict]:
    return render(values)["Rollout", "mc"]["spec"]["strategy"]["canary"]["steps"]


def test_default_steps_weight_soak_probe_then_analysis():
    analysis = {"analysis": {"templates": [{"templateName": "mc-analysis"}]}}
    probe = {"analysis": {"templates": [{"templateName": "mc-probe"}]}}
    assert steps_of() == [
        {"setWeight": 10}, {"pause": {"duration": "2m"}}, probe, analysis,
        {"setWeight": 50}, {"pause": {"duration": "2m"}}, probe, analysis,
    ]


def test_steps_follow_the_values_and_the_gate_is_there_only_when_asked():
    steps = steps_of(with_rollouts(steps=[5, 25, 60], soak="7m", manualGate=True))
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [5, 25, 60]
    assert [s["pause"] for s in steps if "pause" in s] == [{"duration": "7m"}] * 3 + [{}]
    assert steps[-1] == {"pause": {}}  # the indefinite pause, right before 100 %
    assert sum(1 for s in steps if "analysis" in s) == 6
    assert {"pause": {}} not in steps_of(with_rollouts(manualGate=False))
    no_probe = steps_of(with_rollouts(probe={"enabled": False, "requests": 1}))
    assert [s["analysis"]["templates"] for s in no_probe if "analysis" in s] == [
        [{"templateName": "mc-analysis"}]] * 2


def test_steps_must_climb_below_100():
    with pytest.raises(charts.ChartError, match="increasing"):
        render(with_rollouts(steps=[50, 10]))
    with pytest.raises(charts.ChartError, match="maximum"):
        render(with_rollouts(steps=[10, 100]))


def test_rollout_serves_version_and_routes_name_both_services():
    objects = render({"version": "7"}, release="prod", namespace="serving")
    rollout = objects["Rollout", "prod"]
    canary = rollout["spec"]["strategy"]["canary"]
    assert (canary["stableService"], canary["canaryService"]) == ("prod-stable", "prod-canary")
    assert canary["trafficRouting"]["plugins"] == {"argoproj-labs/gatewayAPI": {
        "httpRoutes": [{"name": "prod-http"}], "grpcRoutes": [{"name": "prod-grpc"}],
        "namespace": "serving"}}
    for kind, name in (("HTTPRoute", "prod-http"), ("GRPCRoute", "prod-grpc")):
        refs = objects[kind, name]["spec"]["rules"][0]["backendRefs"]
        # both Services on each route, all traffic on stable at rest: the plugin moves it
        assert {r["name"]: r["weight"] for r in refs} == {"prod-stable": 100, "prod-canary": 0}
    template = rollout["spec"]["template"]
    assert template["metadata"]["labels"]["motioncontrol.dev/model-version"] == "7"
    [fetch] = template["spec"]["initContainers"]
    assert fetch["command"][fetch["command"].index("--version") + 1] == "7"
    selector = rollout["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    # the Services select the Rollout's pods (Argo adds the pod-template hash to each)
    for track in ("stable", "canary"):
        service = objects["Service", f"prod-{track}"]
        assert service["spec"]["selector"] == selector
        assert service["metadata"]["labels"]["motioncontrol.dev/track"] == track
    assert not [k for k in objects if k[0] == "Deployment"]


def test_one_pod_template_for_the_rollout_and_the_deployments():
    rollout = render({"version": "3"})["Rollout", "mc"]["spec"]["template"]
    deployment = render({"version": "3", "rollouts": {"enabled": False}})[
        "Deployment", "mc-stable"]["spec"]["template"]
    assert rollout["spec"] == deployment["spec"]
    labels = dict(deployment["metadata"]["labels"])
    assert labels.pop("motioncontrol.dev/track") == "stable"
    assert rollout["metadata"]["labels"] == labels


@pytest.mark.parametrize("enabled, kind, api_version, names", [
    (True, "Rollout", "argoproj.io/v1alpha1", ["mc"]),
    (False, "Deployment", "apps/v1", ["mc-stable"]),
])
def test_hpa_and_pdb_target_the_workload(enabled, kind, api_version, names):
    objects = render({"rollouts": {"enabled": enabled}})
    hpas = [o for (k, _), o in objects.items() if k == "HorizontalPodAutoscaler"]
    assert [h["spec"]["scaleTargetRef"] for h in hpas] == [
        {"apiVersion": api_version, "kind": kind, "name": name} for name in names]
    assert all((kind, h["spec"]["scaleTargetRef"]["name"]) in objects for h in hpas)
    pdbs = [o for (k, _), o in objects.items() if k == "PodDisruptionBudget"]
    assert [p["metadata"]["name"] for p in pdbs] == names
    workload = objects[kind, names[0]]
    assert pdbs[0]["spec"]["selector"]["matchLabels"].items() <= \
        workload["spec"]["template"]["metadata"]["labels"].items()
    assert "replicas" not in workload["spec"]  # the HPA's
    fixed = render({"rollouts": {"enabled": enabled}, "replicas": 5,
                    "autoscaling": {"enabled": False}})
    assert fixed[kind, names[0]]["spec"]["replicas"] == 5
    assert not [k for k in fixed if k[0] == "HorizontalPodAutoscaler"]


def test_fallback_renders_deployments_and_no_argo_kinds():
    objects = render(values_of("motioncontrol", "canary-values.yaml"))
    assert not [o for o in objects.values() if o["apiVersion"].startswith("argoproj.io/")]
    assert {n for k, n in objects if k == "Deployment"} == {"mc-stable", "mc-canary"}
    stable = objects["Deployment", "mc-stable"]
    assert stable["metadata"]["labels"]["motioncontrol.dev/model-version"] == "3"  # `version`
    assert stable["spec"]["template"]["metadata"]["labels"]["motioncontrol.dev/track"] == "stable"
    # the plain values keep the Deployments' own weights on the routes
    refs = objects["HTTPRoute", "mc-http"]["spec"]["rules"][0]["backendRefs"]
    assert {r["name"]: r["weight"] for r in refs} == {"mc-stable": 50, "mc-canary": 50}
    single = render(values_of("motioncontrol", "fallback-values.yaml"))
    assert {n for k, n in single if k == "Deployment"} == {"mc-stable"}
    assert not [o for o in single.values() if o["apiVersion"].startswith("argoproj.io/")]


def test_the_old_stable_values_are_refused():
    with pytest.raises(charts.ChartError, match="/stable"):
        render({"stable": {"version": "2"}})


def test_servicemonitor_and_networkpolicy_cover_both_tracks_and_the_probe():
    objects = render()
    monitor = objects["ServiceMonitor", "mc"]["spec"]
    for track in ("stable", "canary"):  # Prometheus' `service` label: mc-stable / mc-canary
        service = objects["Service", f"mc-{track}"]
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["endpoints"][0]["port"] == "metrics"
    probe_pod = objects["AnalysisTemplate", "mc-probe"]["spec"]["metrics"][0]["provider"][
        "job"]["spec"]["template"]["metadata"]["labels"]
    policy = objects["NetworkPolicy", "mc"]["spec"]
    # the probe's pods are not Triton pods (whose egress is DNS and MinIO only) ...
    assert not policy["podSelector"]["matchLabels"].items() <= probe_pod.items()
    # ... and may call Triton's gRPC port
    admitted = [rule for rule in policy["ingress"]
                for peer in rule["from"] if "podSelector" in peer
                and peer["podSelector"]["matchLabels"].items() <= probe_pod.items()]
    assert [r["ports"] for r in admitted] == [[{"port": 8001, "protocol": "TCP"}]]
    no_probe = render(with_rollouts(probe={"enabled": False, "requests": 1}))
    assert ("AnalysisTemplate", "mc-probe") not in no_probe
    assert not [r for r in no_probe["NetworkPolicy", "mc"]["spec"]["ingress"]
                if "podSelector" in r["from"][0]]


# --- the analysis -----------------------------------------------------------------------


def metrics_of(objects, name="mc-analysis") -> dict[str, dict]:
    return {m["name"]: m for m in objects["AnalysisTemplate", name]["spec"]["metrics"]}


def test_probe_job_runs_the_serving_image_against_both_tracks():
    objects = render(with_rollouts(probe={"enabled": True, "requests": 7}), release="prod",
                     namespace="serving")
    [probe] = metrics_of(objects, "prod-probe").values()
    assert probe["name"] == "probe"
    job = probe["provider"]["job"]["spec"]
    [container] = job["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "serving.probe",
                                    "--url", "prod-canary:8001", "--url", "prod-stable:8001",
                                    "--requests", "7"]
    assert container["image"] == "ghcr.io/motioncontrol/motioncontrol-serving:0.1.0"
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"


def test_analysis_queries_name_the_release_namespace_and_services():
    metrics = metrics_of(render(release="prod", namespace="serving"), "prod-analysis")
    assert tuple(metrics) == METRICS
    for name, metric in metrics.items():
        prometheus = metric["provider"]["prometheus"]
        assert prometheus["address"] == "http://prometheus-operated.monitoring.svc:9090"
        query = prometheus["query"]
        selectors = re.findall(r"\{([^}]*)\}", query)
        assert selectors and all('namespace="serving"' in s and 'model="motion_control"' in s
                                 for s in selectors), name
        assert 'service="prod-canary"' in query and "[5m]" in query
        # compared with stable (and the canary's series never include stable's pods)
        assert 'service="prod-stable"' in query
        assert "mc-" not in query and "mc-test" not in query
    assert "nv_inference_request_failure" in metrics["error-rate"]["provider"]["prometheus"]["query"]
    assert 'quantile="0.99"' in metrics["p99-latency"]["provider"]["prometheus"]["query"]
    assert "increase(nv_inference_request_success" in \
        metrics["request-count"]["provider"]["prometheus"]["query"]


def test_analysis_limits_and_thresholds_come_from_values():
    analysis = {"interval": "1m", "count": 6, "window": "10m", "failureLimit": 0,
                "inconclusiveLimit": 3, "maxErrorRateIncrease": 0.002,
                "maxP99LatencyRatio": 1.25, "minRequests": 40, "model": "other"}
    metrics = metrics_of(render(with_rollouts(analysis=analysis,
                                              prometheusAddress="http://prom:9090")))
    for metric in metrics.values():
        assert (metric["interval"], metric["count"], metric["failureLimit"],
                metric["inconclusiveLimit"]) == ("1m", 6, 0, 3)
        assert metric["provider"]["prometheus"]["address"] == "http://prom:9090"
        assert "[10m]" in metric["provider"]["prometheus"]["query"]
        assert 'model="other"' in metric["provider"]["prometheus"]["query"]
    assert "0.002" in metrics["error-rate"]["successCondition"]
    assert "1.25" in metrics["p99-latency"]["failureCondition"]
    assert "40" in metrics["request-count"]["successCondition"]


@pytest.mark.parametrize("metric, result, verdict", [
    # canary - stable error rate
    ("error-rate", [0.0], "Successful"), ("error-rate", [0.01], "Successful"),
    ("error-rate", [-0.2], "Successful"), ("error-rate", [0.02], "Failed"),
    ("error-rate", [math.nan], "Inconclusive"), ("error-rate", [], "Inconclusive"),
    # canary p99 / stable p99
    ("p99-latency", [1.0], "Successful"), ("p99-latency", [1.6], "Failed"),
    ("p99-latency", [math.inf], "Failed"),
    ("p99-latency", [math.nan], "Inconclusive"), ("p99-latency", [], "Inconclusive"),
    # canary requests in the window: too few is never a pass, nor a failure by itself
    ("request-count", [20.0], "Successful"), ("request-count", [19.5], "Inconclusive"),
    ("request-count", [0.0], "Inconclusive"), ("request-count", [], "Inconclusive"),
])
def test_no_canary_data_never_passes(metric, result, verdict):
    assert judge(metrics_of(render())[metric], result) == verdict


def test_queries_on_synthetic_series_with_promtool(tmp_path):
    """The rendered PromQL, evaluated by Prometheus' own engine (promtool test rules) on
    series shaped like the ServiceMonitor's: stable pod `a` is behind both Services until the
    first step at 5 min (Argo points the canary Service at stable at rest), canary pod `b`
    from then on. The real Triton + Prometheus test is tests/integration's."""
    import shutil
    import subprocess

    import yaml

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    queries = {name: m["provider"]["prometheus"]["query"] for name, m in metrics_of(render()).items()}
    labels = 'namespace="mc-test",model="motion_control",version="1"'

    def series(name, service, pod, values):
        return {"series": f'{name}{{{labels},service="{service}",instance="{pod}:8002",pod="{pod}"}}',
                "values": values}

    def scenario(canary_failures, canary_p99, canary_requests, expected):
        p99 = "nv_inference_request_summary_us"
        stable = [series("nv_inference_request_success", "mc-stable", "a", "0+10x40"),
                  series("nv_inference_request_failure", "mc-stable", "a", "0+0x40"),
                  series(p99, "mc-stable", "a", "100000x40"),
                  series("nv_inference_request_success", "mc-canary", "a", "0+10x19 stale"),
                  series("nv_inference_request_failure", "mc-canary", "a", "0+0x19 stale"),
                  series(p99, "mc-canary", "a", "100000x19 stale")]
        canary = [series("nv_inference_request_success", "mc-canary", "b", f"_x20 0+{canary_requests}x20"),
                  series("nv_inference_request_failure", "mc-canary", "b", f"_x20 0+{canary_failures}x20"),
                  series(p99, "mc-canary", "b", "_x20 " + " ".join([canary_p99] * 21))]
        for s in stable + canary:  # the quantile label of the summaries
            if s["series"].startswith(p99):
                s["series"] = s["series"].replace("}", ',quantile="0.99"}')
        return {"interval": "15s", "input_series": stable + canary,
                "promql_expr_test": [
                    # NaN never equals itself, in promtool's comparison too: test `x != x`
                    {"expr": f"({queries[name]}) != bool ({queries[name]})", "eval_time": "9m",
                     "exp_samples": [{"labels": "{}", "value": 1}]} if math.isnan(value) else
                    {"expr": queries[name], "eval_time": "9m",
                     "exp_samples": [{"labels": "{}", "value": value}]}
                    for name, value in expected.items()]}

    tests = [  # 16 canary requests (1 per scrape for 4 min); none of stable pod a's
        scenario(0, "110000", 1, {"error-rate": 0, "p99-latency": 1.1, "request-count": 16}),
        scenario(1, "300000", 1, {"error-rate": 0.5, "p99-latency": 3, "request-count": 32}),
        scenario(0, "NaN", 0, {"error-rate": math.nan, "p99-latency": math.nan, "request-count": 0}),
    ]
    spec = tmp_path / "analysis_test.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "15s",
                                    "tests": tests}, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = metrics_of(render())
    assert [judge(metrics[name], [value]) for name, value in
            (("error-rate", 0.5), ("p99-latency", 3.0), ("request-count", 32.0))] == [
        "Failed", "Failed", "Successful"]
