"""What the user watches: one line per evaluation per run, and a table of every run's progress.

Plain text, so a ``ray job logs --follow`` stream, a pipe and a file read the same as a
terminal. The sweep's console (:class:`orchestrator.sweep.callbacks.Console`) prints these
as results arrive; ``--status`` prints the same table from storage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from contract.report import Report


@dataclass
class RunProgress:
    name: str
    step: int = 0
    total: int = 0
    val: float = math.nan
    best: float = math.inf
    status: str = "queued"
    rate: float = 0.0  # steps per second over the last window
    last_at: float = field(default_factory=time.monotonic)
    node: str | None = None  # the Ray node id of its (first) worker, at its last report

    @property
    def eta(self) -> str:
        if self.status != "running" or self.rate <= 0:
            return "-"
        return duration((self.total - self.step) / self.rate)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def progress_table(runs: list[RunProgress]) -> list[list[str]]:
    """Rows of (run, step, val, best, status, node, ETA): one place for the live table, the plain one and --status.

    A node is shown by the first 8 characters of its Ray node id, as `ray list nodes` prints it."""
    return [
        [
            r.name,
            f"{r.step}/{r.total}" if r.total else "-",
            "-" if math.isnan(r.val) else f"{r.val:.4f}",
            "-" if math.isinf(r.best) else f"{r.best:.4f}",
            r.status,
            r.node[:8] if r.node else "-",
            r.eta,
        ]
        for r in runs
    ]


HEADER = ["run", "step", "val", "best val", "status", "node", "ETA"]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(HEADER, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [HEADER, *rows])


def line(name: str, report: Report, run: RunProgress) -> str:
    """The one line an evaluation prints."""
    step, total, val = report.step, report.total_steps, report.val_loss
    if step == 0:
        return f"[{name}] step 0/{total}  val {val:.4f} before training"
    parts = [f"[{name}] step {step}/{total}"]
    if val is not None:
        parts.append(f"val {val:.4f} (best {run.best:.4f})")
    if report.train_loss is not None:
        parts.append(f"train {report.train_loss:.4f}")
    parts += [
        f"lr {report.lr:.2e}",
        f"clip {report.clip_rate or 0:.0%}",
        f"{report.tokens_per_s:,.0f} tok/s",
        f"ETA {run.eta}",
    ]
    return "  ".join(parts)
