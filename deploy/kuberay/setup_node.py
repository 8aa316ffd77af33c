"""Set this machine up the way `ray up cluster.yaml` sets up a node: run cluster.yaml's setup_commands, in order.

deploy/kuberay/Dockerfile runs it at build time, so the RayJob's pods and the cluster launcher's nodes are
installed by one list of commands, the one in cluster.yaml.

    python deploy/kuberay/setup_node.py cluster.yaml
"""

import subprocess
import sys
from pathlib import Path

import yaml  # PyYAML: a dependency of Ray, so it is in Ray's image before anything is installed


def main(cluster_yaml: str) -> int:
    """Run each of the file's setup_commands; stop at the first that fails and return its exit code."""
    commands = yaml.safe_load(Path(cluster_yaml).read_text())["setup_commands"]
    for command in commands:
        print(f"+ {command}", flush=True)
        # Each in its own bash, from the home directory, as the launcher runs them over SSH: `~`, `cd` and
        # `&&` mean the same here as there.
        done = subprocess.run(command, shell=True, executable="/bin/bash", cwd=Path.home(), check=False)
        if done.returncode != 0:
            print(f"setup_node: exit {done.returncode} from: {command}", file=sys.stderr)
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
