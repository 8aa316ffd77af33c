"""The operator's rules for the RayJob itself: ValidateRayJobMetadata, ValidateRayJobSpec and the deletion strategy's
checks; :func:`operator_errors` runs every rule of the package."""

from __future__ import annotations

import re
from typing import Any

import yaml

from orchestrator.deploy.kuberay.cluster import cluster_errors, upgrade_errors
from orchestrator.deploy.kuberay.rules import FEATURE_GATES, Problem, get, in_tree_autoscaling

# constant.go: MaxRayJobNameLength = MaxRayClusterNameLength (53) - 6, so the names the operator derives from
# the RayJob's (its RayCluster's, its head service's) stay valid.
MAX_NAME_LENGTH = 47
# k8s.io/apimachinery validation IsDNS1035Label (with at most 63 characters).
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def operator_errors(rayjob: dict[str, Any], gates: dict[str, bool] | None = None) -> list[Problem]:
    """What the KubeRay operator would refuse in this RayJob, one problem per rule broken.

    Run it on a manifest that passes :func:`schema_errors` (the operator never sees one that does not).
    """
    gates = {**FEATURE_GATES, **(gates or {})}
    problems = _metadata(rayjob.get("metadata") or {}) + _job_spec(rayjob, gates)
    cluster = rayjob["spec"].get("rayClusterSpec")
    if cluster is not None:
        annotations = (rayjob.get("metadata") or {}).get("annotations") or {}
        problems += [_under("spec.rayClusterSpec", p) for p in cluster_errors(cluster, annotations, gates)]
        problems += [_under("spec.rayClusterSpec", p) for p in upgrade_errors(cluster)]
    return problems


def _under(prefix: str, problem: Problem) -> Problem:
    return Problem(problem.rule, f"{prefix}.{problem.field}", problem.message)


def _metadata(metadata: dict[str, Any]) -> list[Problem]:
    name = metadata.get("name", "")
    problems = []
    if len(name) > MAX_NAME_LENGTH:
        problems.append(
            Problem(
                "name-length",
                "metadata.name",
                f"{name!r} has {len(name)} characters; at most {MAX_NAME_LENGTH} for a RayJob (its RayCluster "
                "and services are named after it)",
            )
        )
    if len(name) > 63 or not DNS1035_LABEL.fullmatch(name):
        problems.append(
            Problem(
                "name-dns1035",
                "metadata.name",
                f"{name!r} is not a DNS-1035 label: lower-case letters, digits and '-', starting with a letter, "
                "not ending with '-'",
            )
        )
    return problems


