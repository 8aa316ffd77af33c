"""python -m orchestrator.deploy check [RAYJOB.yaml] [cluster.yaml]: is this deployment ready to apply?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.deploy.check import check_file
from orchestrator.deploy.kuberay import FEATURE_GATES, RELEASE

EXIT_READY, EXIT_REFUSED = 0, 2


def _gates(text: str) -> dict[str, bool]:
    gates = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in FEATURE_GATES or value.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected NAME=true|false with NAME one of {', '.join(FEATURE_GATES)}"
            )
        gates[name] = value.lower() == "true"
    return gates


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.deploy",
        description=__doc__.split(":", 1)[1].strip(),
        epilog=f"exit codes: {EXIT_READY} every file passes; {EXIT_REFUSED} a file has a problem (each printed as "
        "FILE: FIELD: problem; fix) or could not be read. Needs no cluster and no network.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="check a RayJob manifest and/or a cluster.yaml",
        description=f"A RayJob against KubeRay {RELEASE}'s CRD schema and operator rules, plus what a sweep needs "
        "(an entrypoint); a cluster.yaml against Ray's own schema, plus an IAM instance profile per node type on "
        "AWS; placeholders left in either (YOUR-REGISTRY, YOUR-BUCKET). A file with apiVersion or kind is checked "
        "as a RayJob, any other as a cluster.yaml.",
        epilog=f"exit codes: {EXIT_READY} every file passes; {EXIT_REFUSED} a file has a problem or could not be read.",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a RayJob manifest or a cluster.yaml")
    check.add_argument(
        "--feature-gates",
        type=_gates,
        default={},
        metavar="NAME=BOOL,...",
        help=f"the operator's --feature-gates, when yours differ from {RELEASE}'s defaults "
        f"({', '.join(f'{k}={str(v).lower()}' for k, v in FEATURE_GATES.items())})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problems = [line for path in args.files for line in check_file(path, args.feature_gates)]
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s): fix them before deploying", file=sys.stderr)
        return EXIT_REFUSED
    print(f"ready to deploy: {', '.join(map(str, args.files))}")
    return EXIT_READY


if __name__ == "__main__":
    sys.exit(main())
