"""Console share: how many of the lines a sweep prints are the project's own, and what the rest are.

Runs the launcher in a subprocess exactly as a user would (the default job unless a spec
is given), captures stdout and stderr together, and sorts every non-empty line:

- ours: a run's line (``[run] ...``, also when Ray prefixes it with ``(RayTrainWorker pid=N)``),
  the progress table, the launcher's own lines, the verdict and the results table;
- Ray's: everything else, grouped by its first words, the largest groups printed.

    python -m bench.console_lines                          # the default job (specs/smoke.yaml)
    python -m bench.console_lines --spec specs/smoke.yaml --set run.steps=20
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

OURS = [
    re.compile(
        r"^(\(\w+ pid=\d+\) )?\[\S+\] "
    ),  # a run's line ([current[seed=0]] ...), printed by the driver or by a worker
    re.compile(
        r"^(run\s+step\s+val\s+best val\s+status\s+ETA|\S+\s+(\d+/\d+|-)\s+(\d\.\d{4}|-)\s+(\d\.\d{4}|-)\s+\w+\s+\S+)$"
    ),  # progress table
    re.compile(
        r"^(starting a local Ray instance|running \d+ run\(s\)|resuming experiment|results: |local mode: "
        r"|storage\.path is the local folder|error: )"
    ),
    re.compile(
        r"^(Take \*\*|No fix |No control |Only the control |The control \*\*|\|)"
    ),  # the verdict and the results table
]


def is_ours(line: str) -> bool:
    return any(p.search(line) for p in OURS)


def _kind(line: str) -> str:
    """A line without its process prefix and timestamp, cut to its first words: what kind of line it is."""
    line = re.sub(r"^\(\w+ pid=\d+(, ip=[\d.]+)?\)\s*", "", line)
    line = re.sub(r"^\d{4}[-/]\d\d[-/]\d\d [\d:,.]+\s*", "", line)
    return " ".join(line.split()[:6])[:80]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", help="a spec; the default job when left out")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter to run (another checkout's venv, for a before/after)"
    )
    parser.add_argument("--cwd", default=".", help="the checkout to run it in")
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="console-")
    command = [
        args.python,
        "-m",
        "orchestrator.launch",
        *([args.spec] if args.spec else []),
        "--local",
        "--set",
        f"storage.path={storage}",
    ]
    for item in args.set:
        command += ["--set", item]
    start = time.time()
    out = subprocess.run(command, capture_output=True, text=True, cwd=args.cwd, env={**os.environ, "TERM": "dumb"})
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in (out.stdout + out.stderr).splitlines()]
    lines = [line for line in lines if line.strip()]
    ours = [line for line in lines if is_ours(line)]
    theirs = collections.Counter(_kind(line) for line in lines if not is_ours(line))
    example = {_kind(line): line for line in reversed(lines) if not is_ours(line)}
    print(f"command: {' '.join(command[1:])} (exit {out.returncode}, {time.time() - start:.0f} s)")
    print(
        f"lines: {len(lines)}, the project's own: {len(ours)} ({len(ours) / max(len(lines), 1):.1%}), other: "
        f"{len(lines) - len(ours)}"
    )
    for text, count in theirs.most_common(12):
        print(f"  {count:>4}  {text}\n        e.g. {example[text][:160]}")


if __name__ == "__main__":
    main()
