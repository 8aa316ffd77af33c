"""The diagnosis on a folder of real training logs, each against its expert's expectations: a table of matches, false
alarms and misses.

    python -m tests.real_logs_table [FOLDER] [--markdown]

FOLDER (default tests/fixtures/real_logs) holds one sub-folder per log: the log file and its provenance.yaml with
``command`` (the configuration, passed as --command when set) and ``expect`` (healthy, fire, silent, best_step,
best_value, refused). The same check is the parametrised test tests/test_real_logs.py, so the table and the test agree;
point the script at another folder of the same layout (a held-out set) to score the diagnosis there.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.diagnose.__main__ import main

FOLDER = Path(__file__).parent / "fixtures" / "real_logs"
PROVENANCE = "provenance.yaml"
# Not a rule: "the text tells a run the log cannot judge to keep training" (the first failure)
KEEP_TRAINING = "healthy_keep_training"


@dataclass
class Outcome:
    """One log's diagnosis against its expectations."""

    slug: str
    provenance: dict[str, Any]
    code: int
    text: str  # the printed diagnosis, or the refusal
    diagnosis: dict[str, Any] | None  # the --json output; None when refused
    false_alarms: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.false_alarms and not self.misses:
            return "match"
        return " + ".join(k for k, v in (("false alarm", self.false_alarms), ("miss", self.misses)) if v)

    @property
    def top(self) -> str:
        """The top-ranked cause, else the surest finding: what the diagnosis leads with."""
        if self.diagnosis is None:
            return f"refused: {self.text.strip().removeprefix('error: ').partition(': ')[2][:70]}"
        findings, causes = self.diagnosis["findings"], self.diagnosis["causes"]
        lead = next(
            (f for f in findings if causes and f["rule"] == causes[0]["rule"]), findings[0] if findings else None
        )
        if lead is None:
            return "healthy, no finding" if self.diagnosis["healthy"] else "no finding"
        return f"`{lead['rule']}`: {lead['title']}"


def logs(folder: Path) -> list[Path]:
    """The log folders under ``folder``: each has a provenance.yaml."""
    return sorted(p.parent for p in folder.glob(f"*/{PROVENANCE}"))


def log_file(case: Path) -> Path:
    (log,) = [p for p in case.iterdir() if p.name != PROVENANCE and not p.name.startswith(".")]
    return log


def run(case: Path) -> Outcome:
    """Diagnose one log as its testers did (with its provenance's command), and hold it to its expectations."""
    provenance = yaml.safe_load((case / PROVENANCE).read_text())
    command = provenance.get("command")
    args = [str(log_file(case)), *(["--command", command] if command else [])]
    with tempfile.TemporaryDirectory() as tmp:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([*args, "--json", f"{tmp}/d.json"])
            except Exception as crash:  # a crash is scored (a miss), not the end of the table
                code, err = -1, io.StringIO(f"crashed: {type(crash).__name__}: {crash}")
        diagnosis = json.loads(Path(f"{tmp}/d.json").read_text()) if code == 0 else None
    outcome = Outcome(case.name, provenance, code, out.getvalue() if code == 0 else err.getvalue(), diagnosis)
    _judge(outcome, provenance.get("expect") or {})
    return outcome


def _judge(o: Outcome, expect: dict[str, Any]) -> None:
    refused = expect.get("refused")
    if refused is not None:
        if o.code != 2 or refused not in o.text:
            o.misses.append(f"not refused with {refused!r} (exit {o.code})")
        return
    if o.diagnosis is None:
        o.misses.append(f"refused (exit {o.code}): {o.text.strip()[:120]}")
        return
    d = o.diagnosis
    fired = {f["rule"] for f in d["findings"]}
    if "Keep training" in o.text:
        fired.add(KEEP_TRAINING)
    if d["healthy"] != expect.get("healthy"):
        wrong = f"healthy {d['healthy']}, expected {expect.get('healthy')}"
        # calling a sound run sick is a false alarm; calling a sick (or unjudgeable) run healthy is a miss
        (o.false_alarms if expect.get("healthy") is True else o.misses).append(wrong)
    o.misses += [f"`{r}` did not fire" for r in expect.get("fire") or [] if r not in fired]
    o.false_alarms += [f"`{r}` fired" for r in expect.get("silent") or [] if r in fired]
    curve = d.get("curve") or {}
    for key, got in (("best_step", curve.get("best_val_step")), ("best_value", curve.get("best_val"))):
        want = expect.get(key)
        same = got == want if want is None or got is None else math.isclose(got, want, rel_tol=1e-6)
        if not same:
            o.misses.append(f"{key} {got}, expected {want}")


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| slug | provenance | expert reading | tool's top finding | outcome |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        p = o.provenance
        source = f"{p.get('repository')} ({p.get('format')}; {p.get('model') or 'model not named'}, {p.get('method')})"
        reading = " ".join((p.get("reading") or "").split())
        first = reading.split(". ")[0][:140]
        why = "; ".join(o.false_alarms + o.misses)
        rows.append(f"| `{o.slug}` | {source} | {first} | {o.top[:120]} | {o.verdict}{f': {why}' if why else ''} |")
    matches = sum(o.verdict == "match" for o in outcomes)
    alarms = sum(bool(o.false_alarms) for o in outcomes)
    misses = sum(bool(o.misses) for o in outcomes)
    rows += [
        "",
        f"{len(outcomes)} logs: {matches} match, {alarms} with a false alarm, {misses} with a miss "
        f"({sum(len(o.false_alarms) for o in outcomes)} false alarms and {sum(len(o.misses) for o in outcomes)} "
        "misses in all)",
    ]
    return "\n".join(rows)


def main_table(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.real_logs_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(FOLDER), help="a folder of <slug>/{log, provenance.yaml}")
    args = parser.parse_args(argv)
    cases = logs(Path(args.folder))
    if not cases:
        print(f"error: {args.folder}: no */{PROVENANCE}", file=sys.stderr)
        return 2
    print(table([run(case) for case in cases]))
    return 0


if __name__ == "__main__":
    sys.exit(main_table())
