"""The result: summary.json, report.md and loss_curves.png beside the checkpoints, and a verdict.

Built from plain per-run records (:class:`RunRecord`), so the same code renders
a finished sweep, a partly failed one, or a relaunched one.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.spec import ExperimentSpec, StorageSpec
from orchestrator.storage import filesystem, is_s3, join

@dataclass
class RunRecord:
    run: str
    option: str
    overrides: dict[str, Any]
    status: str
    reason: str | None
    steps: int
    total_steps: int
    best_val_loss: float | None
    best_step: int | None
    final_val_loss: float | None
    final_train_loss: float | None
    tokens_per_s: float | None
    clip_rate: float | None  # share of steps whose gradient norm was clipped
    mfu: float | None  # median model FLOPs utilisation (GPU only)
    best_checkpoint: str | None
    history: list[dict[str, float]] = field(default_factory=list)  # step, train_loss, val_loss per evaluation


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def record(run_name: str, option: str, overrides: dict[str, Any], total_steps: int, rows: list[dict[str, Any]], error: Exception | None, stop_reason: str | None, storage: StorageSpec) -> RunRecord:
    """One run's record from its saved history rows, its error (if it failed) and its stop reason (if stopped)."""
    by_step = {int(r["step"]): r for r in rows}  # a step redone after a failure: its latest report counts
    rows = [by_step[step] for step in sorted(by_step)]
    history = [{"step": int(r["step"]), "train_loss": _finite(r.get("train_loss")), "val_loss": _finite(r.get("val_loss"))} for r in rows]
    last = rows[-1] if rows else {}
    with_val = [r for r in rows if _finite(r.get("val_loss")) is not None]
    best = min(with_val, key=lambda r: r["val_loss"]) if with_val else None
    checkpointed = [r for r in with_val if isinstance(r.get("checkpoint_path"), str)]
    best_ckpt = min(checkpointed, key=lambda r: r["val_loss"])["checkpoint_path"] if checkpointed else None
    if best_ckpt and is_s3(storage.path):
        best_ckpt = f"s3://{best_ckpt}"
    steps = int(last.get("step", 0))
    if error is not None:
        status, reason = "failed", str(error).strip().splitlines()[-1][:500]
    elif last.get("diverged"):
        status, reason = "diverged", f"diverged at step {int(last['diverged_at'])}: non-finite training loss"
    elif stop_reason:
        status, reason = "early_stopped", stop_reason
    elif steps >= total_steps:
        status, reason = "completed", None
    else:
        status, reason = "incomplete", f"stopped at step {steps} of {total_steps} before finishing; relaunch the same command to resume"
    speeds = [r["tokens_per_s"] for r in rows if _finite(r.get("tokens_per_s"))]
    clips = [r["clip_rate"] for r in rows if _finite(r.get("clip_rate")) is not None]
    mfus = sorted(r["mfu"] for r in rows if _finite(r.get("mfu")) is not None)
    return RunRecord(
        run=run_name,
        option=option,
        overrides=overrides,
        status=status,
        reason=reason,
        steps=steps,
        total_steps=total_steps,
        best_val_loss=_finite(best["val_loss"]) if best else None,
        best_step=int(best["step"]) if best else None,
        final_val_loss=_finite(with_val[-1]["val_loss"]) if with_val else None,
        final_train_loss=_finite(last.get("train_loss")),
        tokens_per_s=sorted(speeds)[len(speeds) // 2] if speeds else None,
        clip_rate=sum(clips) / len(clips) if clips else None,
        mfu=mfus[len(mfus) // 2] if mfus else None,
        best_checkpoint=best_ckpt,
        history=history,
    )


def _ranked(records: list[RunRecord]) -> list[RunRecord]:
    return sorted(records, key=lambda r: (r.best_val_loss is None, r.best_val_loss or 0.0))


def _control(records: list[RunRecord], control: str | None) -> RunRecord | None:
    found = [r for r in records if r.option == control and r.best_val_loss is not None]
    return found[0] if found else None


def verdict(records: list[RunRecord], control: str | None, noise: float) -> str:
    """Which option to take, in plain words. ``noise`` is the val-loss difference that counts."""
    ranked = [r for r in _ranked(records) if r.best_val_loss is not None]
    if not ranked:
        return "No run produced a validation loss; see the reasons below."
    best = ranked[0]
    base = _control(records, control)
    where = f"{best.best_val_loss:.4f} at step {best.best_step}"
    if base is None:
        return f"Take **{best.run}**: lowest validation loss, {where}."
    if best.run == base.run:
        return f"None of the fixes beat the control **{base.run}** ({base.best_val_loss:.4f}); keep the current configuration."
    gain = base.best_val_loss - best.best_val_loss
    if gain <= noise:
        return (f"No fix clearly beats the control: **{best.run}** is best with {where}, only {gain:.4f} "
                f"below **{base.run}** ({base.best_val_loss:.4f}), within min_delta {noise}.")
    return (f"Take **{best.run}**: best validation loss {where}, {gain:.4f} ({gain / base.best_val_loss:.1%}) "
            f"below the control **{base.run}** ({base.best_val_loss:.4f}).")


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def table(records: list[RunRecord], control: str | None) -> str:
    """Markdown table sorted by best val loss, with the delta against the control."""
    base = _control(records, control)
    head = "| # | run | status | best val | Δ vs control | best at | final val | final train | steps | clipped | tok/s | MFU |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for i, r in enumerate(_ranked(records), 1):
        delta = "control" if base is not None and r.run == base.run else (
            f"{r.best_val_loss - base.best_val_loss:+.4f}" if base is not None and r.best_val_loss is not None else "-")
        lines.append(
            f"| {i} | {r.run} | {r.status} | {_fmt(r.best_val_loss)} | {delta} | {r.best_step or '-'} | "
            f"{_fmt(r.final_val_loss)} | {_fmt(r.final_train_loss)} | {r.steps}/{r.total_steps} | {_fmt(r.clip_rate, '.0%')} | {_fmt(r.tokens_per_s, ',.0f')} | {_fmt(r.mfu, '.1%')} |"
        )
    return "\n".join(lines)


def markdown(experiment: ExperimentSpec, records: list[RunRecord]) -> str:
    parts = [
        f"# Sweep `{experiment.name}`: which fix worked",
        "",
        verdict(records, experiment.control, experiment.early_stopping.min_delta),
        "",
        table(records, experiment.control),
        "",
    ]
    stopped = [r for r in records if r.reason]
    if stopped:
        parts += ["## Runs that did not finish", ""] + [f"- **{r.run}** ({r.status}): {r.reason}" for r in stopped] + [""]
    parts += ["## What each run changed", ""]
    parts += [f"- **{r.run}**: `{json.dumps(r.overrides)}`" for r in records]
    parts += ["", "## Best checkpoints", ""] + [f"- **{r.run}**: `{r.best_checkpoint or '-'}`" for r in records]
    parts += ["", "![train and val loss per run](loss_curves.png)", ""]
    return "\n".join(parts)


def _mark(ax, point: tuple[float, float], status: str, color) -> None:
    ax.plot(*point, marker="X", markersize=12, color=color, markeredgecolor="black")
    ax.annotate(status.replace("_", " "), point, textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)


def plot(records: list[RunRecord], title: str, control: str | None = None) -> bytes:
    """PNG: train (dashed) and val (solid) loss per run, and val loss minus the control's at each step.

    The second panel is where the options are told apart: a strong run squeezes
    the others together on the loss scale, never on the difference scale.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = _control(records, control)
    fig, axes = plt.subplots(1, 2 if base else 1, figsize=(16 if base else 10, 6), dpi=110, squeeze=False)
    loss_ax = axes[0][0]
    base_val = {h["step"]: h["val_loss"] for h in base.history if h["val_loss"] is not None} if base else {}
    colors = plt.get_cmap("tab10")
    for i, r in enumerate(_ranked(records)):
        color = colors(i % 10)
        train = [(h["step"], h["train_loss"]) for h in r.history if h["train_loss"] is not None]
        val = [(h["step"], h["val_loss"]) for h in r.history if h["val_loss"] is not None]
        if train:
            loss_ax.plot(*zip(*train), linestyle="--", color=color, alpha=0.6, linewidth=1)
        if not val:
            continue
        loss_ax.plot(*zip(*val), marker="o", markersize=3, color=color, linewidth=1.8, label=f"{r.run} ({r.status})")
        delta = [(step, v - base_val[step]) for step, v in val if step in base_val]
        if base and delta:
            axes[0][1].plot(*zip(*delta), marker="o", markersize=3, color=color, linewidth=1.8)
        if r.status in ("early_stopped", "diverged", "failed"):
            _mark(loss_ax, val[-1], r.status, color)
            if base and delta:
                _mark(axes[0][1], delta[-1], r.status, color)
    loss_ax.set(xlabel="step", ylabel="loss", title=f"{title}: val (solid), train (dashed); X = stopped")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    if base:
        axes[0][1].axhline(0, color="black", linewidth=0.8)
        # symlog: linear near 0 so small gains stay visible beside a large one
        axes[0][1].set_yscale("symlog", linthresh=0.01)
        axes[0][1].set(xlabel="step", ylabel=f"val loss - {base.run}", title=f"val loss relative to the control {base.run} (below 0 = better; symlog)")
        axes[0][1].grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write(experiment: ExperimentSpec, records: list[RunRecord]) -> str:
    """Write summary.json, report.md and loss_curves.png into the experiment's folder; returns its URI."""
    uri = join(experiment.storage.path, experiment.name)
    fs, root = filesystem(uri, experiment.storage)
    fs.create_dir(root, recursive=True)
    summary = {"experiment": experiment.name, "control": experiment.control, "verdict": verdict(records, experiment.control, experiment.early_stopping.min_delta), "runs": [asdict(r) for r in _ranked(records)]}
    files = {
        "summary.json": json.dumps(summary, indent=2).encode(),
        "report.md": markdown(experiment, records).encode(),
        "loss_curves.png": plot(records, experiment.name, experiment.control),
    }
    for name, payload in files.items():
        with fs.open_output_stream(f"{root}/{name}") as out:
            out.write(payload)
    return uri
