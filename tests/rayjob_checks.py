"""A RayJob manifest checked offline, the two ways a KubeRay v1.7.0 cluster would check it.

1. ``schema_errors``: the API server, against the CRD's OpenAPI schema (pinned in deploy/kuberay/schema/).
   `kubectl apply` asks for strict field validation (Kubernetes 1.27+), so an unknown field is an error
   there, not a field silently dropped; ``strict`` makes jsonschema do the same.
2. ``operator_errors``: the operator's own rules, which the schema cannot express.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parent.parent / "deploy" / "kuberay" / "schema" / "rayjob-v1.7.0.openapi.json"


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused and Kubernetes' int-or-string spelled out for jsonschema.

    An object schema that lists ``properties`` and leaves ``additionalProperties`` open gets
    ``additionalProperties: false``. Objects marked ``x-kubernetes-preserve-unknown-fields`` and maps
    (an ``additionalProperties`` schema) keep what they allow. CEL rules (``x-kubernetes-validations``,
    only on deletionStrategy and managedBy in v1.7.0) are not evaluated.
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


@cache
def _validator() -> jsonschema.Draft4Validator:
    # OpenAPI 3.0 schemas are JSON Schema draft 4 with a few extensions, which jsonschema ignores.
    return jsonschema.Draft4Validator(strict(json.loads(SCHEMA.read_text())))


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """What the API server would refuse in this manifest, as ``path: message`` lines (empty: accepted)."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


# --- The operator's rules -------------------------------------------------------------------------------
# Ported from KubeRay v1.7.0 (commit 59d663aeec13760646da3db9c1cf8cfe883e30b7),
# ray-operator/controllers/ray/utils/validation.go: ValidateRayJobMetadata, ValidateRayJobSpec, and from
# the functions it calls, validateDeletionConfiguration and validateRayGroupResources. Only the rules a
# manifest like ours can break; not those of the clusterSelector mode, SidecarMode, deletionStrategy, GCS
# fault tolerance, auth or TLS. Run it on a manifest that passes the schema.

# constant.go: MaxRayJobNameLength = MaxRayClusterNameLength (53) - 6, so the names the operator derives
# from the RayJob's (its RayCluster's, its head service's) stay valid.
MAX_NAME_LENGTH = 47
# k8s.io/apimachinery IsDNS1035Label: lower-case letters, digits and '-', a letter first, no '-' last, at
# most 63 characters (the 47 above is the tighter limit).
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# rayjob_types.go, the JobSubmissionMode constants. v1.7.0 does not check this field (the CRD has no enum
# and validation.go no rule): an unknown mode is accepted and no job is ever submitted. We refuse it.
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
# validateRayGroupResources: these rayStartParams conflict with a group's own `resources` map.
RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")


def operator_errors(rayjob: dict[str, Any]) -> list[str]:
    """What the KubeRay operator would refuse in this RayJob: one message per rule broken, naming it."""
    name = rayjob["metadata"].get("name", "")
    spec = rayjob["spec"]
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    errors = []

    if len(name) > MAX_NAME_LENGTH:
        errors.append(f"metadata.name: {name!r} has {len(name)} characters; at most {MAX_NAME_LENGTH} for a RayJob")
    if not DNS1035_LABEL.fullmatch(name):
        errors.append(f"metadata.name: {name!r} is not a DNS-1035 label (a-z, 0-9 and '-', starting with a letter)")
    # KubeRay's suspend support is a subset of Kueue's; it needs the cluster to go when the job does.
    if spec.get("suspend") and not shutdown:
        errors.append("spec.suspend: a RayJob with shutdownAfterJobFinishes false cannot be suspended")
    if ttl < 0:
        errors.append(f"spec.ttlSecondsAfterFinished: must be a non-negative integer, not {ttl}")
    if ttl > 0 and not shutdown:
        errors.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes true (else nothing is deleted)")
    # Both may be set: then the clusterSelector wins and rayClusterSpec is unused. v1.7.0 allows it.
    if spec.get("rayClusterSpec") is None and not spec.get("clusterSelector"):
        errors.append("spec: one of rayClusterSpec or clusterSelector must be set")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        errors.append(f"spec.submissionMode: {mode!r} is not one of {', '.join(SUBMISSION_MODES)}")
    errors += _runtime_env_errors(spec.get("runtimeEnvYAML", ""))
    cluster = spec.get("rayClusterSpec") or {}
    groups = [("headGroupSpec", cluster.get("headGroupSpec", {}))]
    groups += [(f"workerGroupSpecs[{g.get('groupName')}]", g) for g in cluster.get("workerGroupSpecs", [])]
    for where, group in groups:
        in_params = [k for k in RAY_START_RESOURCES if group.get("rayStartParams", {}).get(k)]
        if in_params and group.get("resources"):
            errors.append(
                f"rayClusterSpec.{where}: resources set in both rayStartParams ({', '.join(in_params)}) "
                "and resources; use only one"
            )
    return errors


def _runtime_env_errors(text: str) -> list[str]:
    # The operator unmarshals it into a map (dashboardclient.UnmarshalRuntimeEnvYAML); "" means none.
    try:
        env = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        return [f"spec.runtimeEnvYAML: not valid YAML: {err.problem} (line {mark.line + 1}, column {mark.column + 1})"]
    if env is not None and not isinstance(env, dict):
        return [f"spec.runtimeEnvYAML: must be a mapping (a runtime_env), not a YAML {type(env).__name__}"]
    return []
