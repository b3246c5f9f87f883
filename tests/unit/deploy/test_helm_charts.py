"""The charts of helm/ and the cluster definitions of infra/, without a cluster:

- render and `helm lint --strict` with the real Helm engine (Helm v4 Go SDK, helm-python),
  for the default values and for the GPU/canary values of each chart's ci/ folder;
- every rendered object validated in strict mode against the official Kubernetes schemas
  (kubernetes-validate), except the kinds of CRDs those schemas do not have (listed below);
- checkov over every rendered manifest (skips justified in helm/.checkov.yaml);
- the values schemas refuse what must never be deployed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deploy import charts
from deploy.errors import ChartError
from flows.settings import REPO_ROOT

KUBE_VERSION = "1.33.0"  # the oldest minor the GPU pools run (EKS standard support)
# CRDs: the official schemas only describe built-in kinds. Gateway API routes, the Prometheus
# operator's ServiceMonitor, Argo Rollouts, Karpenter, Kueue, the Kubeflow PyTorchJob and
# KubeRay's RayCluster are installed by their own projects (infra/README.md,
# docs/kubernetes.md); their fields are checked by the tests that read them (Argo's and
# KubeRay's against their CRD schemas: test_rollout_chart.py, test_raycluster_chart.py).
CRD_KINDS = {"HTTPRoute", "GRPCRoute", "ServiceMonitor", "Rollout", "AnalysisTemplate",
             "NodePool", "EC2NodeClass", "ResourceFlavor", "ClusterQueue", "LocalQueue",
             "PyTorchJob", "RayCluster"}
CHECKOV = REPO_ROOT / ".venv" / "checkov" / "bin" / "checkov"


def value_sets() -> list[tuple[str, str]]:
    """(chart, values file or "default") for the defaults and every ci/*.yaml of a chart."""
    sets = []
    for chart in charts.CHARTS:
        sets.append((chart, "default"))
        sets += [(chart, p.name) for p in sorted((charts.CHARTS_DIR / chart / "ci").glob("*.yaml"))]
    return sets


def values_of(chart: str, name: str) -> dict:
    return {} if name == "default" else yaml.safe_load(
        (charts.CHARTS_DIR / chart / "ci" / name).read_text())


def render(chart: str, name: str) -> list[dict]:
    return charts.manifests(chart, values_of(chart, name), release="mc", namespace="mc-test")


@pytest.mark.parametrize("chart, values", value_sets())
def test_renders_lints_and_validates_strictly(chart, values):
    assert charts.lint(chart, values_of(chart, values)) == []
    objects = render(chart, values)
    assert objects
    built_in = [obj for obj in objects if obj["kind"] not in CRD_KINDS]  # CRDs: see CRD_KINDS
    for obj in built_in:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert len(built_in) >= 6
    # No chart ever renders a Secret: credentials come from existing Secrets only.
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_serving_chart_contents():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render("motioncontrol",
                                                                     "canary-values.yaml")}
    for track in ("stable", "canary"):
        pod = objects["Deployment", f"mc-{track}"]["spec"]["template"]["spec"]
        triton = pod["containers"][0]
        assert triton["resources"]["limits"]["nvidia.com/gpu"] == 2
        assert pod["nodeSelector"]["motioncontrol.dev/pool"] == "gpu-serving"
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert {p["containerPort"] for p in triton["ports"]} == {8000, 8001, 8002}
        assert triton["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        # the project's serving image at the chart's appVersion; the repository fetched
        # into an emptyDir by the init step, with this pod's instance groups
        assert triton["image"] == "ghcr.io/motioncontrol/motioncontrol-serving:0.1.0"
        assert "--model-repository=/models" in triton["args"]
        [fetch] = pod["initContainers"]
        assert fetch["image"] == triton["image"]
        version = "3" if track == "stable" else "4"
        assert fetch["command"] == ["python", "-m", "serving.repository", "fetch", "--version",
                                    version, "--dest", "/models"]
        env = {e["name"]: e.get("value") for e in fetch["env"]}
        assert env["MC_S3_ENDPOINT"] == "minio.motioncontrol-platform.svc.cluster.local:9000"
        assert env["MC_S3_SECURE"] == "false" and env["MC_SERVE__GPU_INSTANCES"] == "1"
        secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in fetch["env"]
                       if "valueFrom" in e}
        assert secret_refs == {"motioncontrol-s3"}
        assert not [e for e in triton.get("env", []) if "valueFrom" in e]  # no keys in Triton
        hpa = objects["HorizontalPodAutoscaler", f"mc-{track}"]["spec"]
        assert hpa["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_time_us"
        assert ("PodDisruptionBudget", f"mc-{track}") in objects
    for kind, name in (("HTTPRoute", "mc-http"), ("GRPCRoute", "mc-grpc")):
        refs = objects[kind, name]["spec"]["rules"][0]["backendRefs"]
        assert {r["name"]: r["weight"] for r in refs} == {"mc-stable": 50, "mc-canary": 50}
    assert ("NetworkPolicy", "mc") in objects and ("ServiceMonitor", "mc") in objects


def test_platform_worker_runs_flows_off_the_gpu_pool():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render("platform", "default")}
    template = json.loads(objects["ConfigMap", "mc-prefect-worker"]["data"]["base-job-template.json"])
    variables = template["variables"]["properties"]
    # flow runs orchestrate on ordinary nodes; only the training pods they submit ask for GPUs
    assert variables["node_selector"]["default"] == {}
    assert variables["gpus"]["default"] == 0
    assert variables["env"]["default"]["MC_KUBE__NAMESPACE"] == "motioncontrol"
    # the training pods a flow run submits run the same platform image as the flow run
    assert variables["env"]["default"]["MC_KUBE__IMAGE"] == variables["image"]["default"] \
        == "ghcr.io/motioncontrol/motioncontrol:0.1.0"
    assert variables["queue"]["default"] == "training"
    manifest = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert manifest["nodeSelector"] == "{{ node_selector }}"  # Prefect fills it per flow run
    mlflow = objects["Deployment", "mc-mlflow"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://$(POSTGRES_USER)")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"] == "s3://motioncontrol/mlartifacts"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "motioncontrol-postgres"
    # the same deployments as `make stack-up` registers, on the chart's Kubernetes pool
    register = objects["Job", "mc-prefect-deployments"]
    assert "post-install" in register["metadata"]["annotations"]["helm.sh/hook"]
    [container] = register["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "motionctl", "deployments", "register", "--pool", "gpu-pool", "--type", "kubernetes",
        "--image", "ghcr.io/motioncontrol/motioncontrol:0.1.0"]
    assert container["image"] == "ghcr.io/motioncontrol/motioncontrol:0.1.0"


@pytest.mark.parametrize("chart, values, complaint", [
    ("motioncontrol", {"canary": {"enabled": True, "weight": 10}}, "/canary/version"),
    ("motioncontrol", {"canary": {"enabled": True, "version": "2", "weight": 120}}, "maximum"),
    ("motioncontrol", {"image": {"repository": "x", "tag": "latest"}}, "/image/tag"),
    ("motioncontrol", {"stable": {"version": "2"}}, "/stable"),  # renamed: `version`
    ("motioncontrol", {"version": "two"}, "/version"),
    ("motioncontrol", {"rollouts": {"steps": [10, 100]}}, "/rollouts/steps/1"),
    ("motioncontrol", {"rollouts": {"analysis": {"minRequests": 0}}}, "minRequests"),
    ("motioncontrol", {"rollouts": {"analysis": {"maxErrorRate": 0.1}}}, "maxErrorRate"),
    ("motioncontrol", {"modelRepository": {"secretKey": "s3cr3t"}}, "secretKey"),
    ("platform", {"secrets": {"s3": "a", "postgres": "b", "password": "s3cr3t"}}, "password"),
])
def test_schemas_refuse_bad_values(chart, values, complaint):
    with pytest.raises(ChartError, match=complaint):
        charts.render(chart, values, release="mc", namespace="mc-test")


def checkov_passes(directory: Path) -> dict:
    """Run checkov with the charts' config over the manifests in `directory`, assert that no
    check failed, and return its summary (counts of passed, skipped, resources)."""
    assert CHECKOV.exists(), (f"checkov is not installed at {CHECKOV}; `make setup` creates "
                              "its own venv there (scripts/setup.sh)")
    proc = subprocess.run([str(CHECKOV), "-d", str(directory), "--config-file",
                           str(charts.CHARTS_DIR / ".checkov.yaml"), "-o", "json"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    failed = [] if isinstance(report, list) else report["results"]["failed_checks"]
    assert proc.returncode == 0 and summary["failed"] == 0, [
        (f["check_id"], f["resource"]) for f in failed]
    return summary


def test_checkov_passes_on_every_rendered_manifest(tmp_path):
    for chart, values in value_sets():
        out = tmp_path / f"{chart}-{values}"
        out.write_text(charts.as_yaml(render(chart, values)))
    assert checkov_passes(tmp_path)["passed"] > 500


def test_infra_definitions():
    """infra/: YAML that parses, CRD kinds only (listed in CRD_KINDS, so not schema-checked
    here), the pool labels the charts select, and Kueue queues that match the settings."""
    docs = [doc for path in sorted((REPO_ROOT / "infra").rglob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    kinds = {doc.get("kind") for doc in docs if "apiVersion" in doc and "kind" in doc}
    assert {"NodePool", "EC2NodeClass", "ClusterQueue", "LocalQueue", "Cluster"} <= kinds
    pools = {d["spec"]["template"]["metadata"]["labels"]["motioncontrol.dev/pool"]
             for d in docs if d.get("kind") == "NodePool"}
    assert pools == {"gpu-serving", "gpu-training"}
    queues = {d["metadata"]["name"] for d in docs if d.get("kind") == "LocalQueue"}
    from flows.settings import load_settings

    assert queues == {load_settings().kube.training_queue}
    for doc in docs:
        if doc.get("kind") in CRD_KINDS | {"Cluster"} or "kind" not in doc:
            continue  # CRDs, the kind cluster config and Helm values files
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_rendered_training_job_validates_strictly():
    """The PyTorchJob is a CRD, but its pod template is a core PodTemplateSpec: validate that."""
    from deploy.training_job import build_training_job
    from flows.settings import load_settings

    config_map, job = build_training_job(load_settings(), json.dumps({"stage": 2, "run_id": "r"}),
                                         namespace="mc", image="img:1", nodes=3,
                                         gpus_per_node=8)
    kubernetes_validate.validate(config_map, KUBE_VERSION, strict=True)
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "t"}, "template": spec["template"]},
                                     KUBE_VERSION, strict=True)
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2


def test_dry_run_prints_steps_and_manifests(tmp_path, monkeypatch):
    from io import StringIO

    from rich.console import Console

    from deploy.canary import run_canary
    from flows.settings import load_settings

    def plan() -> str:
        out = StringIO()
        assert run_canary(load_settings(), 5, dry_run=True,
                          console=Console(file=out, width=200)) is None
        return out.getvalue()

    text = plan()  # the chart's default: Argo Rollouts runs the steps
    assert "Argo Rollouts" in text and "Healthy at 100 %" in text
    assert "kind: Rollout" in text and "kind: AnalysisTemplate" in text
    assert "model-repository/5" in text and "motioncontrol.dev/model-version: '5'" in text
    assert "kind: Deployment" not in text

    values = tmp_path / "values.yaml"  # a cluster without Argo: this command steps the tracks
    values.write_text("rollouts: {enabled: false}\nversion: '4'\n")
    monkeypatch.setenv("MC_KUBE__VALUES_FILE", str(values))
    text = plan()
    assert "canary at 10 %" in text and "canary at 100 %" in text and "promote" in text
    assert "kind: HTTPRoute" in text and "weight: 90" in text and "weight: 10" in text
    assert "kind: Rollout" not in text and "model-repository/5" in text
