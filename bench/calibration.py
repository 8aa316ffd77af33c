"""Calibration of the verdict: does its 95% interval cover 0 when there is nothing to find, how often does it take a
fix that is the control again, how often does it take a real one, and does that hold when the control's seeds are a
quiet draw?

    python -m bench.calibration --seeds 40 --first-seed 1000 --effect-seeds 16 --jobs 2 --losses FILE --json FILE
    python -m bench.calibration --seeds 40 --first-seed 1000 --effect-seeds 16 --losses FILE --verdict-at main
    python -m bench.calibration --seeds 24 --first-seed 0 --losses DEV --store

Trains seeds of the default job's control (specs/smoke.yaml, ``current``) and of one of its real fixes
(``lr_schedule``, on the seeds after the control's), each in its own process through the sweep's own train loop:
Ray Train's local mode (``num_workers=0``) with the threads a Ray worker of the same CPUs gets, and no checkpoints;
its per-document losses equal a sweep's for the same seed (tests/test_calibration.py). Then it applies the verdict
(:func:`orchestrator.results.verdict.compare`) to A/A configurations, for each (control seeds, option seeds) of
``--configuration`` (default: (1, 1), (2, 1), (2, 2) and the spec's own): the control's seeds against 1, 2 and 6
options that are the control again, on seeds drawn without overlap from the pool. Every configuration is counted when
there are at most ``--max-configurations`` of them, else that many are drawn at random. It prints, per row:

- coverage: the share of A/A comparisons whose 95% interval covers 0 (target >= 93%);
- false takes: the share of configurations in which the verdict takes an A/A option, provisionally or not
  (target <= 2.5%), and the firm ones apart;
- both by quartile of the control's seed spread (quartile 1 the quietest; target: coverage >= 90% there): the sd of
  the control's seeds, or with one control seed its distance from the pool's mean;
- each with its standard error, leaving one seed of the pool out at a time (the configurations share the pool's
  seeds, so they are not independent draws);
- power: the share of configurations in which it takes the real fix, alone and among 5 A/A options.

``--store`` keeps a pool's seed noise as the stored calibration of the control's configuration
(:mod:`orchestrator.results.seed_prior`), which the verdict then pools with a sweep's own seeds: store development
seeds, and judge on others (held out: the default job's development used seeds below 1000). ``--verdict-at REV``
judges with another commit's verdict (``main``: the verdict before this one), on the same seeds. ``--losses FILE``
keeps the trained per-document losses, so that another analysis of the same seeds does not train again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.report import Report
from contract.spec import EvalProtocol, TrainSpec
from orchestrator.results import stats
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


def train(sets: list[str], seeds: dict[str, list[int]], jobs: int, cache: Path | None) -> dict[str, Any]:
    """Per-document losses at the final evaluation, ``{"doc_tokens": [...], "doc_nll": {option: {seed: [...]}}}``,
    for each option on its ``seeds``: trained, or read from ``cache`` (trained with the same ``sets``), which keeps
    every run as it finishes."""
    from orchestrator.launch import localize

    losses: dict[str, Any] = {"sets": sets, "doc_tokens": None, "doc_nll": {}}
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
        for option, wanted in seeds.items()
        for job in seeded_jobs(
            experiment, plan, option, [s for s in wanted if str(s) not in losses["doc_nll"].get(option, {})]
        )
    ]
    t0 = time.time()
    # spawn: a fresh interpreter per process, as a Ray worker is (fork would copy this one's torch threads)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for job, metrics in zip(todo, pool.map(train_in_process, todo)):
            spec = TrainSpec.model_validate(job["spec"])
            losses["doc_nll"].setdefault(job["option"], {})[str(spec.run.seed)] = metrics["doc_nll"]
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
    return [drawn(pool, control_seeds, option_seeds, options, rng) for _ in range(limit)]


def drawn(
    pool: int, control_seeds: int, option_seeds: int, options: int, rng: np.random.Generator
) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """One way, drawn at random, to give the control and each option their seeds of ``pool``, never one seed twice."""
    order = rng.permutation(pool)
    groups = [tuple(sorted(order[control_seeds + i * option_seeds :][:option_seeds])) for i in range(options)]
    return tuple(sorted(order[:control_seeds])), groups


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


@dataclass
class Judged:
    """The verdict on one configuration: the seeds it used, what its A/A comparisons covered, what it took."""

    seeds: frozenset[int]  # indices into the control's pool (its own seeds and the A/A options')
    spread: float  # the control's seed spread (module docstring): what a quiet draw shrinks
    covered: int  # A/A comparisons whose interval covers 0
    compared: int
    take: str | None
    provisional: bool


# One configuration: the control's seeds, each A/A option's, and the real fix's (from its own pool; None: not in it).
Configuration = tuple[tuple[int, ...], list[tuple[int, ...]], tuple[int, ...] | None]


@dataclass(frozen=True)
class Judging:
    """What every configuration is judged with: the pools' per-document losses (one list per seed), the documents'
    scored tokens, and the verdict's settings (``prior``: the stored calibration it pools in, or None)."""

    control: list[list[float]]
    effect: list[list[float]]
    tokens: list[int]
    protocol: EvalProtocol
    resamples: int
    prior: Any = None


