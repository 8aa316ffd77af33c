"""What `python -m orchestrator.deploy check` checks: the files a deployment is made of, offline, before anything runs.

- A KubeRay RayJob manifest: the API server's schema and CEL rules and the operator's own rules, as KubeRay
  v1.7.0 applies them (:mod:`orchestrator.deploy.kuberay`), then what a sweep needs of it that KubeRay does not
  check: an entrypoint (`ray job submit` needs one, and without it the job fails only once every pod is up).
- A Ray cluster launcher config (cluster.yaml): Ray's own schema for it (the file Ray's launcher validates
  against, read without importing Ray), and on AWS an IAM instance profile for every node type: Ray's AWS
  provider gives its default role to the head only, so a worker without a profile cannot reach the bucket.
- In both, placeholders left unedited (YOUR-REGISTRY, YOUR-BUCKET, ...), each named with its field and its fix.

Each problem is one line, ``FILE: FIELD: what is wrong; what to do``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from orchestrator.deploy.kuberay import operator_errors, schema_errors

# What each placeholder of the shipped files stands for, as the fix to write in its place.
PLACEHOLDERS = {
    "YOUR-REGISTRY": "the registry you pushed the image to (`docker build -f deploy/kuberay/Dockerfile -t "
    "REGISTRY/plateau-sweep:TAG . && docker push REGISTRY/plateau-sweep:TAG`)",
    "YOUR-BUCKET": "your S3 bucket, the one the instance profile or Secret can write (README, Run on a cluster)",
}
PLACEHOLDER = re.compile(r"YOUR-[A-Z0-9-]*[A-Z0-9]")
# A RayJob without an entrypoint is valid to KubeRay: in InteractiveMode the user submits the job later.
SUBMITTING_MODES = ("K8sJobMode", "HTTPMode", "SidecarMode")


def placeholders(document: Any, path: str = "") -> list[str]:
    """Every placeholder left in a parsed YAML document, as ``FIELD: ...`` lines naming the fix."""
    if isinstance(document, dict):
        return [line for key, value in document.items() for line in placeholders(value, _join(path, key))]
    if isinstance(document, list):
        return [line for i, value in enumerate(document) for line in placeholders(value, f"{path}[{i}]")]
    if not isinstance(document, str):
        return []
    return [
        f"{path or '(top)'}: {found} is a placeholder; put {PLACEHOLDERS.get(found, 'your own value')} in its place"
        for found in dict.fromkeys(PLACEHOLDER.findall(document))
    ]


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def rayjob_problems(manifest: Any, gates: dict[str, bool] | None = None) -> list[str]:
    """What would stop this RayJob: refused by the API server, failed by the operator, or unable to run a sweep."""
    errors = schema_errors(manifest)
    if errors:  # the API server refuses it: the operator never sees it, and its rules assume the schema's types
        return errors
    errors = [str(p) for p in operator_errors(manifest, gates)]
    spec = manifest["spec"]
    if spec.get("submissionMode", "K8sJobMode") in SUBMITTING_MODES and not spec.get("entrypoint", "").strip():
        errors.append(
            "spec.entrypoint: missing; `ray job submit` needs the command to run, e.g. `python -m "
            "orchestrator.launch specs/best.yaml --set storage.path=s3://BUCKET/sweeps` (KubeRay accepts a RayJob "
            "without one, and its submitter fails only once every pod is up)"
        )
    return errors + placeholders(manifest)


def _ray_cluster_schema() -> dict[str, Any]:
    """The JSON Schema Ray's cluster launcher validates a cluster.yaml against, from the installed Ray, not imported."""
    ray = importlib.util.find_spec("ray")  # finds the package without running it: no Ray runtime for a file check
    if ray is None or not ray.submodule_search_locations:
        raise FileNotFoundError("Ray is not installed: pip install -e . installs the pinned release")
    return json.loads((Path(ray.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json").read_text())


def cluster_problems(config: Any) -> list[str]:
    """What would stop `ray up` on this cluster launcher config, or its workers from reaching the bucket.

    Ray's schema and the cross-checks of ``ray.autoscaler._private.util.validate_config``; on AWS, an
    instance profile for every node type.
    """
    validator = jsonschema.Draft7Validator(_ray_cluster_schema())
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if errors:
        return errors
    types = config.get("available_node_types") or {}
    if types:
        head = config.get("head_node_type")
        if head not in types:
            errors.append(f"head_node_type: {head!r} must be one of available_node_types ({', '.join(types)})")
        least = sum(t.get("min_workers", 0) for t in types.values())
        if least > config.get("max_workers", least):
            errors.append(f"max_workers: {config['max_workers']} is less than the node types' min_workers ({least})")
    if config["provider"].get("type") == "aws":
        for name, node in types.items():
            profile = node["node_config"].get("IamInstanceProfile") or {}
            if not (profile.get("Name") or profile.get("Arn")):
                without = (
                    "Ray gives the head its default role, which may not pass the workers' role to EC2 (iam:PassRole)"
                    if name == config.get("head_node_type")
                    else "Ray's AWS provider gives its default role to the head only: this node could not read or "
                    "write the sweep's bucket"
                )
                errors.append(
                    f"available_node_types.{name}.node_config.IamInstanceProfile: missing; {without}; set {{Name: "
                    'PROFILE}, a profile made as README\'s "Run on a cluster" says'
                )
    return errors + placeholders(config)


def check_file(path: Path, gates: dict[str, bool] | None = None) -> list[str]:
    """Every problem in this file, as ``FILE: FIELD: ...`` lines (empty: ready to deploy).

    A Kubernetes manifest (``apiVersion``, ``kind``) is checked as a RayJob; anything else as a cluster
    launcher config.
    """
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as err:
        return [f"{path}: cannot read it: {err.strerror}"]
    except yaml.YAMLError as err:
        return [f"{path}: not valid YAML: {err}"]
    manifest = isinstance(document, dict) and ("apiVersion" in document or "kind" in document)
    problems = rayjob_problems(document, gates) if manifest else cluster_problems(document)
    return [f"{path}: {line}" for line in problems]
