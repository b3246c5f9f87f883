"""The Helm charts of helm/, rendered and linted offline with Helm's own engine (the Helm v4
Go SDK bundled by helm-python): the same templates, functions and schema validation as
`helm template` / `helm lint`, without a helm binary or a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploy.errors import ChartError
from flows.settings import REPO_ROOT

CHARTS_DIR = REPO_ROOT / "helm"
CHARTS = ("motioncontrol", "platform")


def chart_path(chart: str) -> Path:
    path = CHARTS_DIR / chart
    if not (path / "Chart.yaml").is_file():
        raise ChartError(f"no chart {chart!r} under {CHARTS_DIR}; expected one of {CHARTS}")
    return path


def render(chart: str, values: dict[str, Any] | None = None, *, release: str,
           namespace: str) -> dict[str, str]:
    """Template path -> rendered YAML, exactly as `helm template` would print it."""
    import helm_python as helm

    try:
        loaded = helm.Chart.load(chart_path(chart))
        rendered = loaded.render(values or {}, name=release, namespace=namespace,
                                 is_install=True)
    except helm.HelmError as exc:
        raise ChartError(f"chart {chart} does not render: {str(exc).strip()}") from None
    return {path: text for path, text in sorted(rendered.items())
            if path.endswith((".yaml", ".yml")) and text.strip()}


def manifests(chart: str, values: dict[str, Any] | None = None, *, release: str,
              namespace: str) -> list[dict[str, Any]]:
    """The rendered objects, in template order, each with its namespace set (as `helm install
    -n` would place them)."""
    objects = []
    for text in render(chart, values, release=release, namespace=namespace).values():
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("namespace", namespace)
                objects.append(doc)
    return objects


def lint(chart: str, values: dict[str, Any] | None = None) -> list[str]:
    """`helm lint --strict` findings (warnings count as errors); empty when clean."""
    import helm_python as helm

    report = helm.lint(chart_path(chart), values, strict=True)
    findings = [f"{m['path']}: {m['error']}" for m in report.get("messages", [])
                if m.get("severity", 0) >= 2]
    return findings + list(report.get("errors") or [])


def as_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects back to one multi-document YAML stream, for printing."""
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)