def _job_spec(rayjob: dict[str, Any], gates: dict[str, bool]) -> list[Problem]:
    spec = rayjob["spec"]
    shutdown, suspend = spec.get("shutdownAfterJobFinishes", False), spec.get("suspend", False)
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    mode = spec.get("submissionMode", "K8sJobMode")
    backoff = spec.get("backoffLimit")
    selector = spec.get("clusterSelector") or {}
    cluster = spec.get("rayClusterSpec")
    p = []
    # KubeRay's suspend support is a subset of Kueue's; it needs the cluster to go when the job does.
    if suspend and not shutdown:
        p.append(Problem("suspend-needs-shutdown", "spec.suspend", "needs shutdownAfterJobFinishes: true"))
    if ttl < 0:
        p.append(Problem("ttl-non-negative", "spec.ttlSecondsAfterFinished", f"must be >= 0, not {ttl}"))
    p += _deletion(spec, gates)
    if suspend and selector:
        p.append(Problem("selector-no-suspend", "spec.suspend", "the clusterSelector mode cannot be suspended"))
    # Both may be set: then the clusterSelector wins and rayClusterSpec is unused. v1.7.0 allows it.
    if cluster is None and not selector:
        p.append(Problem("cluster-spec-or-selector", "spec", "one of rayClusterSpec or clusterSelector must be set"))
    if selector:
        if not selector.get("ray.io/cluster"):
            p.append(
                Problem("selector-cluster-name", "spec.clusterSelector", "needs ray.io/cluster: NAME of a RayCluster")
            )
        if mode == "SidecarMode":
            p.append(Problem("selector-not-sidecar", "spec.submissionMode", "SidecarMode cannot use a clusterSelector"))
        if backoff is not None and backoff > 0:
            p.append(Problem("selector-no-backoff", "spec.backoffLimit", "must be 0 or unset with a clusterSelector"))
    # A retried InteractiveMode job keeps its jobId and goes to Running instead of Waiting (kuberay#3525).
    if mode == "InteractiveMode" and backoff is not None and backoff > 0:
        p.append(Problem("interactive-no-backoff", "spec.backoffLimit", "must be 0 or unset in InteractiveMode"))
    if mode == "SidecarMode":
        if spec.get("submitterPodTemplate") is not None:
            p.append(
                Problem("sidecar-no-submitter-template", "spec.submitterPodTemplate", "not supported in SidecarMode")
            )
        if spec.get("submitterConfig") is not None:
            p.append(Problem("sidecar-no-submitter-config", "spec.submitterConfig", "not supported in SidecarMode"))
        restart = get(cluster, "headGroupSpec", "template", "spec", "restartPolicy", default="")
        if restart not in ("", "Never"):
            p.append(
                Problem(
                    "sidecar-head-restart-never",
                    "spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy",
                    f"must be Never or unset in SidecarMode, not {restart}",
                )
            )
    if cluster is not None and get(cluster, "authOptions", "enableK8sTokenAuth", default=False):
        p.append(
            Problem(
                "job-no-k8s-token-auth",
                "spec.rayClusterSpec.authOptions.enableK8sTokenAuth",
                "Kubernetes token auth is not supported for a RayJob",
            )
        )
    p += _runtime_env(spec.get("runtimeEnvYAML", ""))
    for field, rule in (
        ("activeDeadlineSeconds", "active-deadline-positive"),
        ("preRunningDeadlineSeconds", "pre-running-deadline-positive"),
    ):
        if spec.get(field) is not None and spec[field] <= 0:
            p.append(Problem(rule, f"spec.{field}", f"must be a positive number of seconds, not {spec[field]}"))
    if backoff is not None and backoff < 0:
        p.append(Problem("backoff-non-negative", "spec.backoffLimit", f"must be >= 0 (0: no retry), not {backoff}"))
    return p


def _runtime_env(text: str) -> list[Problem]:
    # The operator unmarshals it into a map (dashboardclient.UnmarshalRuntimeEnvYAML); "" means none.
    try:
        env = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = f" (line {err.problem_mark.line + 1})" if getattr(err, "problem_mark", None) else ""
        return [Problem("runtime-env-yaml", "spec.runtimeEnvYAML", f"not valid YAML{where}: {err}")]
    if env is not None and not isinstance(env, dict):
        return [
            Problem(
                "runtime-env-yaml",
                "spec.runtimeEnvYAML",
                f"must be a mapping (a runtime_env such as `working_dir: ...`), not a YAML {type(env).__name__}",
            )
        ]
    return []


def _deletion(spec: dict[str, Any], gates: dict[str, bool]) -> list[Problem]:
    """validateDeletionConfiguration and the two validators it calls."""
    shutdown, ttl = spec.get("shutdownAfterJobFinishes", False), spec.get("ttlSecondsAfterFinished", 0)
    p = []
    if not shutdown and ttl > 0:
        p.append(
            Problem(
                "ttl-needs-shutdown",
                "spec.ttlSecondsAfterFinished",
                "needs shutdownAfterJobFinishes: true (without it nothing is deleted)",
            )
        )
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return p
    where = "spec.deletionStrategy"
    if not gates["RayJobDeletionPolicy"]:
        return [*p, Problem("deletion-strategy-gate", where, "needs the RayJobDeletionPolicy feature gate")]
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = bool(strategy.get("deletionRules"))
    if rules and shutdown:
        p.append(
            Problem(
                "deletion-rules-vs-shutdown",
                where,
                "deletionRules and shutdownAfterJobFinishes: true exclude each other",
            )
        )
    if rules and legacy:
        p.append(Problem("deletion-rules-vs-legacy", where, "use deletionRules or onSuccess/onFailure, not both"))
    if legacy:
        p += _legacy_deletion(spec)
    elif rules:
        p += _deletion_rules(spec)
    else:
        p.append(Problem("deletion-strategy-empty", where, "needs both onSuccess and onFailure, or deletionRules"))
    return p


