"""The CustomResourceDefinition schemas kept under tests/schemas/ (each folder's SOURCE.md says
where they come from), read the way the API server judges a custom object with strict field
validation. Used by the chart tests of every CRD kind the charts render (Argo Rollouts,
KubeRay)."""

from __future__ import annotations

import copy
import json

import jsonschema

from flows.settings import REPO_ROOT

SCHEMAS = REPO_ROOT / "tests" / "schemas"


def strict(schema: dict) -> dict:
    """A CRD's openAPIV3Schema as a JSON Schema (Draft 7) that judges like the API server with
    strict field validation: an object that lists its `properties` refuses any other field
    unless it carries `x-kubernetes-preserve-unknown-fields`; `x-kubernetes-int-or-string`
    takes an integer or a string."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for value in node.values():
            walk(value)

    walk(schema)
    return schema


def validator(path: str) -> jsonschema.Draft7Validator:
    """The strict validator of one kept schema, `path` relative to tests/schemas/
    (e.g. "kuberay/raycluster.json")."""
    return jsonschema.Draft7Validator(strict(json.loads((SCHEMAS / path).read_text())))


def errors(check: jsonschema.Draft7Validator, obj: dict) -> list[str]:
    """Every complaint about `obj`, each as "<path>: <message>"."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(obj)]
