"""The API server's side: the RayJob CRD's OpenAPI schema (pinned in deploy/kuberay/schema/) and its CEL rules."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from orchestrator.deploy.kuberay.rules import RELEASE, Problem

SCHEMA = Path(__file__).resolve().parents[3] / "deploy" / "kuberay" / "schema" / f"rayjob-{RELEASE}.openapi.json"


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused and Kubernetes' int-or-string spelled out for jsonschema.

    An object schema that lists ``properties`` and leaves ``additionalProperties`` open gets
    ``additionalProperties: false``. Objects marked ``x-kubernetes-preserve-unknown-fields`` and maps
    (an ``additionalProperties`` schema) keep what they allow. CEL rules are checked by :func:`cel_errors`.
    """
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(sub) for sub in out[key]]
    # Kubernetes accepts an integer or a string here. v1.7.0's CRD also says so with anyOf; a schema
    # that carries only the marker would otherwise accept neither.
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31  # the API server refuses a larger number


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


# A CRD's schema says only `metadata: {type: object}`; the API server checks it as an ObjectMeta. The fields a
# RayJob's rules read, with their types (the rest of ObjectMeta is set by the server, and stays open here).
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


@cache
def _validator() -> jsonschema.Draft4Validator:
    schema = strict(json.loads(SCHEMA.read_text()))
    schema["properties"]["metadata"] = OBJECT_META
    # OpenAPI 3.0 schemas are JSON Schema draft 4 with a few extensions, which jsonschema ignores.
    return jsonschema.Draft4Validator(schema, format_checker=_FORMATS)


def schema_errors(manifest: Any) -> list[str]:
    """What the API server would refuse in this manifest, as ``path: message`` lines (empty: accepted).

    Any YAML document is accepted as input: a wrong type anywhere is one more line, never an exception.
    """
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    lines = [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
    return lines or [str(p) for p in cel_errors(manifest)]


def cel_errors(rayjob: dict[str, Any]) -> list[Problem]:
    """The CRD's CEL rules that apply on creation (``self == oldSelf`` rules apply to updates only)."""
    spec = rayjob["spec"]
    problems = []
    strategy = spec.get("deletionStrategy")
    if strategy is not None:
        legacy, rules = "onSuccess" in strategy or "onFailure" in strategy, "deletionRules" in strategy
        if legacy and rules:
            problems.append(
                Problem(
                    "cel-deletion-legacy-and-rules",
                    "spec.deletionStrategy",
                    "legacy policies (onSuccess/onFailure) and deletionRules cannot be used together; keep one",
                )
            )
        if not (("onSuccess" in strategy and "onFailure" in strategy) or rules):
            problems.append(
                Problem(
                    "cel-deletion-requires",
                    "spec.deletionStrategy",
                    "requires either both onSuccess and onFailure, or deletionRules",
                )
            )
        for i, rule in enumerate(strategy.get("deletionRules", [])):
            where, condition = f"spec.deletionStrategy.deletionRules[{i}].condition", rule["condition"]
            if "jobStatus" in condition and "jobDeploymentStatus" in condition:
                problems.append(
                    Problem("cel-condition-both", where, "JobStatus and JobDeploymentStatus cannot be used together")
                )
            if "jobStatus" not in condition and "jobDeploymentStatus" not in condition:
                problems.append(Problem("cel-condition-neither", where, "needs jobStatus or jobDeploymentStatus"))
    managers = ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
    for where, owner in (("spec", spec), ("spec.rayClusterSpec", spec.get("rayClusterSpec") or {})):
        if "managedBy" in owner and owner["managedBy"] not in managers:
            problems.append(Problem("cel-managed-by", f"{where}.managedBy", f"must be one of {', '.join(managers)}"))
    return problems
