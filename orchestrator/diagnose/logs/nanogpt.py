"""A nanoGPT-style text log: ``step 1500: train loss 6.6700, val loss 6.7100`` evaluation lines, with the
``saving checkpoint to ...`` and ``Resuming ... step N`` lines around them; other lines (``iter N: loss ...``,
banners) are not read."""

from __future__ import annotations

import re

from orchestrator.diagnose.logs.curve import LogError, Record, Rows

EVAL = re.compile(r"^\s*step\s+(\d+)\s*:\s*train loss\s+(\S+?),\s*val loss\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
EVAL_START = re.compile(r"^\s*step\s+\d+\s*:", re.IGNORECASE)
SAVED = re.compile(r"saving checkpoint to\s+(\S+)", re.IGNORECASE)
RESUMED = re.compile(r"^\s*resum\w*\b(?:.*?\bstep\s+(\d+))?", re.IGNORECASE)
NAMES = {"step": ("step",), "train_loss": ("train_loss",), "val_loss": ("val_loss",)}


def detect(text: str) -> bool:
    return EVAL.search(text) is not None


def read(text: str, where: str) -> tuple[Rows, list[int | None], dict[int, str]]:
    """(rows, the steps it resumed at, step -> checkpoint saved)."""
    records: list[Record] = []
    checkpoints: dict[int, str] = {}
    resumed: list[int | None] = []
    for number, line in enumerate(text.splitlines(), 1):
        if (saved := SAVED.search(line)) and records:
            checkpoints[int(records[-1].values["step"])] = saved.group(1)  # nanoGPT saves right after its evaluation
            continue
        if resume := RESUMED.match(line):
            resumed.append(int(resume.group(1)) if resume.group(1) else None)  # a resume that loses state shows here
            continue
        if not EVAL_START.match(line):
            continue  # iter lines, banners, anything else
        m = EVAL.match(line)
        if m is None:
            raise LogError(
                f"{where}: line {number}: an evaluation line that does not read as `step N: train loss X, val loss Y`: "
                f"{line.strip()[:80]!r}"
            )
        records.append(Record(f"line {number}", {"step": m.group(1), "train_loss": m.group(2), "val_loss": m.group(3)}))
    return Rows("nanoGPT log", records, names=NAMES), resumed, checkpoints