def judge(judging: Judging, configurations: list[Configuration]) -> list[Judged]:
    """The verdict (:func:`orchestrator.results.verdict.compare`) on each configuration: the control on its seeds,
    options that are the control again on theirs, and the real fix on its own where there is one. Uses only what
    every verdict since the first calibration has (``compare``, ``record``), so an older checkout's can be judged."""
    control, tokens, protocol = judging.control, judging.tokens, judging.protocol
    scoring = protocol.share(len(tokens), "score")
    means = np.sum(control, axis=1) / np.sum(tokens)
    prior = {"prior": judging.prior} if judging.prior else {}
    out = []
    for c, groups, fix in configurations:
        records = _records(CONTROL, control, c, tokens, protocol)
        if fix is not None:
            records += _records(EFFECT, judging.effect, fix, tokens, protocol)
        for i, g in enumerate(groups):
            records += _records(f"aa{i + 1}", control, g, tokens, protocol)
        result = compare(records, CONTROL, scoring, resamples=judging.resamples, **prior)
        aa = [v for v in result.variants if v.variant.startswith("aa")]
        own = means[list(c)]
        out.append(
            Judged(
                seeds=frozenset(itertools.chain(c, *groups)),
                spread=float(own.std(ddof=1)) if len(c) > 1 else float(abs(own[0] - means.mean())),
                covered=sum(v.delta.ci95[0] <= 0 <= v.delta.ci95[1] for v in aa),
                compared=len(aa),
                take=result.verdict.take,
                provisional=getattr(result.verdict, "provisional", False),  # an older verdict's takes are all firm
            )
        )
    return out


def judge_all(
    judging: Judging, configurations: list[Configuration], jobs: int, checkout: Path | None = None
) -> list[Judged]:
    """:func:`judge` in ``jobs`` processes, with the orchestrator of ``checkout`` (another commit's, extracted by
    ``--verdict-at``) in place of this one's: a spawned process takes this one's ``sys.path``, so putting the
    checkout first makes it import that verdict."""
    if jobs == 1 and checkout is None:
        return judge(judging, configurations)
    chunks = [configurations[i::jobs] for i in range(jobs)]
    if checkout is not None:
        sys.path.insert(0, str(checkout))
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(judge, [judging] * jobs, chunks))
    finally:
        if checkout is not None:
            sys.path.remove(str(checkout))
    out: list[Judged] = [None] * len(configurations)  # chunk i holds configurations i, i + jobs, i + 2 jobs, ...
    for i, part in enumerate(parts):
        out[i::jobs] = part
    return out


def _rates(judged: list[Judged]) -> dict[str, float | None]:
    compared = sum(j.compared for j in judged)
    return {
        "coverage": sum(j.covered for j in judged) / compared if compared else None,
        "false_take_rate": float(np.mean([j.take is not None for j in judged])) if judged else None,
        "firm_false_take_rate": float(np.mean([j.take is not None and not j.provisional for j in judged]))
        if judged
        else None,
    }


def _jackknife(judged: list[Judged], pool: int, figure: str) -> float | None:
    """The standard error of a rate over the configurations, leaving one seed of the pool out at a time: the
    configurations share the pool's seeds, so they are not independent draws."""
    values = [
        v for v in (_rates([j for j in judged if i not in j.seeds])[figure] for i in range(pool)) if v is not None
    ]
    if len(values) < 2:
        return None
    n = len(values)
    return float(np.sqrt((n - 1) / n * np.sum((np.asarray(values) - np.mean(values)) ** 2)))


def summarise(judged: list[Judged], pool: int) -> dict[str, Any]:
    """Coverage and false takes over the A/A configurations, with their leave-one-seed-out standard errors, overall
    and by quartile of the control's seed spread (1: the quietest)."""
    rates = _rates(judged)
    out: dict[str, Any] = {"n": len(judged), **rates, **{f"{k}_se": _jackknife(judged, pool, k) for k in rates}}
    out["by_control_spread"] = []
    if not judged:
        return out
    spreads = np.array([j.spread for j in judged])
    edges = np.quantile(spreads, [0.25, 0.5, 0.75])
    quartiles = np.searchsorted(edges, spreads, side="right") + 1
    for q in range(1, 5):
        part = [j for j, k in zip(judged, quartiles) if k == q]
        within = _rates(part)
        out["by_control_spread"].append(
            {
                "quartile": q,
                "spread_up_to": float(edges[q - 1]) if q < 4 else float(spreads.max()),
                "n": len(part),
                "coverage": within["coverage"],
                "coverage_se": _jackknife(part, pool, "coverage"),
                "false_take_rate": within["false_take_rate"],
            }
        )
    return out


