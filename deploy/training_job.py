"""Multi-node DeepSpeed training on Kubernetes: a Kubeflow PyTorchJob built from a TrainPlan.

Why PyTorchJob (kubeflow.org/v1, the Kubeflow training operator): each replica type takes a
full pod template (GPU pool placement, the plan ConfigMap, a memory-backed /dev/shm), the
operator sets torchrun's rendezvous (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, …) so the
same `flows.train_worker` module that runs under `torchrun --standalone` locally runs here
unchanged, and Kueue admits it natively (label kueue.x-k8s.io/queue-name).

`run_training_job` creates the job, follows it (status, pod phases, pod logs with the worker's
`@@mc ` progress events) and fails in one line on a failed condition, an evicted pod, an image
that cannot be pulled, or a timeout -- instead of waiting forever on a pod that never runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

from deploy.errors import ImagePullFailed, PodEvicted, TrainingJobFailed, TrainingJobTimeout
from deploy.kube import Applier, api_client, api_error
from flows.launch import PROGRESS_PREFIX
from flows.settings import Settings

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
JOB_LABEL = "training.kubeflow.org/job-name"  # set by the operator on every pod of a job
PLAN_DIR = "/etc/motioncontrol/plan"
# Waiting reasons after which a container never starts by itself.
IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError"}
# Settings the pods need to find the same store and registry as the caller.
FORWARDED_SETTINGS = ("store_backend", "s3_endpoint", "s3_bucket", "s3_secure", "s3_region",
                      "mlflow_tracking_uri")


def job_name(plan: dict[str, Any]) -> str:
    """A DNS-1035 name that is the same for the same plan (a resubmission finds its job)."""
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:8]
    run = re.sub(r"[^a-z0-9]", "", str(plan.get("run_id", "")).lower())[:8]
    return "-".join(p for p in ("mc-train", f"s{plan.get('stage', 'x')}", run, digest) if p)


def build_training_job(settings: Settings, plan_json: str, *, namespace: str, image: str,
                       nodes: int, gpus_per_node: int) -> list[dict[str, Any]]:
    """The ConfigMap holding the plan and the PyTorchJob that trains it on `nodes` pods."""
    plan = json.loads(plan_json)
    name = job_name(plan)
    labels = {"app.kubernetes.io/part-of": "motioncontrol",
              "app.kubernetes.io/component": "training",
              "motioncontrol.dev/stage": str(plan.get("stage", ""))}
    env = [{"name": "MC_PROFILE", "value": "base"}, {"name": "MC_HOME", "value": "/tmp/mc-home"},
           {"name": "MC_TRAIN__NPROC", "value": str(gpus_per_node)}]
    for field in FORWARDED_SETTINGS:
        value = getattr(settings, field)
        if value is not None:
            env.append({"name": f"MC_{field.upper()}", "value": str(value).lower()
                        if isinstance(value, bool) else str(value)})
    container = {
        "name": "pytorch",  # the operator looks for this container name
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # torchrun reads --nnodes/--node-rank/--master-* from the operator's PET_* variables.
        "command": ["python", "-m", "torch.distributed.run", f"--nproc-per-node={gpus_per_node}",
                    "-m", "flows.train_worker", f"{PLAN_DIR}/plan.json"],
        "env": env,
        "envFrom": [{"secretRef": {"name": settings.kube.s3_secret}}],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus_per_node)},
                      "requests": {"nvidia.com/gpu": str(gpus_per_node)}},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "plan", "mountPath": PLAN_DIR, "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "scratch", "mountPath": "/tmp"}],
    }
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "nodeSelector": {"motioncontrol.dev/pool": "gpu-training"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}],
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
            "automountServiceAccountToken": False,
            "containers": [container],
            "volumes": [{"name": "plan", "configMap": {"name": name}},
                        # NCCL and the data loaders share tensors through /dev/shm.
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
                        {"name": "scratch", "emptyDir": {}}],
        },
    }
    replica = {"restartPolicy": "OnFailure", "template": pod}
    replicas = {"Master": {"replicas": 1, **replica}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, **replica}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": name, "namespace": namespace, "labels": labels},
                  "data": {"plan.json": plan_json}}
    job = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**labels, "kueue.x-k8s.io/queue-name": settings.kube.training_queue}},
        "spec": {
            "nprocPerNode": str(gpus_per_node),
            # A crashed worker restarts and resumes from the last checkpoint, twice at most.
            "runPolicy": {"backoffLimit": 2, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": replicas,
        },
    }
    return [config_map, job]


def run_training_job(settings: Settings, plan_json: str, *, namespace: str | None = None,
                     image: str | None = None, nodes: int | None = None,
                     gpus_per_node: int | None = None, log: Callable[[str], None] = print,
                     on_event: Callable[[dict], None] = lambda event: None,
                     poll_s: float | None = None, timeout_s: float | None = None,
                     api=None) -> dict:
    """Submit the plan as a PyTorchJob, follow it to the end, and return its last progress
    event (the worker's "done" event, with the registered model). Unset arguments come
    from MC_KUBE__*. Raises PodEvicted, ImagePullFailed, TrainingJobFailed or
    TrainingJobTimeout with one actionable line; the job is deleted then, so its GPUs go
    back to the queue."""
    kube = settings.kube
    namespace = namespace or kube.namespace
    objects = build_training_job(settings, plan_json, namespace=namespace,
                                 image=image or kube.image, nodes=nodes or kube.nodes,
                                 gpus_per_node=gpus_per_node or kube.gpus_per_node)
    name = objects[-1]["metadata"]["name"]
    api = api or api_client(settings)
    applier = Applier(api)
    applier.apply(objects)
    log(f"submitted {KIND} {namespace}/{name}: {nodes or kube.nodes} nodes x "
        f"{gpus_per_node or kube.gpus_per_node} GPUs (queue {kube.training_queue})")
    follower = _JobFollower(api, namespace, name, log, on_event)
    timeout_s = timeout_s or kube.job_timeout_s
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            follower.stream_logs()
            if follower.finished():
                follower.stream_logs()  # the last lines written before it ended
                log(f"{KIND} {name} succeeded")
                return follower.last_event
            if time.monotonic() > deadline:
                raise TrainingJobTimeout(
                    f"training job {namespace}/{name} did not finish in "
                    f"{timeout_s:g} s (MC_KUBE__JOB_TIMEOUT_S); "
                    "its progress is checkpointed: run the same command again to resume")
            time.sleep(poll_s if poll_s is not None else kube.poll_s)
    except TrainingJobFailed:
        applier.delete(f"{GROUP}/{VERSION}", KIND, name, namespace)
        raise


class _JobFollower:
    """Reads one job's status and its pods; streams new log lines; raises on failure."""

    def __init__(self, api, namespace: str, name: str, log, on_event) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace, self.name, self.log, self.on_event = namespace, name, log, on_event
        self.lines_seen: dict[str, int] = {}
        self.tail: list[str] = []
        self.last_event: dict = {}

    def _job(self) -> dict:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                            PLURAL, self.name)
        except ApiException as exc:
            raise api_error(exc, f"read {KIND} {self.name}") from None

    def _pods(self) -> list:
        return self.core.list_namespaced_pod(self.namespace,
                                             label_selector=f"{JOB_LABEL}={self.name}").items

    def finished(self) -> bool:
        """True once the job succeeded; raises as soon as anything makes it fail."""
        for pod in self._pods():
            self._check_pod(pod)
        conditions = {c["type"]: c for c in self._job().get("status", {}).get("conditions", [])
                      if c.get("status") == "True"}
        if "Failed" in conditions:
            why = conditions["Failed"].get("message") or conditions["Failed"].get("reason")
            raise TrainingJobFailed(f"training job {self.namespace}/{self.name} failed: {why}"
                                    + self._tail_hint())
        return "Succeeded" in conditions

    def _check_pod(self, pod) -> None:
        status, where = pod.status, f"pod {self.namespace}/{pod.metadata.name}"
        if status is None:
            return
        if status.reason == "Evicted":
            raise PodEvicted(f"{where} was evicted: {status.message or 'node pressure'}; give "
                             "the job nodes with room (MC_KUBE__NODES, the gpu-training pool) "
                             "and run the same command again: it resumes from its last "
                             "checkpoint")
        for cs in status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting is None:
                continue
            if waiting.reason in IMAGE_PULL_REASONS:
                raise ImagePullFailed(f"{where} cannot pull image {cs.image}: {waiting.reason}"
                                      f" ({waiting.message or 'no detail'}); check "
                                      "MC_KUBE__IMAGE and the registry credentials")
            if waiting.reason in CONFIG_REASONS:
                raise TrainingJobFailed(f"{where} cannot start: {waiting.message or waiting.reason}"
                                        f"; check that Secret and ConfigMap exist in "
                                        f"{self.namespace}")

    def stream_logs(self) -> None:
        """Send the lines written since the last call, per pod; `@@mc ` lines are events."""
        for pod in self._pods():
            pod_name = pod.metadata.name
            if pod.status is None or pod.status.phase in (None, "Pending"):
                continue
            try:
                raw = self.core.read_namespaced_pod_log(pod_name, self.namespace,
                                                        container="pytorch",
                                                        _preload_content=False).data
            except Exception:  # a pod between states has no log yet: try next poll
                continue
            lines = raw.decode("utf-8", "replace").splitlines()
            for line in lines[self.lines_seen.get(pod_name, 0):]:
                self._line(pod_name, line)
            self.lines_seen[pod_name] = len(lines)

    def _line(self, pod_name: str, line: str) -> None:
        if line.startswith(PROGRESS_PREFIX):
            event = json.loads(line[len(PROGRESS_PREFIX):])
            self.last_event = event
            self.on_event(event)
            return
        self.tail = (self.tail + [f"[{pod_name}] {line}"])[-20:]
        self.log(f"[{pod_name}] {line}")

    def _tail_hint(self) -> str:
        return ("; last log lines: " + " | ".join(self.tail[-3:])) if self.tail else ""


def kubernetes_launcher(settings: Settings, plan_json: str, plan_path: str, log_path,
                        on_event: Callable[[dict], None]) -> None:
    """The train flow's launcher on a cluster (flows.launch): the plan as a PyTorchJob, its
    pod logs appended to the same log file the local launcher writes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        run_training_job(settings, plan_json, on_event=on_event,
                         log=lambda line: log.write(line + "\n"))

