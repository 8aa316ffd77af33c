"""The operator's rules for a RayCluster's optional features: GCS fault tolerance, the history server, token auth,
network policies and TLS. Fields are relative to ``spec.rayClusterSpec``."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.deploy.kuberay.rules import Problem, env_of, get, parse_version

# k8s.io/apimachinery validation IsDNS1123Label (with at most 63 characters).
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# constant.go: what KubeRay manages itself when a feature is on
TLS_ENV = ("RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
TLS_VOLUME, TLS_MOUNT_PATH = "ray-tls", "/etc/ray/tls"
GCS_STORAGE_VOLUME, GCS_STORAGE_MOUNT_PATH = "gcs-storage", "/data/gcs"
COLLECTOR_CONTAINER = "ray-history-collector"
COLLECTOR_MANAGED_ENV = (
    "POD_IP",
    "FQ_RAY_IP",
    "RAY_CLUSTER_NAME",
    "RAY_CLUSTER_NAMESPACE",
    "RAY_ROLE",
    "OWNER_KIND",
    "OWNER_NAME",
    "EVENTS_PORT",
)


def fault_tolerance_errors(
    spec: dict[str, Any],
    annotations: dict[str, str],
    head: dict[str, Any],
    head_container: dict[str, Any],
    head_env: dict[str, dict],
    gates: dict[str, bool],
) -> list[Problem]:
    options = spec.get("gcsFaultToleranceOptions")
    params = head.get("rayStartParams") or {}
    env_field = "headGroupSpec.template.spec.containers[0].env"
    p = []
    if annotations.get("ray.io/ft-enabled") and options is not None:
        p.append(
            Problem(
                "ft-annotation-and-options",
                "gcsFaultToleranceOptions",
                "remove the ray.io/ft-enabled annotation: gcsFaultToleranceOptions alone configures it",
            )
        )
    enabled = annotations.get("ray.io/ft-enabled", "").lower() == "true" or options is not None
    if not enabled and "RAY_REDIS_ADDRESS" in head_env:
        p.append(Problem("redis-address-needs-ft", env_field, "RAY_REDIS_ADDRESS needs gcsFaultToleranceOptions set"))
    if options is not None:
        if params.get("redis-password"):
            p.append(
                Problem(
                    "ft-no-redis-password-param",
                    "headGroupSpec.rayStartParams.redis-password",
                    "use gcsFaultToleranceOptions.redisPassword",
                )
            )
        if "REDIS_PASSWORD" in head_env:
            p.append(Problem("ft-no-redis-password-env", env_field, "use gcsFaultToleranceOptions.redisPassword"))
        if "RAY_REDIS_ADDRESS" in head_env:
            p.append(Problem("ft-no-redis-address-env", env_field, "use gcsFaultToleranceOptions.redisAddress"))
        if annotations.get("ray.io/external-storage-namespace"):
            p.append(
                Problem(
                    "ft-no-storage-namespace-annotation",
                    "gcsFaultToleranceOptions",
                    "use gcsFaultToleranceOptions.externalStorageNamespace instead of the annotation",
                )
            )
        p += _fault_tolerance_backend(options, head, head_container, gates)
    if params.get("redis-username") or "REDIS_USERNAME" in head_env:
        p.append(Problem("no-redis-username", "headGroupSpec", "use gcsFaultToleranceOptions.redisUsername"))
    return p


def _fault_tolerance_backend(
    options: dict[str, Any], head: dict[str, Any], head_container: dict[str, Any], gates: dict[str, bool]
) -> list[Problem]:
    where = "gcsFaultToleranceOptions"
    storage = options.get("storage")
    if options.get("backend", "redis") in ("", "redis"):
        return [Problem("redis-no-storage", f"{where}.storage", "only for backend rocksdb")] if storage else []
    if not gates["GCSFaultToleranceEmbeddedStorage"]:
        return [Problem("rocksdb-gate", f"{where}.backend", "rocksdb needs the GCSFaultToleranceEmbeddedStorage gate")]
    p = []
    for key, rule in (
        ("redisAddress", "rocksdb-no-redis-address"),
        ("redisUsername", "rocksdb-no-redis-username"),
        ("redisPassword", "rocksdb-no-redis-password"),
        ("externalStorageNamespace", "rocksdb-no-storage-namespace"),
    ):
        if options.get(key):
            p.append(Problem(rule, f"{where}.{key}", "not with backend rocksdb"))
    storage = storage or {}
    if storage.get("claimName") and any(storage.get(k) for k in ("size", "storageClassName", "accessModes")):
        p.append(
            Problem(
                "rocksdb-claim-exclusive",
                f"{where}.storage",
                "claimName excludes size, storageClassName and accessModes",
            )
        )
    head_env = env_of(head_container)
    if "RAY_gcs_storage" in head_env or "RAY_gcs_storage_path" in head_env:
        p.append(
            Problem(
                "rocksdb-no-storage-env",
                "headGroupSpec.template.spec.containers[0].env",
                "RAY_gcs_storage and RAY_gcs_storage_path are KubeRay's own with backend rocksdb",
            )
        )
    mounts = head_container.get("volumeMounts") or []
    if any(m.get("mountPath") == GCS_STORAGE_MOUNT_PATH or m.get("name") == GCS_STORAGE_VOLUME for m in mounts):
        p.append(
            Problem(
                "rocksdb-no-storage-mount",
                "headGroupSpec.template.spec.containers[0].volumeMounts",
                f"{GCS_STORAGE_VOLUME} at {GCS_STORAGE_MOUNT_PATH} is KubeRay's own with backend rocksdb",
            )
        )
    if any(v.get("name") == GCS_STORAGE_VOLUME for v in get(head, "template", "spec", "volumes", default=[])):
        p.append(
            Problem(
                "rocksdb-no-storage-volume",
                "headGroupSpec.template.spec.volumes",
                f"a volume named {GCS_STORAGE_VOLUME} is KubeRay's own with backend rocksdb",
            )
        )
    return p


def history_server_errors(spec, head_containers, workers, gates) -> list[Problem]:
    options = spec.get("historyServerOptions")
    if options is None:
        return []
    where = "historyServerOptions"
    if not gates["RayClusterHistoryServer"]:
        return [Problem("history-gate", where, "needs the RayClusterHistoryServer feature gate")]
    collector = options.get("collectorOptions")
    if collector is None:
        return [Problem("history-collector-set", f"{where}.collectorOptions", "must be set")]
    p = _collector(collector)
    if p:
        return p
    if any(c.get("name") == COLLECTOR_CONTAINER for c in head_containers):
        p.append(
            Problem(
                "history-head-container-name",
                "headGroupSpec.template.spec.containers",
                f"{COLLECTOR_CONTAINER} is the name of KubeRay's collector; rename it",
            )
        )
    for i, group in enumerate(workers):
        if any(c.get("name") == COLLECTOR_CONTAINER for c in get(group, "template", "spec", "containers", default=[])):
            p.append(
                Problem(
                    "history-worker-container-name",
                    f"workerGroupSpecs[{i}].template.spec.containers",
                    f"{COLLECTOR_CONTAINER} is the name of KubeRay's collector; rename it",
                )
            )
    return p


def _collector(collector: dict[str, Any]) -> list[Problem]:
    where = "historyServerOptions.collectorOptions"
    if not collector.get("image"):
        return [Problem("collector-image", f"{where}.image", "must be set")]
    env = env_of(collector)

    def has(name: str) -> bool:
        return bool(env.get(name, {}).get("value") or env.get(name, {}).get("valueFrom"))

    managed = [name for name in COLLECTOR_MANAGED_ENV if name in env]
    if managed:
        return [Problem("collector-env-managed", f"{where}.env", f"{managed[0]} is KubeRay's own; remove it")]
    backend = env.get("STORAGE_BACKEND", {}).get("value", "")
    if not backend:
        return [Problem("collector-storage-backend", f"{where}.env", "set STORAGE_BACKEND (a literal value)")]
    needs: list[tuple[str, str]] = {
        "GCS": [("collector-gcs-bucket", "GCS_BUCKET")],
        "S3": [("collector-s3-region", "S3_REGION")],
        "ALIYUNOSS": [
            ("collector-oss-bucket", "OSS_BUCKET"),
            ("collector-oss-endpoint", "OSS_ENDPOINT"),
            ("collector-oss-region", "OSS_REGION"),
        ],
    }.get(backend.upper(), [])
    for rule, name in needs:
        if not has(name):
            return [Problem(rule, f"{where}.env", f"set {name} for STORAGE_BACKEND {backend}")]
    if backend.upper() == "AZUREBLOB":
        auth = env.get("AZURE_STORAGE_AUTH_MODE", {}).get("value", "").strip().lower()
        if auth == "connection_string" and not has("AZURE_STORAGE_CONNECTION_STRING"):
            return [Problem("collector-azure-connection-string", f"{where}.env", "set AZURE_STORAGE_CONNECTION_STRING")]
        if auth in ("workload_identity", "default") and not has("AZURE_STORAGE_ACCOUNT_URL"):
            return [Problem("collector-azure-account-url", f"{where}.env", "set AZURE_STORAGE_ACCOUNT_URL")]
        if auth not in ("connection_string", "workload_identity", "default") and not (
            has("AZURE_STORAGE_CONNECTION_STRING") or has("AZURE_STORAGE_ACCOUNT_URL")
        ):
            return [
                Problem(
                    "collector-azure-either",
                    f"{where}.env",
                    "set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL",
                )
            ]
    return []


def auth_errors(spec: dict[str, Any]) -> list[Problem]:
    auth = spec.get("authOptions") or {}
    k8s = bool(auth.get("enableK8sTokenAuth"))
    if auth.get("mode") != "token":
        return (
            [Problem("k8s-auth-needs-token-mode", "authOptions.mode", "must be token with enableK8sTokenAuth")]
            if k8s
            else []
        )
    raw = spec.get("rayVersion", "")
    version = parse_version(raw)
    if not raw:
        return [Problem("auth-ray-version-set", "rayVersion", "token auth needs rayVersion (Ray >= 2.52.0)")]
    if version is None:
        return [Problem("auth-ray-version-valid", "rayVersion", f"{raw!r} is no version")]
    if version < (2, 52, 0):
        return [Problem("auth-ray-version-min", "rayVersion", f"token auth needs Ray >= 2.52.0, not {raw}")]
    if k8s and version < (2, 55, 0):
        return [Problem("k8s-auth-ray-version-min", "rayVersion", f"enableK8sTokenAuth needs Ray >= 2.55.0, not {raw}")]
    if k8s and auth.get("secretName"):
        return [Problem("k8s-auth-no-secret-name", "authOptions.secretName", "not with enableK8sTokenAuth")]
    return []


def network_policy_errors(spec, workers, gates) -> list[Problem]:
    policy = spec.get("networkPolicy")
    if policy is None:
        return []
    if not gates["RayClusterNetworkPolicy"]:
        return [Problem("network-policy-gate", "networkPolicy", "needs the RayClusterNetworkPolicy feature gate")]
    mode = policy.get("mode", "DenyAll")
    p = []
    for part in ("head", "worker"):
        rules = policy.get(part) or {}
        if mode == "DenyAllEgress" and rules.get("ingressRules"):
            p.append(Problem(f"np-{part}-ingress", f"networkPolicy.{part}.ingressRules", f"not with mode {mode}"))
        if mode == "DenyAllIngress" and rules.get("egressRules"):
            p.append(Problem(f"np-{part}-egress", f"networkPolicy.{part}.egressRules", f"not with mode {mode}"))
    names = set()
    for i, group in enumerate(workers):
        name = group.get("groupName", "")
        if len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
            p.append(
                Problem(
                    "np-group-name-dns1123",
                    f"workerGroupSpecs[{i}].groupName",
                    f"{name!r} must be a DNS-1123 label with a networkPolicy (it names a NetworkPolicy)",
                )
            )
        names.add(name)
    for i, group in enumerate(policy.get("workerGroups") or []):
        where = f"networkPolicy.workerGroups[{i}]"
        if mode == "DenyAllEgress" and group.get("ingressRules"):
            p.append(Problem("np-group-ingress", f"{where}.ingressRules", f"not with mode {mode}"))
        if mode == "DenyAllIngress" and group.get("egressRules"):
            p.append(Problem("np-group-egress", f"{where}.egressRules", f"not with mode {mode}"))
        if group.get("groupName") not in names:
            p.append(
                Problem("np-group-unknown", f"{where}.groupName", f"{group.get('groupName')!r} is no worker group")
            )
    return p


def tls_errors(spec, head_container, workers, gates) -> list[Problem]:
    options = spec.get("tlsOptions")
    if options is None:
        return []
    if not gates["RayClusterMTLS"]:
        return [Problem("tls-gate", "tlsOptions", "needs the RayClusterMTLS feature gate")]
    if not options.get("enabled"):
        return []
    p = []
    containers = [("head", "headGroupSpec.template.spec.containers[0]", head_container)] if head_container else []
    for i, group in enumerate(workers):
        group_containers = get(group, "template", "spec", "containers", default=[])
        if group_containers:
            containers.append(("worker", f"workerGroupSpecs[{i}].template.spec.containers[0]", group_containers[0]))
    autoscaler = spec.get("autoscalerOptions")
    if autoscaler is not None:
        containers.append(("autoscaler", "autoscalerOptions", autoscaler))
    for part, where, container in containers:
        present = [name for name in TLS_ENV if name in env_of(container)]
        if present:
            p.append(Problem(f"tls-{part}-env", f"{where}.env", f"{present[0]} is KubeRay's own with tlsOptions"))
        mounts = container.get("volumeMounts") or []
        if any(m.get("name") == TLS_VOLUME or m.get("mountPath") == TLS_MOUNT_PATH for m in mounts):
            p.append(
                Problem(
                    f"tls-{part}-mount",
                    f"{where}.volumeMounts",
                    f"{TLS_VOLUME} at {TLS_MOUNT_PATH} is KubeRay's own with tlsOptions",
                )
            )
    return p
