"""Calibration of the verdict: does its 95% interval cover 0 when there is nothing to find, how often does it take a
fix that is the control again, and how often does it take a real one?

    python -m bench.calibration --seeds 16 [--first-seed K] [--json FILE] [--losses FILE]

Trains N seeds of the default job's control (specs/smoke.yaml, ``current``) and N seeds of one of its real fixes
(``lr_schedule``), each in this process through the sweep's own train loop: Ray Train's local mode
(``num_workers=0``) with the threads a Ray worker of the same CPUs gets, and no checkpoints; its per-document losses
equal a sweep's for the same seed (tests/test_calibration.py). Then it applies the verdict
(:func:`orchestrator.results.verdict.compare`) to A/A configurations: the control's seeds against 1, 2 and 6
options that are the control again, each on seeds drawn without overlap from the N. Every configuration is counted
when there are at most ``--max-configurations`` of them, else that many are drawn at random. It prints:

- coverage: the share of A/A comparisons whose 95% interval covers 0 (target ≥ 93%);
- false takes: the share of configurations in which the verdict takes an A/A option (target ≤ 2.5%);
- power: the share of configurations in which it takes the real fix, alone and among 5 A/A options.

``--losses FILE`` keeps the trained per-document losses, so that another analysis of the same seeds does not
train again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from contract.report import Report
from contract.spec import EvalProtocol, TrainSpec
from orchestrator.results.records import record
from orchestrator.results.verdict import compare
from orchestrator.spec import ExperimentSpec, Plan, Run, load

CONTROL, EFFECT = "current", "lr_schedule"
OPTIONS = (1, 2, 6)  # A/A options per configuration
POWER_OPTIONS = (1, 6)  # the real fix alone, and among 5 A/A options


def train_in_process(job: dict[str, Any]) -> dict[str, Any]:
    """Train one run (a JobConfig dict) here, as a sweep's trial trains it (jobs.train.train_in_process); returns its
    last report as the dict the cache keeps."""
    from jobs.train import train_in_process as train_here

    return train_here(job).model_dump()


def seeded_jobs(experiment: ExperimentSpec, plan: Plan, option: str, seeds: list[int]) -> list[dict[str, Any]]:
    """The option's run of the plan on each seed, as the JobConfig dicts a sweep's trials receive."""
    from orchestrator.sweep.trial import job_configs

    run = next(r for r in plan.runs if r.option == option)
    runs = [
        run.model_copy(
            update={
                "name": f"{option}[seed={s}]",
                "spec": run.spec.model_copy(update={"run": run.spec.run.model_copy(update={"seed": s})}),
            }
        )
        for s in seeds
    ]
    return job_configs(experiment, plan.model_copy(update={"runs": runs}))


def train(sets: list[str], seeds: list[int], jobs: int, cache: Path | None) -> dict[str, Any]:
    """Per-document losses at the final evaluation, ``{"doc_tokens": [...], "doc_nll": {option: {seed: [...]}}}``,
    trained (or read from ``cache``, which was trained with the same ``sets``)."""
    from orchestrator.launch import localize

    losses: dict[str, Any] = {"sets": sets, "doc_tokens": None, "doc_nll": {CONTROL: {}, EFFECT: {}}}
    if cache is not None and cache.is_file():
        losses = json.loads(cache.read_text())
        if losses["sets"] != sets:
            raise SystemExit(f"{cache} holds losses trained with --set {losses['sets']}; pass those, or another file")
    experiment, plan = load(None, sets)
    if plan.evaluation.selection_fraction is not None:
        raise SystemExit("the calibration compares final evaluations; unset evaluation.selection_fraction")
    plan = localize(experiment, plan, gpus=0, cores=1).plan  # one run here at a time: no concurrency to choose
    todo = [
        job
        for option in (CONTROL, EFFECT)
        for job in seeded_jobs(experiment, plan, option, [s for s in seeds if str(s) not in losses["doc_nll"][option]])
    ]
    t0 = time.time()
    # spawn: a fresh interpreter per process, as a Ray worker is (fork would copy this one's torch threads)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for job, metrics in zip(todo, pool.map(train_in_process, todo)):
            spec = TrainSpec.model_validate(job["spec"])
            losses["doc_nll"][job["option"]][str(spec.run.seed)] = metrics["doc_nll"]
            losses["doc_tokens"] = metrics["doc_tokens"]
            print(f"  trained {job['run_name']}: val {metrics['val_loss']:.4f} at step {metrics['step']}", flush=True)
            if cache is not None:
                cache.write_text(json.dumps(losses))
    if todo:
        print(f"trained {len(todo)} runs in {time.time() - t0:.0f} s ({jobs} at a time)")
    return losses


# ---------------------------------------------------------------- the verdict on A/A configurations


def draws(
    pool: int, control_seeds: int, option_seeds: int, options: int, limit: int, rng: np.random.Generator
) -> list[tuple[tuple[int, ...], list[tuple[int, ...]]]]:
    """Ways to give the control ``control_seeds`` and each of ``options`` options ``option_seeds`` of ``pool`` seeds
    (indices), never one seed twice: every way when there are at most ``limit``, else ``limit`` drawn at random."""
    need = control_seeds + options * option_seeds
    if need > pool:
        return []
    total = (
        math.comb(pool, control_seeds)
        * math.prod(math.comb(pool - control_seeds - i * option_seeds, option_seeds) for i in range(options))
        // math.factorial(options)
    )  # the A/A options are interchangeable
    if total <= limit:
        out = []
        for control in itertools.combinations(range(pool), control_seeds):
            rest = [i for i in range(pool) if i not in control]
            for groups in _partitions(rest, option_seeds, options):
                out.append((control, groups))
        return out
    out = []
    for _ in range(limit):
        order = rng.permutation(pool)
        groups = [tuple(sorted(order[control_seeds + i * option_seeds :][:option_seeds])) for i in range(options)]
        out.append((tuple(sorted(order[:control_seeds])), groups))
    return out


def _partitions(items: list[int], size: int, count: int, floor: tuple[int, ...] = ()) -> list[list[tuple[int, ...]]]:
    """Unordered choices of ``count`` disjoint ``size``-subsets of ``items`` (each group after the one before)."""
    if count == 0:
        return [[]]
    out = []
    for group in itertools.combinations(items, size):
        if floor and group <= floor:
            continue
        rest = [i for i in items if i not in group]
        out += [[group, *more] for more in _partitions(rest, size, count - 1, group)]
    return out


# A run that completed at step 1: the records below hold its final evaluation only.
ONE_STEP = TrainSpec.model_validate({"run": {"steps": 1, "eval_every": 1, "checkpoint_every": 1}})


def _records(option: str, doc_nll: list[list[float]], seeds: tuple[int, ...], tokens: list[int], protocol):
    """One record per seed, built as the report builds them: from a report of the final evaluation."""
    out = []
    for s in seeds:
        run = Run(name=f"{option}[seed={s}]", option=option, variant=option, overrides={}, spec=ONE_STEP)
        val_loss = protocol.mean_nll(doc_nll[s], tokens, "choose")
        final = Report(step=1, total_steps=1, val_loss=val_loss, doc_nll=doc_nll[s], doc_tokens=tokens)
        out.append(record(run, [final], None, None, protocol))
    return out


def calibrate(
    control: list[list[float]],
    effect: list[list[float]],
    tokens: list[int],
    control_seeds: int,
    option_seeds: int,
    limit: int,
    resamples: int,
    protocol: EvalProtocol,
    seed: int = 0,
) -> dict[str, Any]:
    """The verdict's coverage and false takes on A/A configurations of the ``control`` seeds (per-document NLL sums,
    one list per seed), and its power on the ``effect`` seeds, scored as ``protocol`` says."""
    rng = np.random.default_rng(seed)
    scoring = protocol.share(len(tokens), "score")
    rows = []
    for options in OPTIONS:
        configurations = draws(len(control), control_seeds, option_seeds, options, limit, rng)
        covered = compared = taken = 0
        for c, groups in configurations:
            records = _records(CONTROL, control, c, tokens, protocol)
            for i, g in enumerate(groups):
                records += _records(f"aa{i + 1}", control, g, tokens, protocol)
            result = compare(records, CONTROL, scoring, resamples=resamples)
            for v in result.variants[1:]:
                covered += v.delta.ci95[0] <= 0 <= v.delta.ci95[1]
                compared += 1
            taken += result.verdict.take is not None
        n = len(configurations)
        rows.append(
            {
                "options": options,
                "option_seeds": option_seeds,
                "control_seeds": control_seeds,
                "n": n,
                "coverage": covered / compared if compared else None,
                "false_take_rate": taken / n if n else None,
            }
        )
    power = []
    for options in POWER_OPTIONS:
        # the control's seeds and the A/A options' from the control's pool, the fix's from its own, never the
        # same seed number on two sides
        configurations = draws(len(control), control_seeds, option_seeds, options, limit, rng)
        taken = 0
        for c, groups in configurations:
            records = _records(CONTROL, control, c, tokens, protocol)
            records += _records(EFFECT, effect, groups[0], tokens, protocol)
            for i, g in enumerate(groups[1:]):
                records += _records(f"aa{i + 1}", control, g, tokens, protocol)
            taken += compare(records, CONTROL, scoring, resamples=resamples).verdict.take == EFFECT
        n = len(configurations)
        power.append(
            {
                "options": options,
                "option_seeds": option_seeds,
                "control_seeds": control_seeds,
                "n": n,
                "take_rate": taken / n if n else None,
            }
        )
    totals = np.asarray(tokens, dtype=float).sum()
    c_means, e_means = np.sum(control, axis=1) / totals, np.sum(effect, axis=1) / totals
    pairs = list(itertools.combinations(range(len(control)), 2))
    seen = np.mean([document_variance(control[a], control[b], tokens) for a, b in pairs]) if pairs else None
    return {
        "seeds": len(control),
        "control": {
            "mean": float(c_means.mean()),
            "sd": float(c_means.std(ddof=1)) if len(control) > 1 else None,
            # of the variance of one seed against another, the share a bootstrap over documents sees
            "document_share": float(seen / (2 * c_means.var(ddof=1))) if pairs else None,
        },
        "configurations": rows,
        "power": {"option": EFFECT, "delta": float(e_means.mean() - c_means.mean()), "configurations": power},
    }


def document_variance(a: list[float], b: list[float], tokens: list[int]) -> float:
    """The variance a paired bootstrap over documents gives the difference of two runs' token-weighted mean NLL
    (``a``, ``b``: per-document NLL sums), to first order (the delta method for a ratio of resampled sums)."""
    d, t = np.asarray(a) - np.asarray(b), np.asarray(tokens, dtype=float)
    z = (d - d.sum() / t.sum() * t) / t.sum()
    return float(len(t) * z.var())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def show(result: dict[str, Any]) -> str:
    control, power = result["control"], result["power"]
    sd = "-" if control["sd"] is None else f"{control['sd']:.4f}"
    lines = [f"control `{CONTROL}` over {result['seeds']} seeds: final val mean {control['mean']:.4f}, sd {sd}"]
    if control["document_share"] is not None:
        lines.append(
            f"a bootstrap over documents sees {control['document_share']:.0%} of the variance between two seeds; the "
            "rest is a shift shared by every document"
        )
    lines += [
        "",
        "| A/A options | control seeds | option seeds | configurations | 95% interval covers 0 | false takes |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["configurations"]:
        lines.append(
            f"| {r['options']} | {r['control_seeds']} | {r['option_seeds']} | {r['n']:,} | {_pct(r['coverage'])} | "
            f"{_pct(r['false_take_rate'])} |"
        )
    lines += [
        "",
        f"power on `{power['option']}` (Δ {power['delta']:+.4f} over all seeds):",
        "",
        "| options | control seeds | option seeds | configurations | takes it |",
        "|---|---|---|---|---|",
    ]
    for r in power["configurations"]:
        lines.append(
            f"| {r['options']} | {r['control_seeds']} | {r['option_seeds']} | {r['n']:,} | {_pct(r['take_rate'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, required=True, help="seeds of the control, and of the fix, to train")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="override a field of every run (key.path=value)")
    parser.add_argument("--control-seeds", type=int, help="the control's seeds per configuration (default: the spec's)")
    parser.add_argument("--option-seeds", type=int, help="seeds per option per configuration (default: the spec's)")
    parser.add_argument("--max-configurations", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: the verdict's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (one process each)")
    parser.add_argument("--losses", type=Path, help="keep (and reuse) the trained per-document losses in this file")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    print(f"machine: {platform.node()} | {platform.machine()}, {os.cpu_count()} cores | {time.strftime('%Y-%m-%d')}")
    _, plan = load(None, args.set)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    losses = train(args.set, seeds, args.jobs, args.losses)
    control = [losses["doc_nll"][CONTROL][str(s)] for s in seeds]
    effect = [losses["doc_nll"][EFFECT][str(s)] for s in seeds]
    from orchestrator.results import stats

    t0 = time.time()
    result = calibrate(
        control,
        effect,
        losses["doc_tokens"],
        args.control_seeds or sum(r.option == CONTROL for r in plan.runs),  # the default job's seeds per variant
        args.option_seeds or sum(r.option == EFFECT for r in plan.runs),
        args.max_configurations,
        args.resamples or stats.RESAMPLES,
        plan.evaluation,
    )
    print(show(result))
    print(f"\n(the verdict applied {time.time() - t0:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
