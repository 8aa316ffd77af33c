"""Weights & Biases CSV exports, known by their header:

- a run's history (``run.history().to_csv()``, or the run table's export of one run): ``_step``, ``_runtime``,
  ``train/loss``, ``eval/loss``, ``train/global_step``, ...; with the Trainer's W&B callback ``_step`` counts log
  calls, so ``train/global_step`` is the step when present;
- a chart's export (a panel's menu, Export, CSV): ``Step`` and one column per run, ``<run> - train/loss``, with
  ``__MIN``/``__MAX`` sampling bounds beside it; several runs can share one file, and ``--run`` picks one;
- the runs table: one row per run with its summary values, which is not a curve and is refused, saying so.
"""

from __future__ import annotations

from orchestrator.diagnose.logs.curve import LogError, Record, Rows


def is_runs_table(header: list[str]) -> bool:
    return {"Name", "State"} <= set(header) and bool({"Created", "Runtime", "End Time"} & set(header))


def is_chart(header: list[str]) -> bool:
    return bool(header) and header[0] == "Step" and any(" - " in h for h in header[1:])


def is_history(header: list[str]) -> bool:
    return "_step" in header or any(h.startswith(("train/", "eval/")) for h in header)


def refuse_runs_table(records: list[Record], where: str) -> None:
    raise LogError(
        f"{where}: a W&B runs table ({len(records)} rows, one per run, with each run's summary values), not a run's "
        "history, so there is no curve to read; export one run's history instead: a chart's menu, Export, CSV, or "
        "`wandb.Api().run('ENTITY/PROJECT/RUN_ID').history().to_csv(FILE)`"
    )


def history(records: list[Record]) -> Rows:
    keys = {k for r in records for k in r.values}
    notes = []
    if {"_step", "train/global_step"} <= keys:
        notes.append("`_step` counts W&B log calls; `train/global_step` is the Trainer's step and is used.")
    return Rows("W&B run history (CSV)", records, notes)


def chart(header: list[str], records: list[Record], run: str | None, where: str) -> Rows:
    columns = [h for h in header[1:] if " - " in h and not h.endswith(("__MIN", "__MAX"))]
    runs = list(dict.fromkeys(h.rpartition(" - ")[0] for h in columns))
    if run is not None and run not in runs:
        raise LogError(f"{where}: --run {run!r}: no such run in this W&B export; choose from {', '.join(runs)}")
    chosen = run or runs[0]
    mine = [h for h in columns if h.rpartition(" - ")[0] == chosen]
    rows = [
        Record(r.where, {"Step": r.values.get("Step"), **{h.rpartition(" - ")[2]: r.values.get(h) for h in mine}})
        for r in records
        if any(r.values.get(h) not in (None, "") for h in mine)
    ]
    notes = ["Steps are the chart's x-axis (`Step`); the `__MIN`/`__MAX` columns are W&B's sampling bounds, not read."]
    if len(rows) < len(records):
        notes.append(f"{len(records) - len(rows):,} rows hold other runs' steps only.")
    if len(runs) > 1:
        others = ", ".join(f"`{r}`" for r in runs if r != chosen)
        notes.append(f"The export holds {len(runs)} runs; read `{chosen}` (pick another with --run): {others}.")
    return Rows(f"W&B chart export (CSV), run `{chosen}`", rows, notes)