def calibrate(
    control: list[list[float]],
    effect: list[list[float]],
    tokens: list[int],
    shapes: list[tuple[int, int]],
    limit: int,
    resamples: int,
    protocol: EvalProtocol,
    prior: Any = None,
    jobs: int = 1,
    checkout: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The verdict's coverage and false takes on A/A configurations of the ``control`` seeds (per-document NLL sums,
    one list per seed), for each (control seeds, option seeds) of ``shapes``, and its power on the ``effect`` seeds,
    scored as ``protocol`` says; ``prior``: the stored calibration the verdict pools in (None: none)."""
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, dict[str, int], list[Configuration]]] = []
    for control_seeds, option_seeds in shapes:
        shape = {"control_seeds": control_seeds, "option_seeds": option_seeds}
        for options in OPTIONS:
            found = draws(len(control), control_seeds, option_seeds, options, limit, rng)
            plan.append(("aa", {"options": options, **shape}, [(c, g, None) for c, g in found]))
        for options in POWER_OPTIONS if len(effect) >= option_seeds else ():
            # drawn at random, the real fix's seeds with the rest: its pool is apart from the control's
            found = [drawn(len(control), control_seeds, option_seeds, options - 1, rng) for _ in range(limit)]
            fixes = [tuple(sorted(rng.choice(len(effect), option_seeds, replace=False))) for _ in found]
            plan.append(("power", {"options": options, **shape}, [(c, g, f) for (c, g), f in zip(found, fixes)]))
    everything = [configuration for _, _, configurations in plan for configuration in configurations]
    judging = Judging(control, effect, tokens, protocol, resamples, prior)
    judged = iter(judge_all(judging, everything, jobs, checkout))
    rows, power = [], []
    for kind, shape, configurations in plan:
        part = [next(judged) for _ in configurations]
        if kind == "aa":
            rows.append({**shape, **summarise(part, len(control))})
        else:
            taken = [j.take == EFFECT for j in part]
            power.append({**shape, "n": len(part), "take_rate": float(np.mean(taken)) if part else None})
    tokens_total = float(np.sum(tokens))
    c_means = np.sum(control, axis=1) / tokens_total
    e_means = np.sum(effect, axis=1) / tokens_total if effect else None
    own = stats.decompose(np.asarray(control), np.asarray(tokens), "these seeds")
    return {
        "seeds": len(control),
        "control": {
            "mean": float(c_means.mean()),
            "sd": float(c_means.std(ddof=1)),
            # a run's seed variance is a shift shared by every document, which a bootstrap over documents cannot
            # see, and the document-by-seed residual, which it does
            "shift_sd": float(np.sqrt(own.shift_var)),
            "residual_sd": float(np.sqrt(own.residual_rate / tokens_total)),
        },
        "prior": None
        if prior is None
        else {"df": prior.df, "sd": float(np.sqrt(prior.variance(tokens_total))), "source": prior.source},
        "configurations": rows,
        "power": {
            "option": EFFECT,
            "delta": float(e_means.mean() - c_means.mean()) if effect else None,
            "configurations": power,
        },
    }


def _pct(x: float | None, se: float | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" + (f" ± {se:.1%}" if se is not None else "")


def show(result: dict[str, Any]) -> str:
    control, power, prior = result["control"], result["power"], result["prior"]
    lines = [
        f"control `{CONTROL}` over {result['seeds']} seeds: final val mean {control['mean']:.4f}, "
        f"sd {control['sd']:.4f} (a shift shared by every document, sd {control['shift_sd']:.4f}, and the "
        f"document-by-seed residual that a bootstrap over documents sees, sd {control['residual_sd']:.4f})",
        f"the verdict pools a stored calibration: sd {prior['sd']:.4f} on {prior['df']} df ({prior['source']})"
        if prior
        else "the verdict pools no stored calibration",
        "",
        "coverage and false takes ± their leave-one-seed-out standard errors; (firm): takes not marked provisional",
        "",
        "| control seeds | option seeds | A/A options | configurations | interval covers 0 | false takes (firm) | "
        "by quartile of the control's spread, 1 (quietest) / 2 / 3 / 4: covers 0 | false takes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["configurations"]:
        covers = " / ".join(_pct(q["coverage"]) for q in r["by_control_spread"])
        takes = " / ".join(_pct(q["false_take_rate"]) for q in r["by_control_spread"])
        lines.append(
            f"| {r['control_seeds']} | {r['option_seeds']} | {r['options']} | {r['n']:,} | "
            f"{_pct(r['coverage'], r['coverage_se'])} | {_pct(r['false_take_rate'], r['false_take_rate_se'])} "
            f"({_pct(r['firm_false_take_rate'])}) | {covers} | {takes} |"
        )
    if power["delta"] is not None:
        lines += [
            "",
            f"power on `{power['option']}` (Δ {power['delta']:+.4f} over all seeds): how often the verdict takes it",
            "",
            "| control seeds | option seeds | options | configurations | takes it |",
            "|---|---|---|---|---|",
        ]
        for r in power["configurations"]:
            lines.append(
                f"| {r['control_seeds']} | {r['option_seeds']} | {r['options']} | {r['n']:,} | {_pct(r['take_rate'])} |"
            )
    return "\n".join(lines)


def _shape(text: str) -> tuple[int, int]:
    control, option = (int(x) for x in text.split(","))
    return control, option


def checkout_of(rev: str, into: Path) -> Path:
    """The orchestrator, contract and jobs packages of commit ``rev``, extracted into ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "orchestrator", "contract", "jobs"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, required=True, help="seeds of the control to train (and judge)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--effect-seeds", type=int, default=0, help="seeds of the real fix, after the control's")
    parser.add_argument("--set", action="append", default=[], help="override a field of every run (key.path=value)")
    parser.add_argument(
        "--configuration",
        type=_shape,
        action="append",
        help="CONTROL_SEEDS,OPTION_SEEDS to judge (repeatable; default: 1,1 2,1 2,2 and the spec's)",
    )
    parser.add_argument("--max-configurations", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: the verdict's)")
    parser.add_argument(
        "--prior",
        choices=("stored", "none"),
        default="stored",
        help="judge with the stored calibration of the control's configuration, where one matches, or with none",
    )
    parser.add_argument(
        "--verdict-at", metavar="REV", help="judge with the verdict of this commit (implies --prior none)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="processes that train, and that judge")
    parser.add_argument("--losses", type=Path, help="keep (and reuse) the trained per-document losses in this file")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--store",
        action="store_true",
        help="store these seeds as the calibration of the control's configuration (orchestrator/results/"
        "seed_priors.json) instead of judging; never judge the verdict on the seeds it stores",
    )
    args = parser.parse_args()
    print(f"machine: {platform.node()} | {platform.machine()}, {os.cpu_count()} cores | {time.strftime('%Y-%m-%d')}")
    experiment, plan = load(None, args.set)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    effect_seeds = list(range(seeds[-1] + 1, seeds[-1] + 1 + args.effect_seeds))
    losses = train(args.set, {CONTROL: seeds, EFFECT: effect_seeds}, args.jobs, args.losses)
    control = [losses["doc_nll"][CONTROL][str(s)] for s in seeds]
    effect = [losses["doc_nll"][EFFECT][str(s)] for s in effect_seeds]
    if args.store:
        _store(plan, experiment.control, control, losses["doc_tokens"], seeds)
        return
    prior = None
    if args.prior == "stored" and not args.verdict_at:
        from orchestrator.results import seed_prior

        prior = seed_prior.prior(plan, experiment.control, losses["doc_tokens"])
    shapes = args.configuration or sorted(
        {
            (1, 1),
            (2, 1),
            (2, 2),
            (sum(r.option == CONTROL for r in plan.runs), sum(r.option == EFFECT for r in plan.runs)),
        }
    )
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        checkout = checkout_of(args.verdict_at, Path(tmp)) if args.verdict_at else None
        result = calibrate(
            control,
            effect,
            losses["doc_tokens"],
            shapes,
            args.max_configurations,
            args.resamples or stats.RESAMPLES,
            plan.evaluation,
            prior,
            args.jobs,
            checkout,
        )
    result["verdict_at"] = args.verdict_at or "this checkout"
    print(show(result))
    print(f"\n(the verdict of {result['verdict_at']} applied in {time.time() - t0:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


def _store(plan: Plan, control: str, losses: list[list[float]], tokens: list[int], seeds: list[int]) -> None:
    """Keep these seeds' decomposition as the calibration of the control's configuration."""
    from orchestrator.results import seed_prior

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    source = f"bench.calibration --store, seeds {seeds[0]}-{seeds[-1]} of {control} at {commit or 'an unknown commit'}"
    calibration = stats.decompose(np.asarray(losses), np.asarray(tokens), source)
    run = next(r for r in plan.runs if r.option == control and r.search is None)
    seed_prior.store(run, plan.evaluation, tokens, calibration)
    print(
        f"stored: shift sd {np.sqrt(calibration.shift_var):.4f} and residual sd "
        f"{np.sqrt(calibration.residual_rate / np.sum(tokens)):.4f} per run, on {calibration.df} df ({source})"
    )


if __name__ == "__main__":
    main()
