"""The platform chart's KubeRay `RayCluster` (helm/platform, `ray.*`): the curate flow's Ray
cluster, rendered with the real Helm engine and checked without a cluster:

- with `ray.enabled` (alone, with GPU workers and the autoscaler, without token auth or
  NetworkPolicies) the chart renders and lints; its built-in kinds validate strictly against
  the official schemas, the `RayCluster` against KubeRay's CRD schema (tests/schemas/kuberay/,
  strictly: unknown fields refused) and its pod templates against the official PodTemplate;
  checkov passes on the pods KubeRay makes of them;
- the flow-run pods get the Ray Client address of the head Service KubeRay names after the
  cluster, and the token KubeRay keeps;
- head and workers run the platform image as the chart's other pods run (non-root, read-only
  root, no capabilities), with the flow runs' object-store settings and credentials, resources
  and replicas from the values; GPU workers land on the GPU pool with `nvidia.com/gpu`;
- the NetworkPolicies let the flow-run pods reach the head's client port only, the Ray pods
  reach each other, and nothing else reach the Ray pods;
- with the default values: no RayCluster and no address.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from typing import NamedTuple

import kubernetes_validate
import pytest
import yaml

from deploy import charts
from flows.settings import REPO_ROOT
from tests import crd_schema
from tests.unit.deploy.test_helm_charts import (
    CRD_KINDS,
    KUBE_VERSION,
    checkov_passes,
    values_of,
)

RAYCLUSTER = crd_schema.validator("kuberay/raycluster.json")
CLIENT_PORT = 10001
STORE_SETTINGS = ("MC_PROFILE", "MC_STORE_BACKEND", "MC_S3_ENDPOINT", "MC_S3_BUCKET",
                  "MC_MLFLOW_TRACKING_URI")
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
RAY = {"ray": {"enabled": True}}


def render(values: dict | None = None, *, release: str = "mc",
           namespace: str = "mc-test") -> dict[tuple[str, str], dict]:
    objects = charts.manifests("platform", values or {}, release=release, namespace=namespace)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def raycluster(objects: dict) -> dict:
    [cluster] = [o for (kind, _), o in objects.items() if kind == "RayCluster"]
    return cluster


def groups(cluster: dict) -> dict[str, dict]:
    """Group name -> pod template: the head ("headgroup", KubeRay's name) and each worker group."""
    spec = cluster["spec"]
    return {"headgroup": spec["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]}}


def job_template(objects: dict, release: str = "mc") -> dict:
    """The Prefect work pool's base job template (the flow-run pods)."""
    config = objects["ConfigMap", f"{release}-prefect-worker"]
    return json.loads(config["data"]["base-job-template.json"])


def flow_run_env(objects: dict, release: str = "mc") -> dict[str, str]:
    return job_template(objects, release)["variables"]["properties"]["env"]["default"]


def flow_run_container(objects: dict) -> dict:
    return job_template(objects)["job_configuration"]["job_manifest"]["spec"]["template"][
        "spec"]["containers"][0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- renders, lints, validates ----------------------------------------------------------

VALUE_SETS = {
    "ray": RAY,
    "ci-ray-values": values_of("platform", "ray-values.yaml"),  # GPU workers, autoscaler
    "no-token-no-policy": {"ray": {"enabled": True, "tokenAuth": False},
                           "networkPolicy": {"enabled": False}},
    "gpu-fixed-external-db": {**values_of("platform", "external-db-values.yaml"),
                              "ray": {"enabled": True, "gpuWorkers": {"enabled": True}}},
}


def test_the_ci_values_turn_on_every_ray_branch():
    ray = VALUE_SETS["ci-ray-values"]["ray"]
    assert ray["enabled"] and ray["gpuWorkers"]["enabled"] and ray["autoscaling"]["enabled"]
    assert ray["tokenAuth"]


def test_strict_schema_refuses_unknown_fields_and_wrong_types():
    cluster = raycluster(render(RAY))
    assert crd_schema.errors(RAYCLUSTER, cluster) == []
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][0]["replica"] = typo["spec"]["workerGroupSpecs"][0].pop(
        "replicas")
    assert crd_schema.errors(RAYCLUSTER, typo) == [
        "spec/workerGroupSpecs/0: Additional properties are not allowed ('replica' was "
        "unexpected)"]
    number = copy.deepcopy(cluster)  # rayStartParams is a map of strings
    number["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert crd_schema.errors(RAYCLUSTER, number)
    bad_pod = copy.deepcopy(cluster)
    bad_pod["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "x"
    assert crd_schema.errors(RAYCLUSTER, bad_pod)
    headless = copy.deepcopy(cluster)
    del headless["spec"]["headGroupSpec"]
    assert crd_schema.errors(RAYCLUSTER, headless) == [
        "spec: 'headGroupSpec' is a required property"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_renders_lints_and_validates_strictly(name):
    values = VALUE_SETS[name]
    assert charts.lint("platform", values) == []
    objects = render(values)
    cluster = raycluster(objects)
    assert cluster["apiVersion"] == "ray.io/v1"
    assert crd_schema.errors(RAYCLUSTER, cluster) == []
    for obj in objects.values():
        if obj["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    for template in groups(cluster).values():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "t"}, "template": template},
                                     KUBE_VERSION, strict=True)
    policies = {n for (kind, n) in objects if kind == "NetworkPolicy"}
    expected = {"mc-platform", "mc-ray", "mc-ray-client"}
    assert policies == (set() if name == "no-token-no-policy" else expected)
    assert not [o for o in objects.values() if o["kind"] == "Secret"]  # KubeRay's token: its own


def test_ray_version_is_the_ray_of_the_project():
    """rayVersion must be the Ray in the platform image, installed from the same requirements
    as this environment's."""
    defaults = yaml.safe_load((charts.CHARTS_DIR / "platform" / "values.yaml").read_text())
    assert defaults["ray"]["version"] == importlib.metadata.version("ray") == "2.60.0"
    assert raycluster(render(RAY))["spec"]["rayVersion"] == "2.60.0"


# --- the flow runs' address -------------------------------------------------------------


@pytest.mark.parametrize("release", ["mc", "curation"])
def test_flow_runs_get_the_address_of_the_head_service(release):
    objects = render(RAY, release=release)
    cluster = raycluster(objects)
    # KubeRay names the head Service <cluster>-head-svc unless headService renames it
    assert "headService" not in cluster["spec"]["headGroupSpec"]
    head_service = f"{cluster['metadata']['name']}-head-svc"
    assert head_service == f"{release}-ray-head-svc"
    env = flow_run_env(objects, release)
    assert env["MC_CURATE__RAY_ADDRESS"] == f"ray://{head_service}:{CLIENT_PORT}"
    # the head's container declares that port under KubeRay's name for it (the Service's port)
    head = groups(cluster)["headgroup"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in head["ports"]} == {
        "client": CLIENT_PORT, "gcs-server": 6379, "dashboard": 8265}
    # the flow runs keep everything else they had
    default_env = flow_run_env(render(release=release), release)
    assert {k: v for k, v in env.items() if not k.startswith(("MC_CURATE__", "RAY_"))} == \
        default_env


def test_token_auth_reaches_the_flow_runs():
    objects = render(RAY)
    cluster = raycluster(objects)
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    assert flow_run_env(objects)["RAY_AUTH_MODE"] == "token"
    # KubeRay keeps the token in a Secret named after the cluster (names up to 50 characters
    # are kept as they are), key auth_token
    assert flow_run_container(objects)["env"] == [{"name": "RAY_AUTH_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": cluster["metadata"]["name"], "key": "auth_token"}}}]

    plain = render({"ray": {"enabled": True, "tokenAuth": False}})
    assert "authOptions" not in raycluster(plain)["spec"]
    assert "RAY_AUTH_MODE" not in flow_run_env(plain)
    assert flow_run_container(plain)["env"] == "{{ env }}"  # Prefect's placeholder, untouched
    assert flow_run_env(plain)["MC_CURATE__RAY_ADDRESS"] == "ray://mc-ray-head-svc:10001"


def test_default_values_render_no_raycluster_and_no_address():
    objects = render()
    assert not [k for k in objects if k[0] == "RayCluster" or k[1].startswith("mc-ray")]
    env = flow_run_env(objects)
    assert "MC_CURATE__RAY_ADDRESS" not in env and "RAY_AUTH_MODE" not in env
    assert flow_run_container(objects)["env"] == "{{ env }}"
    assert "MC_KUBE__IMAGE" in env  # the env is there, without the Ray address


def test_a_cluster_name_kuberay_would_shorten_is_refused():
    with pytest.raises(charts.ChartError, match="longer than 50"):
        render(RAY, release="r" * 47)
    render(RAY, release="r" * 46)  # mc-ray at 50 characters: kept as is


@pytest.mark.parametrize("values, complaint", [
    ({"workers": {"replicas": 9}}, "within minReplicas"),
    ({"gpuWorkers": {"minReplicas": 3}}, "within minReplicas"),
    ({"gpuWorkers": {"enabled": True, "gpus": 0}}, "gpus"),
    ({"worker": {"replicas": 2}}, "worker"),  # a typo of `workers`
    ({"version": "latest"}, "version"),
    ({"head": {"resources": {"limits": {"memory": None}}}}, "memory"),  # null drops it
])
def test_bad_ray_values_are_refused(values, complaint):
    with pytest.raises(charts.ChartError, match=complaint):
        render({"ray": {"enabled": True, **values}})


# --- the Ray pods -----------------------------------------------------------------------


def test_ray_pods_follow_the_chart_conventions(monkeypatch):
    head_resources = {"requests": {"cpu": "3", "memory": "12Gi"},
                      "limits": {"cpu": "3", "memory": "12Gi"}}
    workers = {"replicas": 3, "minReplicas": 2, "maxReplicas": 5,
               "resources": {"requests": {"cpu": "6", "memory": "24Gi"},
                             "limits": {"cpu": "6", "memory": "24Gi"}}}
    objects = render({"ray": {"enabled": True, "head": {"resources": head_resources},
                              "workers": workers, "scratchSize": "30Gi"}})
    cluster = raycluster(objects)
    flow_env = flow_run_env(objects)
    mlflow_pod = objects["Deployment", "mc-mlflow"]["spec"]["template"]["spec"]
    [mlflow] = mlflow_pod["containers"]
    assert objects["ServiceAccount", "mc-ray"]["automountServiceAccountToken"] is False
    templates = groups(cluster)
    assert set(templates) == {"headgroup", "cpu"}  # no GPU workers unless asked
    for template in templates.values():
        assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "mc"
        pod = template["spec"]
        assert pod["serviceAccountName"] == "mc-ray"
        assert pod["automountServiceAccountToken"] is False  # no autoscaler: no API calls
        assert pod["securityContext"] == mlflow_pod["securityContext"]  # non-root 10001
        [container] = pod["containers"]
        # the image the flow runs and the training pods run
        assert container["image"] == flow_env["MC_KUBE__IMAGE"] == mlflow["image"]
        assert container["securityContext"] == mlflow["securityContext"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # the writable /tmp (Ray's session folder), sized by the values
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "30Gi"}} in pod["volumes"]
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            assert probe["httpGet"] == {"path": "/api/healthz", "port": 52365}
        # the flow runs' store and MLflow settings, the object store's credentials as MLflow
        # gets them (secrets.s3)
        env = env_of(container)
        assert {k: env[k]["value"] for k in STORE_SETTINGS} == {k: flow_env[k]
                                                                for k in STORE_SETTINGS}
        assert {k: env[k]["valueFrom"] for k in CREDENTIALS} == {
            k: env_of(mlflow)[k]["valueFrom"] for k in CREDENTIALS}
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
        # ... which the settings read as the S3 store of this release
        for name, entry in env.items():
            monkeypatch.setenv(name, entry.get("value", f"secret-{name}"))
        from flows.settings import Settings

        settings = Settings(_env_file=None)
        assert (settings.store_backend, settings.s3_endpoint, settings.s3_bucket) == (
            "s3", "mc-minio:9000", "motioncontrol")
        assert settings.s3_secret_key.get_secret_value() == "secret-AWS_SECRET_ACCESS_KEY"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0"}  # no tasks on the head
    assert head["template"]["spec"]["containers"][0]["resources"] == head_resources
    [cpu] = cluster["spec"]["workerGroupSpecs"]
    assert {k: cpu[k] for k in ("replicas", "minReplicas", "maxReplicas")} == {
        k: workers[k] for k in ("replicas", "minReplicas", "maxReplicas")}
    assert cpu["template"]["spec"]["containers"][0]["resources"] == workers["resources"]
    assert cluster["spec"]["enableInTreeAutoscaling"] is False
    assert "autoscalerOptions" not in cluster["spec"]


def test_the_autoscaler_runs_hardened_beside_the_head():
    objects = render(values_of("platform", "ray-values.yaml"))
    cluster = raycluster(objects)
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    ray_head = spec["headGroupSpec"]["template"]
    assert options["securityContext"] == ray_head["spec"]["containers"][0]["securityContext"]
    assert options["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert options["idleTimeoutSeconds"] == 120
    assert options["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    # the sidecar needs the API token (KubeRay binds its Role to the head's account); only it
    assert ray_head["spec"]["automountServiceAccountToken"] is True
    assert "CKV_K8S_38" in ray_head["metadata"]["annotations"]["checkov.io/skip1"]
    for name, template in groups(cluster).items():
        if name != "headgroup":
            assert template["spec"]["automountServiceAccountToken"] is False


def nodepools() -> dict[str, dict]:
    docs = yaml.safe_load_all((REPO_ROOT / "infra" / "karpenter" / "gpu-nodepools.yaml")
                              .read_text())
    return {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "NodePool"}


def tolerated(taint: dict, tolerations: list[dict]) -> bool:
    return any(t["key"] == taint["key"] and t.get("effect") in (None, taint["effect"])
               and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
               for t in tolerations)


def test_gpu_workers_land_on_the_gpu_pool_with_their_gpus():
    objects = render({"ray": {"enabled": True, "gpuWorkers": {"enabled": True, "gpus": 2}}})
    templates = groups(raycluster(objects))
    assert set(templates) == {"headgroup", "cpu", "gpu"}
    gpu = templates["gpu"]["spec"]
    [container] = gpu["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    # the Karpenter pool that carries the selected labels, and each of its taints tolerated
    [pool] = [p for p in nodepools().values()
              if gpu["nodeSelector"].items() <= p["spec"]["template"]["metadata"]["labels"].items()]
    assert pool["metadata"]["name"] == "gpu-training"
    taints = pool["spec"]["template"]["spec"]["taints"]
    assert taints and all(tolerated(t, gpu["tolerations"]) for t in taints)
    # the CPU workers and the head stay off the GPU pools
    for name in ("headgroup", "cpu"):
        pod = templates[name]["spec"]
        assert "nodeSelector" not in pod and "tolerations" not in pod
        assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]


# --- the NetworkPolicies ----------------------------------------------------------------


class Pod(NamedTuple):
    labels: dict
    namespace: str = "mc-test"


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if ((op == "In" and labels.get(key) not in values)
                or (op == "NotIn" and key in labels and labels[key] in values)
                or (op == "Exists" and key not in labels)
                or (op == "DoesNotExist" and key in labels)):
            return False
    return True


def admitted(policies: list[dict], source: Pod, target: Pod, port: int) -> bool:
    """NetworkPolicy ingress as Kubernetes reads it: a pod that no policy selects takes every
    connection; a selected one takes those that some rule of a selecting policy allows."""
    selecting = [p for p in policies if p["metadata"]["namespace"] == target.namespace
                 and "Ingress" in p["spec"]["policyTypes"]
                 and selects(p["spec"]["podSelector"], target.labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and port not in [p["port"] for p in rule["ports"]]:
                continue
            for peer in rule.get("from", [{}]):
                if "namespaceSelector" in peer:
                    namespace_ok = selects(peer["namespaceSelector"],
                                           {"kubernetes.io/metadata.name": source.namespace})
                else:
                    namespace_ok = source.namespace == policy["metadata"]["namespace"]
                if namespace_ok and selects(peer.get("podSelector", {}), source.labels):
                    return True
    return False


def test_flow_runs_reach_the_head_client_port_and_ray_pods_each_other_only():
    objects = render(RAY)
    policies = [o for o in objects.values() if o["kind"] == "NetworkPolicy"]
    cluster = raycluster(objects)
    templates = groups(cluster)

    def ray_pod(group: str) -> Pod:  # the labels KubeRay adds to the template's (labelPod)
        return Pod({**templates[group]["metadata"]["labels"],
                    "ray.io/cluster": cluster["metadata"]["name"], "ray.io/group": group,
                    "ray.io/node-type": "head" if group == "headgroup" else "worker"})

    head, worker = ray_pod("headgroup"), ray_pod("cpu")
    flow_labels = job_template(objects)["job_configuration"]["job_manifest"]["spec"][
        "template"]["metadata"]["labels"]
    flow_run = Pod({**flow_labels, "prefect.io/flow-run-id": "1234"})  # Prefect adds its own
    mlflow = Pod(objects["Deployment", "mc-mlflow"]["spec"]["template"]["metadata"]["labels"])
    minio = Pod(objects["StatefulSet", "mc-minio"]["spec"]["template"]["metadata"]["labels"])
    neighbour = Pod({"app": "something-else"})
    training = Pod({}, namespace="motioncontrol")  # a client namespace of the platform

    assert admitted(policies, flow_run, head, CLIENT_PORT)
    for port in (6379, 8265, 52365):
        assert not admitted(policies, flow_run, head, port)
    for port in (CLIENT_PORT, 10002, 6379):
        assert not admitted(policies, flow_run, worker, port)
    for source in (mlflow, neighbour, training):
        assert not admitted(policies, source, head, CLIENT_PORT)
        assert not admitted(policies, source, worker, 10002)
    # Ray among itself, on any port
    for port in (6379, 8076, 10002, 52365):
        assert admitted(policies, worker, head, port) and admitted(policies, head, worker, port)
    # ... and the Ray pods still reach the store and MLflow, like the flow runs
    for source in (worker, head, flow_run):
        assert admitted(policies, source, minio, 9000)
        assert admitted(policies, source, mlflow, 5000)
    assert admitted(policies, training, mlflow, 5000)
    # the evaluator itself: with no policies every connection is admitted
    assert admitted([], neighbour, head, CLIENT_PORT)


def test_checkov_passes_on_the_ray_pods(tmp_path):
    """checkov does not read a RayCluster: run it on the pods KubeRay makes of its templates,
    with the chart's NetworkPolicies."""
    objects = render(values_of("platform", "ray-values.yaml"))
    cluster = raycluster(objects)
    pods = []
    for group, template in groups(cluster).items():
        metadata = copy.deepcopy(template["metadata"])
        metadata.update(name=f"mc-ray-{group}", namespace="mc-test")
        metadata["labels"].update({"ray.io/cluster": "mc-ray", "ray.io/group": group,
                                   "ray.io/node-type": "head" if group == "headgroup"
                                   else "worker"})
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                     "spec": template["spec"]})
    policies = [o for o in objects.values() if o["kind"] == "NetworkPolicy"]
    (tmp_path / "ray-pods.yaml").write_text(charts.as_yaml(pods + policies))
    summary = checkov_passes(tmp_path)
    assert summary["resource_count"] == len(pods) + len(policies) == 6
    assert summary["passed"] > 200 and summary["skipped"] == 1  # CKV_K8S_38, the autoscaler
