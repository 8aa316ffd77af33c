"""A RayJob manifest checked offline, the two ways a KubeRay v1.7.0 cluster checks it.

1. :func:`schema_errors`: the API server, against the RayJob CRD's OpenAPI schema and its CEL rules.
   `kubectl apply` asks for strict field validation (Kubernetes 1.27+), so an unknown field is an error
   there, not a field silently dropped; :func:`strict` makes jsonschema do the same.
2. :func:`operator_errors`: the operator's own rules, which the schema cannot express. The operator applies
   them after `kubectl apply` has succeeded (the webhook, when enabled, checks only the name): a manifest that
   breaks one is accepted, and the RayJob then sits in `ValidationFailed`.

Both are pinned to one KubeRay release, :data:`RELEASE`: the schema file in deploy/kuberay/schema/ is that
release's CRD, and the rules are a port of that release's ray-operator/controllers/ray/utils/validation.go:
every check of ``ValidateRayJobMetadata``, ``ValidateRayJobSpec`` and what it calls (``ValidateRayClusterSpec``,
the deletion strategy's checks), and ``ValidateRayClusterUpgradeOptions``, which the RayCluster the RayJob
creates meets. :data:`RULES` lists them; docs/KUBERAY_RULES.md has the table with the test that breaks each.
The operator stops at the first rule broken; here every broken rule is reported.

The operator's feature gates change which rules apply; :data:`FEATURE_GATES` holds v1.7.0's defaults, and
``gates`` overrides them as the operator's ``--feature-gates`` flag does.
"""

from orchestrator.deploy.kuberay.job import operator_errors
from orchestrator.deploy.kuberay.rules import FEATURE_GATES, RELEASE, RULES, Problem
from orchestrator.deploy.kuberay.schema import SCHEMA, schema_errors, strict

__all__ = [
    "FEATURE_GATES",
    "RELEASE",
    "RULES",
    "SCHEMA",
    "Problem",
    "operator_errors",
    "schema_errors",
    "strict",
]
