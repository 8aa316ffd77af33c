"""The operator's rules for the RayCluster a RayJob creates: ValidateRayClusterSpec and ValidateRayClusterUpgradeOptions
(its optional features, fault tolerance to TLS, are in :mod:`~orchestrator.deploy.kuberay.features`). Fields are
relative to ``spec.rayClusterSpec``."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.deploy.kuberay.features import (
    auth_errors,
    fault_tolerance_errors,
    history_server_errors,
    network_policy_errors,
    tls_errors,
)
from orchestrator.deploy.kuberay.rules import (
    AUTOSCALER_V2_ENV,
    Problem,
    autoscaler_v2,
    env_of,
    get,
    in_tree_autoscaling,
    parse_version,
)

# k8s.io/apimachinery validation: IsQualifiedName (a DNS-1123 subdomain prefix, then a name) and IsValidLabelValue.
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# validateRayGroupResources: these rayStartParams conflict with a group's own `resources` map.
RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")


def cluster_errors(spec: dict[str, Any], annotations: dict[str, str], gates: dict[str, bool]) -> list[Problem]:
    """ValidateRayClusterSpec. Fields are relative to the rayClusterSpec."""
    head = spec.get("headGroupSpec") or {}
    head_pod = get(head, "template", "spec", default={})
    head_containers = head_pod.get("containers") or []
    p = []
    if not head_containers:
        p.append(
            Problem("head-has-container", "headGroupSpec.template.spec.containers", "needs at least one container")
        )
    head_container = head_containers[0] if head_containers else {}  # RayContainerIndex: the first is Ray's
    head_env = env_of(head_container)
    p += _group("headGroupSpec", head)
    autoscaling = in_tree_autoscaling(spec)
    workers = spec.get("workerGroupSpecs") or []
    for i, group in enumerate(workers):
        p += _worker_group(f"workerGroupSpecs[{i}]", group, spec, head_env, autoscaling)
    p += fault_tolerance_errors(spec, annotations, head, head_container, head_env, gates)
    suspended = [
        (f"workerGroupSpecs[{i}].suspend", g.get("groupName")) for i, g in enumerate(workers) if g.get("suspend")
    ]
    if not gates["RayJobDeletionPolicy"]:
        p += [
            Problem(
                "worker-suspend-gate",
                where,
                f"group {name} can be suspended only with the RayJobDeletionPolicy feature gate",
            )
            for where, name in suspended
        ]
    autoscaler = spec.get("autoscalerOptions") or {}
    if not autoscaling and head_env.get(AUTOSCALER_V2_ENV, {}).get("value") in ("1", "true"):
        p.append(
            Problem(
                "autoscaler-v2-env-needs-autoscaling",
                "headGroupSpec.template.spec.containers[0].env",
                f"{AUTOSCALER_V2_ENV} needs enableInTreeAutoscaling: true",
            )
        )
    if autoscaling:
        p += [
            Problem(
                "autoscaling-no-worker-suspend", where, f"group {name} cannot be suspended with in-tree autoscaling"
            )
            for where, name in suspended
        ]
        if autoscaler.get("version") is not None and AUTOSCALER_V2_ENV in head_env:
            p.append(
                Problem(
                    "autoscaler-version-or-env",
                    "autoscalerOptions.version",
                    f"set it or the head's {AUTOSCALER_V2_ENV}, not both (prefer the version)",
                )
            )
        if autoscaler_v2(spec):
            if head_pod.get("restartPolicy", "") not in ("", "Never"):
                p.append(
                    Problem(
                        "autoscaler-v2-head-restart-never",
                        "headGroupSpec.template.spec.restartPolicy",
                        "must be Never or unset with autoscaler v2",
                    )
                )
            for i, group in enumerate(workers):
                if get(group, "template", "spec", "restartPolicy", default="") not in ("", "Never"):
                    p.append(
                        Problem(
                            "autoscaler-v2-worker-restart-never",
                            f"workerGroupSpecs[{i}].template.spec.restartPolicy",
                            "must be Never or unset with autoscaler v2",
                        )
                    )
    if autoscaler.get("idleTimeoutSeconds") is not None and autoscaler["idleTimeoutSeconds"] < 0:
        p.append(
            Problem("autoscaler-idle-timeout-non-negative", "autoscalerOptions.idleTimeoutSeconds", "must be >= 0")
        )
    if "KUBERAY_GEN_AUTOSCALER_START_CMD" in env_of(autoscaler):
        p.append(
            Problem(
                "autoscaler-env-no-start-cmd",
                "autoscalerOptions.env",
                "KUBERAY_GEN_AUTOSCALER_START_CMD is KubeRay's own; remove it",
            )
        )
    p += history_server_errors(spec, head_containers, workers, gates)
    p += auth_errors(spec)
    p += network_policy_errors(spec, workers, gates)
    p += tls_errors(spec, head_container, workers, gates)
    return p


def _group(where: str, group: dict[str, Any]) -> list[Problem]:
    """validateRayGroupResources and validateRayGroupLabels, for the head or a worker group."""
    params = group.get("rayStartParams") or {}
    p = []
    in_params = [k for k in RAY_START_RESOURCES if params.get(k)]
    if in_params and group.get("resources"):
        p.append(
            Problem(
                "group-resources-once",
                where,
                f"resources set in both rayStartParams ({', '.join(in_params)}) and resources; use only one",
            )
        )
    if "labels" in params:
        p.append(Problem("group-no-labels-param", f"{where}.rayStartParams.labels", f"use {where}.labels instead"))
    for key, value in (group.get("labels") or {}).items():
        if not _qualified_name(key):
            p.append(Problem("group-label-key", f"{where}.labels", f"{key!r} is not a qualified name (prefix/name)"))
        if len(value) > 63 or (value and not QUALIFIED_NAME.fullmatch(value)):
            p.append(Problem("group-label-value", f"{where}.labels.{key}", f"{value!r} is not a valid label value"))
    return p


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(QUALIFIED_NAME.fullmatch(name))


def _worker_group(
    where: str, group: dict[str, Any], spec: dict[str, Any], head_env: dict[str, dict], autoscaling: bool
) -> list[Problem]:
    name = group.get("groupName")
    lo, hi = group.get("minReplicas"), group.get("maxReplicas")
    p = []
    if not get(group, "template", "spec", "containers", default=[]):
        p.append(Problem("worker-has-container", f"{where}.template.spec.containers", "needs at least one container"))
    # With in-tree autoscaling they are optional: the autoscaler adjusts the group.
    if not autoscaling and (lo is None or hi is None):
        p.append(
            Problem("worker-replicas-set", where, f"group {name}: set minReplicas and maxReplicas (no autoscaling)")
        )
    if lo is not None and lo < 0:
        p.append(Problem("worker-min-non-negative", f"{where}.minReplicas", f"must be >= 0, not {lo}"))
    if hi is not None and hi < 0:
        p.append(Problem("worker-max-non-negative", f"{where}.maxReplicas", f"must be >= 0, not {hi}"))
    if lo is not None and hi is not None and lo > hi:
        p.append(Problem("worker-min-le-max", where, f"group {name}: minReplicas {lo} > maxReplicas {hi}"))
    p += _group(where, group)
    v2 = autoscaler_v2(spec) or head_env.get(AUTOSCALER_V2_ENV, {}).get("value") in ("1", "true")
    idle = group.get("idleTimeoutSeconds")
    if idle is not None:
        if idle < 0:
            p.append(Problem("worker-idle-timeout-non-negative", f"{where}.idleTimeoutSeconds", "must be >= 0"))
        elif not v2:
            p.append(
                Problem(
                    "worker-idle-timeout-needs-v2",
                    f"{where}.idleTimeoutSeconds",
                    "needs autoscaler v2: enableInTreeAutoscaling: true and autoscalerOptions.version: v2",
                )
            )
    priority = group.get("priority")
    if priority:
        version = parse_version(spec.get("rayVersion", ""))
        if not spec.get("rayVersion"):
            p.append(Problem("worker-priority-version-set", "rayVersion", "priority needs rayVersion (Ray >= 2.56.0)"))
        elif version is None:
            p.append(Problem("worker-priority-version-valid", "rayVersion", f"{spec['rayVersion']!r} is no version"))
        elif version < (2, 56, 0):
            p.append(Problem("worker-priority-version-min", "rayVersion", "priority needs Ray >= 2.56.0"))
        elif not v2:
            p.append(Problem("worker-priority-needs-v2", f"{where}.priority", "needs autoscaler v2"))
    return p


def upgrade_errors(spec: dict[str, Any]) -> list[Problem]:
    kind = get(spec, "upgradeStrategy", "type")
    if kind is None:
        return []
    p = []
    if kind not in ("Recreate", "None"):
        p.append(Problem("upgrade-type", "upgradeStrategy.type", f"{kind!r} is not Recreate or None"))
    p.append(
        Problem(
            "upgrade-not-for-rayjob",
            "upgradeStrategy",
            "cannot be set on the RayCluster a RayJob creates; remove it (each RayJob gets a new cluster)",
        )
    )
    return p
