"""A Kubernetes API on loopback for tests: kmock's in-process emulator (stateful create /
get / list / merge-patch / delete, API discovery), served on 127.0.0.1 from a background
event loop so that the official synchronous `kubernetes` client talks to it over HTTP.

It stands in for the cluster only: no controller runs, so a test plays the part of the
operators (it creates the pods of a job, sets their status) through the same API.
"""

from __future__ import annotations

import asyncio
import threading

import kmock

# Resources beyond the bundled built-ins that the charts and the training job use (CRDs).
CUSTOM_RESOURCES = {
    "gateway.networking.k8s.io/v1/httproutes": "HTTPRoute",
    "gateway.networking.k8s.io/v1/grpcroutes": "GRPCRoute",
    "monitoring.coreos.com/v1/servicemonitors": "ServiceMonitor",
    "kubeflow.org/v1/pytorchjobs": "PyTorchJob",
    "argoproj.io/v1alpha1/rollouts": "Rollout",
    "argoproj.io/v1alpha1/analysistemplates": "AnalysisTemplate",
    "argoproj.io/v1alpha1/analysisruns": "AnalysisRun",
}


class KubeEmulator:
    def __init__(self) -> None:
        self.pod_logs: dict[str, str] = {}  # pod name -> what its `log` subresource returns
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> KubeEmulator:
        self._thread.start()

        async def up():
            self.emulator = kmock.KubernetesEmulator()
            await self.emulator.__aenter__()
            self.emulator.resources.load_bundled()
            for resource, kind in CUSTOM_RESOURCES.items():
                self.emulator.resources[resource].kind = kind
                self.emulator.resources[resource].namespaced = True
            # Pod logs: plain text of whatever the test wrote for that pod so far.
            self.emulator[kmock.resource("v1/pods"), kmock.subresource("log")] << (
                lambda request: self.pod_logs.get(request.name, "").encode())
            self.server = kmock.Server(self.emulator)
            await self.server.__aenter__()

        self._run(up())
        return self

    def stop(self) -> None:
        async def down():
            await self.server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)

        self._run(down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return str(self.server.url).rstrip("/")

    def api_client(self):
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return client.ApiClient(config)

    def object(self, resource: str, namespace: str, name: str) -> dict | None:
        """The stored object (None when absent or deleted), read through the API."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic import DynamicClient

        group_version, plural = resource.rsplit("/", 1)
        dynamic = DynamicClient(self.api_client())
        res = next(r for r in dynamic.resources.search(api_version=group_version)
                   if getattr(r, "name", None) == plural)
        try:
            return res.get(name=name, namespace=namespace).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def history(self, resource: str, namespace: str, name: str) -> list[dict]:
        """Every version the object went through (creation, each patch), oldest first."""
        return [dict(version.raw) for version in
                self.emulator.objects[resource, namespace, name].history if version is not None]
