"""Set this machine up the way `ray up cluster.yaml` sets up a node: run cluster.yaml's setup_commands, in order.

deploy/kuberay/Dockerfile runs it at build time, so the RayJob's pods and the cluster launcher's nodes are
installed by one list of commands, the one in cluster.yaml. The image splits that list in two layers at the
project's own install (the command ending in `pip install ... -e .`), so that an edit to the code does not
install torch again:

    python deploy/kuberay/setup_node.py cluster.yaml --dependencies   # with pyproject.toml alone
    python deploy/kuberay/setup_node.py cluster.yaml --project        # with the whole project

``--dependencies`` runs the commands before the project's install, then that command with the project's
declared dependencies (pyproject.toml) in place of the project; ``--project`` runs the project's install and
the commands after it. Without either, every command runs.
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml  # PyYAML: a dependency of Ray, so it is in Ray's image before anything is installed

PROJECT_INSTALL = re.compile(r"pip install .*-e \.$")


def stages(commands: list[str], requirements: Path) -> dict[str, list[str]]:
    """The commands of each stage: ``dependencies`` (before the project install, then that install with
    ``-r requirements`` for ``-e .``) and ``project`` (the install and what follows)."""
    (at,) = [i for i, command in enumerate(commands) if PROJECT_INSTALL.search(command)]
    dependencies = PROJECT_INSTALL.sub(lambda m: m.group(0)[: -len("-e .")] + f"-r {requirements}", commands[at])
    return {"dependencies": [*commands[:at], dependencies], "project": commands[at:]}


def main(cluster_yaml: str, stage: str = "") -> int:
    """Run the stage's setup commands (every command without one); stop at the first that fails, with its code."""
    commands = yaml.safe_load(Path(cluster_yaml).read_text())["setup_commands"]
    if stage:
        import tomllib  # Python 3.11, as in Ray's py311 image (a plain run needs only PyYAML)

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
            declared = tomllib.loads((Path(cluster_yaml).parent / "pyproject.toml").read_text())["project"][
                "dependencies"
            ]
            requirements.write("\n".join(declared) + "\n")
        commands = stages(commands, Path(requirements.name))[stage.removeprefix("--")]
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
