"""The Kubernetes API, through the official client: one way to connect (the settings'
kubeconfig context, or the in-cluster service account) and `apply` for rendered objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deploy.errors import ClusterError
from flows.settings import Settings

MERGE_PATCH = "application/merge-patch+json"


def api_client(settings: Settings):
    """An ApiClient for the cluster of MC_KUBE__CONTEXT (kubeconfig), or the pod's own."""
    from kubernetes import client, config

    try:
        if settings.kube.context is None:
            try:
                config.load_incluster_config()
                return client.ApiClient()
            except config.ConfigException:
                pass
        return config.new_client_from_config(context=settings.kube.context)
    except (config.ConfigException, OSError) as exc:
        raise ClusterError(f"no Kubernetes cluster configured ({exc}); set KUBECONFIG or "
                           "MC_KUBE__CONTEXT, or use --dry-run") from None


def api_error(exc: Exception, what: str) -> ClusterError:
    """One line out of an ApiException (its JSON body holds the useful message)."""
    import json

    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message", body) if body else str(exc)
    except (TypeError, ValueError):
        message = body
    status = getattr(exc, "status", "?")
    return ClusterError(f"{what}: the API answered {status}: {str(message).splitlines()[0]}")


class Applier:
    """Create-or-update of whole objects, like `kubectl apply` without the last-applied
    bookkeeping: a merge patch of the object when it exists, a create when it does not."""

    def __init__(self, api) -> None:
        from kubernetes.dynamic import DynamicClient

        try:
            self.dynamic = DynamicClient(api)
        except Exception as exc:  # discovery failed: the API server is unreachable
            raise ClusterError(f"cannot reach the Kubernetes API: {exc}") from None

    def _resource(self, obj: dict[str, Any]):
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            raise ClusterError(f"the cluster does not serve {obj['kind']} "
                               f"({obj['apiVersion']}); install its CRD first "
                               "(see infra/README.md)") from None

    def apply(self, objects: Iterable[dict[str, Any]]) -> None:
        from kubernetes.client.exceptions import ApiException

        for obj in objects:
            meta = obj["metadata"]
            resource = self._resource(obj)
            try:
                try:
                    resource.create(body=obj, namespace=meta.get("namespace"))
                except ApiException as exc:
                    if exc.status != 409:  # 409: it exists, so update it
                        raise
                    resource.patch(body=obj, name=meta["name"], namespace=meta.get("namespace"),
                                   content_type=MERGE_PATCH)
            except ApiException as exc:
                raise api_error(exc, f"apply {obj['kind']}/{meta['name']}") from None

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        resource = self._resource({"apiVersion": api_version, "kind": kind})
        try:
            return resource.get(name=name, namespace=namespace).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, f"read {kind}/{name}") from None

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        resource = self._resource({"apiVersion": api_version, "kind": kind})
        try:
            resource.delete(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise api_error(exc, f"delete {kind}/{name}") from None
