"""A nanoGPT-style text log: ``step 1500: train loss 6.6700, val loss 6.7100`` evaluation lines, with the
``saving checkpoint to ...`` and ``Resuming ... step N`` lines around them; other lines (``iter N: loss ...``,
banners) are not read. Also the log file of build-nanogpt and llm.c, one value a line: ``<step> train <loss>``,
``<step> val <loss>``, ``<step> hella <acc>`` (build-nanogpt's ``log.txt``), ``s:<step> trl:<loss>`` and
``s:<step> tel:<loss>`` (llm.c's ``main.log``)."""

from __future__ import annotations

import re

from orchestrator.diagnose.logs.curve import LogError, Record, Rows

EVAL = re.compile(r"^\s*step\s+(\d+)\s*:\s*train loss\s+(\S+?),\s*val loss\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
EVAL_START = re.compile(r"^\s*step\s+\d+\s*:", re.IGNORECASE)
SAVED = re.compile(r"saving checkpoint to\s+(\S+)", re.IGNORECASE)
RESUMED = re.compile(r"^\s*resum\w*\b(?:.*?\bstep\s+(\d+))?", re.IGNORECASE)
NAMES = {"step": ("step",), "train_loss": ("train_loss",), "val_loss": ("val_loss",)}
# build-nanogpt and llm.c: one (step, what, value) a line; every line of the file is one of these
VALUE_LINE = re.compile(r"^(?:(\d+) (train|val|hella) |s:(\d+) (trl|tel|eval):)([-+0-9.eEnaif]+)\s*$")
KEYS = {"train": "train_loss", "trl": "train_loss", "val": "val_loss", "tel": "val_loss", "hella": "eval_hellaswag"}
KEYS["eval"] = "eval_hellaswag"  # llm.c's HellaSwag accuracy


def detect_values(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(VALUE_LINE.match(line) for line in lines)


def read_values(text: str) -> Rows:
    """build-nanogpt's or llm.c's log: each line one value at one step, gathered into one record per step."""
    by_step: dict[int, Record] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = VALUE_LINE.match(line)
        if m is None:
            continue
        step = int(m.group(1) or m.group(3))
        record = by_step.setdefault(step, Record(f"line {number}", {"step": step}))
        record.values[KEYS[m.group(2) or m.group(4)]] = m.group(5)
    return Rows("build-nanogpt / llm.c log", [by_step[s] for s in sorted(by_step)], names=NAMES)


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
