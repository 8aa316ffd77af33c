"""Every rule of KubeRay's that this package ports, what a broken one reports, and the field helpers the rules share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# ray-project/kuberay's tag (commit 59d663aeec13760646da3db9c1cf8cfe883e30b7) of the CRD schema in
# deploy/kuberay/schema/ and of these rules
RELEASE = "v1.7.0"

# ray-operator/pkg/features/features.go: the gates the rules read, at their v1.7.0 defaults.
FEATURE_GATES = {
    "RayJobDeletionPolicy": True,
    "RayClusterNetworkPolicy": False,
    "GCSFaultToleranceEmbeddedStorage": False,
    "RayClusterMTLS": False,
    "RayClusterHistoryServer": False,
}

# Every rule ported, by id: (where upstream, what it says). A problem names its rule; the tests break each one.
RULES: dict[str, tuple[str, str]] = {}


def _rules(where: str, **said: str) -> None:
    RULES.update({rule.replace("_", "-"): (where, text) for rule, text in said.items()})


_rules(
    "CRD schema, CEL rule (x-kubernetes-validations)",
    cel_deletion_legacy_and_rules="deletionStrategy: onSuccess/onFailure and deletionRules are not used together",
    cel_deletion_requires="deletionStrategy: both onSuccess and onFailure, or deletionRules",
    cel_condition_both="a deletion rule's condition: not both jobStatus and jobDeploymentStatus",
    cel_condition_neither="a deletion rule's condition: jobStatus or jobDeploymentStatus",
    cel_managed_by="managedBy: ray.io/kuberay-operator or kueue.x-k8s.io/multikueue",
)
_rules(
    "ValidateRayJobMetadata",
    name_length="metadata.name: at most 47 characters (MaxRayJobNameLength)",
    name_dns1035="metadata.name: a DNS-1035 label",
)
_rules(
    "ValidateRayJobSpec",
    suspend_needs_shutdown="suspend: only with shutdownAfterJobFinishes",
    ttl_non_negative="ttlSecondsAfterFinished >= 0",
    selector_no_suspend="suspend: not with clusterSelector",
    cluster_spec_or_selector="rayClusterSpec or clusterSelector",
    selector_cluster_name="clusterSelector names a cluster (ray.io/cluster)",
    selector_not_sidecar="clusterSelector: not in SidecarMode",
    selector_no_backoff="clusterSelector: no backoffLimit > 0",
    interactive_no_backoff="InteractiveMode: no backoffLimit > 0",
    sidecar_no_submitter_template="SidecarMode: no submitterPodTemplate",
    sidecar_no_submitter_config="SidecarMode: no submitterConfig",
    sidecar_head_restart_never="SidecarMode: head restartPolicy Never or unset",
    job_no_k8s_token_auth="rayClusterSpec.authOptions.enableK8sTokenAuth: not for a RayJob",
    runtime_env_yaml="runtimeEnvYAML: YAML of a mapping",
    active_deadline_positive="activeDeadlineSeconds > 0",
    pre_running_deadline_positive="preRunningDeadlineSeconds > 0",
    backoff_non_negative="backoffLimit >= 0",
)
_rules(
    "validateDeletionConfiguration",
    ttl_needs_shutdown="ttlSecondsAfterFinished > 0: only with shutdownAfterJobFinishes",
    deletion_strategy_gate="deletionStrategy: only with the RayJobDeletionPolicy gate",
    deletion_rules_vs_shutdown="deletionRules: not with shutdownAfterJobFinishes",
    deletion_rules_vs_legacy="deletionRules: not with onSuccess/onFailure",
    deletion_strategy_empty="deletionStrategy: onSuccess and onFailure, or deletionRules",
)
_rules(
    "validateLegacyDeletionPolicies",
    legacy_both_policies="onSuccess and onFailure together",
    legacy_onsuccess_policy="onSuccess.policy set",
    legacy_onfailure_policy="onFailure.policy set",
    legacy_selector_onsuccess="clusterSelector: onSuccess not DeleteCluster/DeleteWorkers",
    legacy_selector_onfailure="clusterSelector: onFailure not DeleteCluster/DeleteWorkers",
    legacy_delete_workers_autoscaling="DeleteWorkers: not with in-tree autoscaling",
    legacy_shutdown_delete_none="shutdownAfterJobFinishes: no DeleteNone policy",
)
_rules(
    "validateDeletionRules, validateDeletionCondition, validateTTLConsistency",
    rule_condition_both="a condition: not both jobStatus and jobDeploymentStatus",
    rule_condition_neither="a condition: jobStatus or jobDeploymentStatus",
    rule_ttl_non_negative="a condition's ttlSeconds >= 0",
    rule_selector_policy="clusterSelector: no DeleteCluster/DeleteWorkers rule",
    rule_delete_workers_autoscaling="DeleteWorkers rule: not with in-tree autoscaling",
    rule_duplicate_job_status="one rule per (jobStatus, policy)",
    rule_duplicate_deployment_status="one rule per (jobDeploymentStatus, policy)",
    rule_ttl_order="per condition: DeleteWorkers TTL <= DeleteCluster TTL <= DeleteSelf TTL",
)
_rules(
    "ValidateRayClusterSpec",
    head_has_container="headGroupSpec: at least one container",
    worker_has_container="each worker group: at least one container",
    worker_replicas_set="without in-tree autoscaling: minReplicas and maxReplicas set",
    worker_min_non_negative="minReplicas >= 0",
    worker_max_non_negative="maxReplicas >= 0",
    worker_min_le_max="minReplicas <= maxReplicas",
    ft_annotation_and_options="not both the ray.io/ft-enabled annotation and gcsFaultToleranceOptions",
    redis_address_needs_ft="RAY_REDIS_ADDRESS in the head: only with gcsFaultToleranceOptions",
    ft_no_redis_password_param="gcsFaultToleranceOptions: no rayStartParams redis-password",
    ft_no_redis_password_env="gcsFaultToleranceOptions: no REDIS_PASSWORD in the head",
    ft_no_redis_address_env="gcsFaultToleranceOptions: no RAY_REDIS_ADDRESS in the head",
    ft_no_storage_namespace_annotation="gcsFaultToleranceOptions: no ray.io/external-storage-namespace annotation",
    no_redis_username="no redis-username in rayStartParams nor REDIS_USERNAME in the head",
    worker_suspend_gate="a suspended worker group: only with the RayJobDeletionPolicy gate",
    autoscaler_v2_env_needs_autoscaling="RAY_enable_autoscaler_v2=1/true in the head: only with in-tree autoscaling",
    autoscaling_no_worker_suspend="in-tree autoscaling: no suspended worker group",
    autoscaler_version_or_env="autoscalerOptions.version or RAY_enable_autoscaler_v2 in the head, not both",
    autoscaler_v2_head_restart_never="autoscaler v2: head restartPolicy Never or unset",
    autoscaler_v2_worker_restart_never="autoscaler v2: worker restartPolicy Never or unset",
    autoscaler_idle_timeout_non_negative="autoscalerOptions.idleTimeoutSeconds >= 0",
    autoscaler_env_no_start_cmd="autoscalerOptions.env: no KUBERAY_GEN_AUTOSCALER_START_CMD",
    history_gate="historyServerOptions: only with the RayClusterHistoryServer gate",
    history_collector_set="historyServerOptions.collectorOptions set",
    history_head_container_name="historyServerOptions: no head container named ray-history-collector",
    history_worker_container_name="historyServerOptions: no worker container named ray-history-collector",
    auth_ray_version_set="token auth: rayVersion set",
    auth_ray_version_valid="token auth: rayVersion a version",
    auth_ray_version_min="token auth: Ray >= 2.52.0",
    k8s_auth_ray_version_min="enableK8sTokenAuth: Ray >= 2.55.0",
    k8s_auth_no_secret_name="enableK8sTokenAuth: no authOptions.secretName",
    k8s_auth_needs_token_mode="enableK8sTokenAuth: only with authOptions.mode token",
    network_policy_gate="networkPolicy: only with the RayClusterNetworkPolicy gate",
    tls_gate="tlsOptions: only with the RayClusterMTLS gate",
)
_rules(
    "validateRayGroupResources, validateRayGroupLabels",
    group_resources_once="a group's resources in rayStartParams or in resources, not both",
    group_no_labels_param="no rayStartParams labels (use labels)",
    group_label_key="labels: keys are qualified names",
    group_label_value="labels: values are label values",
)
_rules(
    "validateWorkerGroupIdleTimeout, validateWorkerGroupPriority",
    worker_idle_timeout_non_negative="idleTimeoutSeconds >= 0",
    worker_idle_timeout_needs_v2="idleTimeoutSeconds: only with autoscaler v2",
    worker_priority_version_set="priority: rayVersion set",
    worker_priority_version_valid="priority: rayVersion a version",
    worker_priority_version_min="priority: Ray >= 2.56.0",
    worker_priority_needs_v2="priority: only with autoscaler v2",
)
_rules(
    "validateGcsFaultToleranceBackend",
    rocksdb_gate="backend rocksdb: only with the GCSFaultToleranceEmbeddedStorage gate",
    rocksdb_no_redis_address="backend rocksdb: no redisAddress",
    rocksdb_no_redis_username="backend rocksdb: no redisUsername",
    rocksdb_no_redis_password="backend rocksdb: no redisPassword",
    rocksdb_no_storage_namespace="backend rocksdb: no externalStorageNamespace",
    rocksdb_claim_exclusive="backend rocksdb: storage.claimName without size, storageClassName, accessModes",
    rocksdb_no_storage_env="backend rocksdb: no RAY_gcs_storage(_path) in the head",
    rocksdb_no_storage_mount="backend rocksdb: no head mount named gcs-storage or at /data/gcs",
    rocksdb_no_storage_volume="backend rocksdb: no head volume named gcs-storage",
    redis_no_storage="backend redis: no storage",
)
_rules(
    "validateCollectorOptions",
    collector_image="collectorOptions.image set",
    collector_env_managed="collectorOptions.env: none of the variables KubeRay injects",
    collector_storage_backend="collectorOptions.env: STORAGE_BACKEND set",
    collector_gcs_bucket="STORAGE_BACKEND GCS: GCS_BUCKET set",
    collector_s3_region="STORAGE_BACKEND S3: S3_REGION set",
    collector_azure_connection_string="AZUREBLOB with connection_string auth: AZURE_STORAGE_CONNECTION_STRING set",
    collector_azure_account_url="AZUREBLOB with workload_identity/default auth: AZURE_STORAGE_ACCOUNT_URL set",
    collector_azure_either="AZUREBLOB: AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL set",
    collector_oss_bucket="ALIYUNOSS: OSS_BUCKET set",
    collector_oss_endpoint="ALIYUNOSS: OSS_ENDPOINT set",
    collector_oss_region="ALIYUNOSS: OSS_REGION set",
)
_rules(
    "validateNetworkPolicy",
    np_head_ingress="mode DenyAllEgress: no head ingressRules",
    np_head_egress="mode DenyAllIngress: no head egressRules",
    np_worker_ingress="mode DenyAllEgress: no worker ingressRules",
    np_worker_egress="mode DenyAllIngress: no worker egressRules",
    np_group_name_dns1123="networkPolicy: worker group names are DNS-1123 labels",
    np_group_ingress="mode DenyAllEgress: no workerGroups[] ingressRules",
    np_group_egress="mode DenyAllIngress: no workerGroups[] egressRules",
    np_group_unknown="networkPolicy.workerGroups[] names a worker group",
)
_rules(
    "validateTLSOptions",
    tls_head_env="TLS: no RAY_USE_TLS / RAY_TLS_* in the head",
    tls_head_mount="TLS: no head mount named ray-tls or at /etc/ray/tls",
    tls_worker_env="TLS: no RAY_USE_TLS / RAY_TLS_* in a worker group",
    tls_worker_mount="TLS: no worker mount named ray-tls or at /etc/ray/tls",
    tls_autoscaler_env="TLS: no RAY_USE_TLS / RAY_TLS_* in autoscalerOptions.env",
    tls_autoscaler_mount="TLS: no autoscalerOptions mount named ray-tls or at /etc/ray/tls",
)
_rules(
    "ValidateRayClusterUpgradeOptions (on the RayCluster the RayJob creates)",
    upgrade_type="upgradeStrategy.type: Recreate or None",
    upgrade_not_for_rayjob="upgradeStrategy.type: not on a RayJob's cluster",
)


@dataclass(frozen=True)
class Problem:
    """One rule broken: which (an id of :data:`RULES`), where in the manifest, and what to do."""

    rule: str
    field: str
    message: str

    def __post_init__(self):
        assert self.rule in RULES, self.rule

    def __str__(self) -> str:
        return f"{self.field}: {self.message} [KubeRay {RELEASE} {self.rule}]"


AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"  # the head's way to ask for autoscaler v2 (KubeRay < 1.4)
# k8s.io/apimachinery version.ParseGeneric: two or more dot-separated numbers (the first without a leading
# zero), optionally a leading "v", then anything.
GENERIC_VERSION = re.compile(r"\s*v?((?:0|[1-9][0-9]*)(?:\.[0-9]+)+)(.*)", re.S)


def in_tree_autoscaling(cluster: dict[str, Any] | None) -> bool:
    return bool(cluster and cluster.get("enableInTreeAutoscaling"))


def autoscaler_v2(cluster: dict[str, Any]) -> bool:
    return get(cluster, "autoscalerOptions", "version") == "v2"


def env_of(container: dict[str, Any]) -> dict[str, dict]:
    """A container's env entries by name."""
    return {e["name"]: e for e in container.get("env") or []}


def get(mapping: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or mapping.get(key) is None:
            return default
        mapping = mapping[key]
    return mapping


def parse_version(text: str) -> tuple[int, ...] | None:
    """A version as ParseGeneric reads it, padded to three components (Version.compareInternal counts a missing
    one as 0), or None."""
    match = GENERIC_VERSION.fullmatch(text)
    return (*map(int, match.group(1).split(".")), 0, 0)[:3] if match else None
