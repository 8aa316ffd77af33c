"""Deployment checks: a RayJob manifest and a Ray cluster launcher config, checked offline before they are used.

    python -m orchestrator.deploy check deploy/kuberay/rayjob.yaml cluster.yaml

The same validation the tests apply to the shipped files (:mod:`orchestrator.deploy.check`), with KubeRay's own
schema and rules pinned to one release (:mod:`orchestrator.deploy.kuberay`). Neither Ray's runtime nor torch is
imported: the check needs no cluster, no network and no GPU.
"""
