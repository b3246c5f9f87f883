"""The multi-node training job against a Kubernetes API emulator (kmock on loopback; no
cluster runs here). The test plays the Kubeflow training operator through the same API: it
creates the job's pods, writes their logs and sets their status; `run_training_job` must
follow them, stream the logs and progress events, and fail in one line on an evicted pod
or an image that cannot be pulled instead of hanging."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest
from kubernetes import client

from deploy.errors import ImagePullFailed, PodEvicted
from deploy.training_job import GROUP, JOB_LABEL, PLURAL, VERSION, run_training_job
from flows.launch import PROGRESS_PREFIX
from flows.settings import load_settings

NS = "motioncontrol"
PLAN = json.dumps({"stage": 1, "run_id": "0123456789abcdef", "steps": 4, "batch_size": 2})


def play_operator(kube, script) -> threading.Thread:
    """Wait for the submitted PyTorchJob, create its two pods, then run `script(core,
    custom, job_name, pods)` as the operator and kubelet would act."""
    api = kube.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

    def operator():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            jobs = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]
            if jobs:
                break
            time.sleep(0.05)
        else:
            return
        name = jobs[0]["metadata"]["name"]
        pods = [f"{name}-master-0", f"{name}-worker-0"]
        for pod in pods:
            core.create_namespaced_pod(NS, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": NS, "labels": {JOB_LABEL: name}},
                "spec": jobs[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"],
                "status": {"phase": "Pending"}})
        script(core, custom, name, pods)

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    return thread


def submitted_jobs(kube) -> list[dict]:
    return client.CustomObjectsApi(kube.api_client()).list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL)["items"]


def set_pod_status(core, pod: str, status: dict) -> None:
    core.patch_namespaced_pod(pod, NS, {"status": status})


def test_submit_follow_and_stream_logs(kube):
    def succeed(core, custom, name, pods):
        for pod in pods:
            set_pod_status(core, pod, {"phase": "Running"})
        kube.pod_logs[pods[0]] = "loading shards\n" + PROGRESS_PREFIX + json.dumps(
            {"event": "step", "step": 2, "loss": 0.5, "samples_per_s": 3.0}) + "\n"
        time.sleep(0.3)
        kube.pod_logs[pods[0]] += PROGRESS_PREFIX + json.dumps(
            {"event": "done", "step": 4, "model_uri": "models:/m-1"}) + "\nbye\n"
        time.sleep(0.2)
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {
            "status": {"conditions": [{"type": "Running", "status": "False"},
                                      {"type": "Succeeded", "status": "True"}]}})

    settings = load_settings()
    lines, events = [], []
    operator = play_operator(kube, succeed)
    final = run_training_job(settings, PLAN, namespace=NS, image="registry.local/mc:test",
                             nodes=2, gpus_per_node=4, log=lines.append,
                             on_event=events.append, poll_s=0.05, timeout_s=30,
                             api=kube.api_client())
    operator.join(5)
    assert final == {"event": "done", "step": 4, "model_uri": "models:/m-1"}
    assert [e["event"] for e in events] == ["step", "done"]
    assert any(line.endswith("] loading shards") for line in lines)
    assert any(line.endswith("] bye") for line in lines)
    assert sum("loading shards" in line for line in lines) == 1  # each line streamed once

    # What was submitted: the plan in a ConfigMap and a 2-node PyTorchJob on the GPU pool.
    job = kube.emulator.objects[f"{GROUP}/{VERSION}/{PLURAL}", NS,
                                lines[0].split("/")[1].split(":")[0]].raw
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 1
    pod = specs["Worker"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"motioncontrol.dev/pool": "gpu-training"}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    plan_cm = kube.object("v1/configmaps", NS, job["metadata"]["name"])
    assert json.loads(plan_cm["data"]["plan.json"])["run_id"] == "0123456789abcdef"


@pytest.mark.parametrize("failure", ["evicted", "image-pull"])
def test_failures_raise_one_clear_line_and_free_the_gpus(kube, failure):
    def fail(core, custom, name, pods):
        set_pod_status(core, pods[0], {"phase": "Running"})
        kube.pod_logs[pods[0]] = "step 1\n"
        time.sleep(0.2)
        if failure == "evicted":
            set_pod_status(core, pods[1], {
                "phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory."})
        else:
            set_pod_status(core, pods[1], {"phase": "Pending", "containerStatuses": [{
                "name": "pytorch", "image": "registry.local/mc:typo", "imageID": "",
                "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": "Back-off pulling image"}}}]})

    expected = PodEvicted if failure == "evicted" else ImagePullFailed
    operator = play_operator(kube, fail)
    started = time.monotonic()
    with pytest.raises(expected) as info:
        run_training_job(load_settings(), PLAN, namespace=NS, image="registry.local/mc:typo",
                         nodes=2, gpus_per_node=1, log=lambda _: None, poll_s=0.05,
                         timeout_s=30, api=kube.api_client())
    operator.join(5)
    assert time.monotonic() - started < 10  # failed fast, did not wait for the timeout
    message = str(info.value)
    assert "\n" not in message
    assert ("evicted: The node was low on resource: memory." in message
            if failure == "evicted" else "ImagePullBackOff" in message and "MC_KUBE__IMAGE" in message)
    assert submitted_jobs(kube) == []  # deleted: its GPUs go back to the queue


def test_timeout(kube):
    from deploy.errors import TrainingJobTimeout

    with pytest.raises(TrainingJobTimeout, match="did not finish in 0.5 s"):
        run_training_job(load_settings(), PLAN, namespace=NS, nodes=1, gpus_per_node=1,
                         log=lambda _: None, poll_s=0.1, timeout_s=0.5, api=kube.api_client())
    assert submitted_jobs(kube) == []


def test_the_base_profile_trains_through_the_kubernetes_launcher(monkeypatch):
    from deploy.training_job import kubernetes_launcher
    from flows.launch import launcher_for
    from flows.settings import load_settings

    # found through the project's entry point (pyproject.toml), as a Prefect worker finds it
    monkeypatch.setenv("MC_PROFILE", "base")
    assert launcher_for(load_settings()) is kubernetes_launcher
    monkeypatch.setenv("MC_TRAIN__LAUNCHER", "local")
    assert launcher_for(load_settings()) is not kubernetes_launcher


def recording(api) -> set[tuple[str, str]]:
    """(resource, verb) of every call made through `api` from now on (API discovery aside):
    what a ServiceAccount running the same code must be allowed."""
    import re

    calls: set[tuple[str, str]] = set()
    rest, request = api.rest_client, api.rest_client.request

    def record(method, url, *args, **kwargs):
        path = url.split("?")[0].split("://", 1)[-1].split("/", 1)[-1]
        found = re.match(r"apis?/(?:([^/]+)/)?v\w+/namespaces/[^/]+/([^/]+)(?:/([^/]+))?(?:/(\w+))?$",
                         path)
        if found:
            group, resource, name, sub = found.groups()
            group = "" if group is None or path.startswith("api/") else group
            verb = {"POST": "create", "PATCH": "patch", "DELETE": "delete",
                    "GET": "get" if name else "list"}[method]
            calls.add((f"{group}/{resource}" + (f"/{sub}" if sub else ""), verb))
        return request(method, url, *args, **kwargs)

    rest.request = record
    return calls


def test_the_flow_pods_role_allows_exactly_what_the_job_calls():
    """Run a job to success, the same plan again (a resumed run: its objects exist and are
    patched) and one to failure (deleted), recording every call, and compare them with the
    Role the platform chart gives the flow-run pods."""
    from deploy.charts import manifests
    from tests.integration.kube_emulator import KubeEmulator

    def run(kube, script, run_id):
        api = kube.api_client()
        calls = recording(api)
        operator = play_operator(kube, script)
        plan = json.dumps({**json.loads(PLAN), "run_id": run_id})
        with contextlib.suppress(PodEvicted):  # the failing run's end
            run_training_job(load_settings(), plan, namespace=NS, image="registry.local/mc:t",
                             nodes=2, gpus_per_node=1, log=lambda _: None, poll_s=0.05,
                             timeout_s=30, api=api)
        operator.join(5)
        return calls

    def succeed(core, custom, name, pods):
        for pod in pods:
            set_pod_status(core, pod, {"phase": "Running"})
        time.sleep(0.2)
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {
            "status": {"conditions": [{"type": "Running", "status": "False"},
                                      {"type": "Succeeded", "status": "True"}]}})

    def evict(core, custom, name, pods):
        set_pod_status(core, pods[0], {"phase": "Running"})
        kube.pod_logs[pods[0]] = "step 1\n"
        time.sleep(0.2)
        set_pod_status(core, pods[1], {"phase": "Failed", "reason": "Evicted",
                                       "message": "The node was low on resource: memory."})

    used = set()
    for scripts in ([succeed, lambda *_: None], [evict]):  # one emulator each
        kube = KubeEmulator().start()
        try:
            for script in scripts:
                used |= run(kube, script, "aaaaaaaaaaaaaaaa")
        finally:
            kube.stop()
    role = next(o for o in manifests("platform", {}, release="mc", namespace="mc-platform")
                if o["kind"] == "Role" and o["metadata"]["name"] == "mc-prefect-flow")
    assert role["metadata"]["namespace"] == NS  # the training namespace, not the platform's
    granted = {(f"{group}/{resource}", verb) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert used <= granted, used - granted  # everything the job does is allowed
    assert granted <= used, granted - used  # and nothing it does not do
