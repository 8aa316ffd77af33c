"""deploy/kuberay/rayjob.yaml, checked offline as KubeRay v1.7.0 would check it, and against cluster.yaml.

cluster.yaml (the Ray cluster launcher) and the RayJob are two ways to run one sweep. They must agree on
the Ray version (pyproject.toml's pin), on how a node is installed (the image runs cluster.yaml's own
setup_commands) and on what runs (the entrypoint's module and spec, which `ray up` plans as its last
setup step). Those tests each compare two files, so an edit to one of them alone fails.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.rayjob_checks import operator_errors, schema_errors, strict

RAYJOB = Path("deploy/kuberay/rayjob.yaml")  # tests run from the repository root (conftest)
DOCKERFILE = Path("deploy/kuberay/Dockerfile")
DOCKERIGNORE = Path("deploy/kuberay/Dockerfile.dockerignore")
SETUP_NODE = Path("deploy/kuberay/setup_node.py")
README = Path("README.md")  # its "Run on Kubernetes (KubeRay)" section
IMAGE_HOME = "/home/ray"  # the home of the `ray` user in Ray's images


@pytest.fixture
def rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def _cluster() -> dict:
    return yaml.safe_load(Path("cluster.yaml").read_text())


def _dockerfile(instruction: str) -> list[str]:
    """The arguments of each `instruction` line of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [args for op, args in lines if op == instruction]


def _containers(rayjob: dict) -> list[tuple[str, dict]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, c) for name, group in groups for c in group["template"]["spec"]["containers"]]


# --- The manifest, as KubeRay checks it ------------------------------------------------------------------


def test_the_rayjob_passes_the_crd_schema(rayjob):
    assert schema_errors(rayjob) == []


def test_the_rayjob_passes_the_operators_rules(rayjob):
    assert operator_errors(rayjob) == []


def _head(rayjob: dict) -> dict:
    return rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    "typo, where",
    [
        (lambda m: _rename(m["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"), "spec"),
        (
            lambda m: _rename(_head(m)["template"]["spec"]["containers"][0], "envFrom", "envFrm"),
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


def _set(path: str, value):
    """A change to the manifest: set the dotted `path` (under the RayJob) to `value`, or delete it (None)."""

    def change(manifest: dict) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            manifest = manifest[key]
        if value is None:
            del manifest[leaf]
        else:
            manifest[leaf] = value

    return change


# One change to the real manifest per rule of the operator; the schema accepts each, the rules must not.
BROKEN = {
    "name-too-long": (_set("metadata.name", "plateau-sweep-" + "x" * 34), "has 48 characters; at most 47"),
    "name-not-dns-1035": (_set("metadata.name", "plateau_sweep"), "is not a DNS-1035 label"),
    "suspend-without-shutdown": (
        lambda m: (_set("spec.suspend", True)(m), _set("spec.shutdownAfterJobFinishes", False)(m)),
        "spec.suspend: a RayJob with shutdownAfterJobFinishes false cannot be suspended",
    ),
    "ttl-negative": (_set("spec.ttlSecondsAfterFinished", -1), "spec.ttlSecondsAfterFinished: must be a non-negative"),
    "ttl-without-shutdown": (_set("spec.shutdownAfterJobFinishes", False), "needs shutdownAfterJobFinishes true"),
    "no-cluster": (_set("spec.rayClusterSpec", None), "one of rayClusterSpec or clusterSelector must be set"),
    "unknown-submission-mode": (_set("spec.submissionMode", "K8sJob"), "spec.submissionMode: 'K8sJob' is not one of"),
    "runtime-env-not-yaml": (_set("spec.runtimeEnvYAML", "working_dir: [/home/ray"), "runtimeEnvYAML: not valid YAML"),
    "runtime-env-not-a-mapping": (_set("spec.runtimeEnvYAML", "- working_dir"), "runtimeEnvYAML: must be a mapping"),
    "head-resources-twice": (
        _set("spec.rayClusterSpec.headGroupSpec.resources", {"CPU": "0"}),
        "headGroupSpec: resources set in both rayStartParams (num-cpus) and resources",
    ),
}


@pytest.mark.parametrize("change, rule", BROKEN.values(), ids=BROKEN.keys())
def test_the_operators_rules_refuse_a_broken_manifest(rayjob, change, rule):
    broken = copy.deepcopy(rayjob)
    change(broken)
    assert schema_errors(broken) == []  # what these rules catch, the schema lets through
    errors = operator_errors(broken)
    assert any(rule in e for e in errors), errors


# --- What the pods run -----------------------------------------------------------------------------------


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


# --- One sweep, two ways to run it: the RayJob and cluster.yaml agree ------------------------------------


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


def test_the_image_is_installed_by_cluster_yamls_setup_commands():
    (run,) = _dockerfile("RUN")
    assert run.endswith(f"python {SETUP_NODE} cluster.yaml"), run
    # KubeRay's `ray start` finds `ray` on PATH: it must be the venv's, the one cluster.yaml starts
    starts = _cluster()["head_start_ray_commands"] + _cluster()["worker_start_ray_commands"]
    ray_bins = {Path(m).parent for c in starts for m in re.findall(r"(\S+/ray) start", c)}
    (path,) = [e.removeprefix("PATH=") for e in _dockerfile("ENV") if e.startswith("PATH=")]
    assert {str(b).replace("~", IMAGE_HOME) for b in ray_bins} == {path.split(":")[0]}


def test_setup_node_runs_the_setup_commands_in_order_from_home_and_stops_at_a_failure(tmp_path):
    log = tmp_path / "log"
    commands = [f"echo one >> {log}", f"cd ~ && echo two-$(pwd) >> {log}", "exit 7", f"echo never >> {log}"]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"setup_commands": commands}))
    done = subprocess.run(
        [sys.executable, str(SETUP_NODE), str(tmp_path / "cluster.yaml")],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert log.read_text().split() == ["one", f"two-{tmp_path}"]
    assert "exit 7 from: exit 7" in done.stderr


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
    assert _dockerfile("COPY")[0].split()[-1] == project
    # and the job runs there, as `ray job submit --working-dir .` runs in the project on cluster.yaml's cluster
    assert yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["working_dir"] == project