def _legacy_deletion(spec: dict[str, Any]) -> list[Problem]:
    strategy, where = spec["deletionStrategy"], "spec.deletionStrategy"
    on_success, on_failure = strategy.get("onSuccess"), strategy.get("onFailure")
    if on_success is None or on_failure is None:
        return [Problem("legacy-both-policies", where, "set both onSuccess and onFailure")]
    p = []
    if on_success.get("policy") is None:
        p.append(Problem("legacy-onsuccess-policy", f"{where}.onSuccess.policy", "must be set"))
    if on_failure.get("policy") is None:
        p.append(Problem("legacy-onfailure-policy", f"{where}.onFailure.policy", "must be set"))
    if p:
        return p
    policies = (("onsuccess", "onSuccess", on_success["policy"]), ("onfailure", "onFailure", on_failure["policy"]))
    if spec.get("clusterSelector"):
        for rule, key, policy in policies:
            if policy in ("DeleteCluster", "DeleteWorkers"):
                p.append(
                    Problem(
                        f"legacy-selector-{rule}", f"{where}.{key}.policy", f"{policy} is not for a clusterSelector"
                    )
                )
    if "DeleteWorkers" in (on_success["policy"], on_failure["policy"]) and in_tree_autoscaling(
        spec.get("rayClusterSpec")
    ):
        p.append(
            Problem("legacy-delete-workers-autoscaling", where, "DeleteWorkers does not work with in-tree autoscaling")
        )
    if spec.get("shutdownAfterJobFinishes") and "DeleteNone" in (on_success["policy"], on_failure["policy"]):
        p.append(Problem("legacy-shutdown-delete-none", where, "DeleteNone contradicts shutdownAfterJobFinishes: true"))
    return p


def _deletion_rules(spec: dict[str, Any]) -> list[Problem]:
    p = []
    seen: dict[tuple[str, str], dict[str, int]] = {}
    for i, rule in enumerate(spec["deletionStrategy"]["deletionRules"]):
        where = f"spec.deletionStrategy.deletionRules[{i}]"
        condition, policy = rule.get("condition") or {}, rule.get("policy")
        status, deployment = condition.get("jobStatus"), condition.get("jobDeploymentStatus")
        ttl = condition.get("ttlSeconds", 0)
        if status is not None and deployment is not None:
            p.append(
                Problem("rule-condition-both", f"{where}.condition", "set jobStatus or jobDeploymentStatus, not both")
            )
            continue
        if status is None and deployment is None:
            p.append(Problem("rule-condition-neither", f"{where}.condition", "set jobStatus or jobDeploymentStatus"))
            continue
        if ttl < 0:
            p.append(Problem("rule-ttl-non-negative", f"{where}.condition.ttlSeconds", f"must be >= 0, not {ttl}"))
            continue
        if spec.get("clusterSelector") and policy in ("DeleteCluster", "DeleteWorkers"):
            p.append(Problem("rule-selector-policy", f"{where}.policy", f"{policy} is not for a clusterSelector"))
            continue
        if in_tree_autoscaling(spec.get("rayClusterSpec")) and policy == "DeleteWorkers":
            p.append(
                Problem(
                    "rule-delete-workers-autoscaling",
                    f"{where}.policy",
                    "DeleteWorkers does not work with in-tree autoscaling",
                )
            )
            continue
        key = ("jobStatus", status) if status is not None else ("jobDeploymentStatus", deployment)
        ttls = seen.setdefault(key, {})
        if policy in ttls:
            rule_id = "rule-duplicate-job-status" if status is not None else "rule-duplicate-deployment-status"
            p.append(Problem(rule_id, where, f"a second {policy} rule for {key[0]} {key[1]}"))
            continue
        ttls[policy] = ttl
    # Lower TTL deletes earlier: workers, then the cluster, then the RayJob itself.
    for (kind, value), ttls in seen.items():
        order = [
            (policy, ttls[policy]) for policy in ("DeleteWorkers", "DeleteCluster", "DeleteSelf") if policy in ttls
        ]
        for (before, low), (after, high) in zip(order, order[1:]):
            if high < low:
                p.append(
                    Problem(
                        "rule-ttl-order",
                        "spec.deletionStrategy.deletionRules",
                        f"for {kind} {value!r}: the {after} TTL ({high}) must be >= the {before} TTL ({low})",
                    )
                )
    return p
