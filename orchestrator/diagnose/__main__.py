"""From a training log to a diagnosis and a runnable sweep.

    python -m orchestrator.diagnose [SOURCE] [--command CMD] [--intended-batch N] [--train-tokens N]
        [--emit-spec FILE] [--json FILE]

SOURCE is a training log (a Hugging Face trainer_state.json, console log or log_history
export; LLaMA-Factory's trainer_log.jsonl; Lightning's metrics.csv; a W&B export; TensorBoard
event files, a file or a run directory; an MLflow run, runs:/RUN_ID with MLFLOW_TRACKING_URI;
a nanoGPT-style log; CSV or JSONL of per-step metrics), a plateau-sweep spec, or an
experiment's folder in storage (local or s3://; the endpoint comes from AWS_ENDPOINT_URL).
The format is read from the content, and the diagnosis says what was read and what was left.
--command imports the current
configuration from a command in the seed's environment-variable form. The diagnosis is
printed as markdown (--json writes it machine-readable); --emit-spec writes an experiment
spec whose base and control are the current configuration, with one option per recommended
fix, and refuses (exit 2, saying why) when there is no configuration to run or nothing to
compare. Exit codes: 0 done, 2 bad input (a log with no recognisable loss names the keys it
found and the ones expected) or no spec.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from contract.spec import TrainSpec
from orchestrator.diagnose import advice
from orchestrator.diagnose.command import CommandError, import_command
from orchestrator.diagnose.corpus import Corpus, corpus
from orchestrator.diagnose.logs import FORMATS, LogError, RunLog, parse, tfevents
from orchestrator.diagnose.rules import Context, diagnose, healthy, not_judged, reference
from orchestrator.spec import ExperimentSpec, SpecError, resolve_runs


def _our_sweep(source: str, run: str | None) -> tuple[RunLog, dict[str, Any], str]:
    """(log, config, title) of one run of a sweep of ours: the control's first seed unless ``run`` names one."""
    from orchestrator.diagnose.sweep import run_log, spec_dict
    from orchestrator.folder import locate
    from orchestrator.results.records import collect

    folder = locate(source)
    stored = folder.plan()
    where = folder.uri
    if stored is None:
        raise LogError(
            f"{source}: no experiment found at {where} (no plan.json); launch it first, or pass a log file; accepted: "
            f"{FORMATS}"
        )
    experiment, plan = stored
    names = [r.name for r in plan.runs]
    chosen = run or next((r.name for r in plan.runs if r.option == experiment.control), names[0])
    if chosen not in names:
        raise LogError(f"--run {chosen!r}: no such run in {where}; choose from {', '.join(names)}")
    spec = next(r for r in plan.runs if r.name == chosen)
    (record,) = collect(folder, plan.model_copy(update={"runs": [spec]}))  # only the chosen run is read from storage
    return run_log(record), spec_dict(spec), f"run {chosen} of experiment {experiment.name}"


def _is_sweep(source: str) -> bool:
    """A spec of ours, or an experiment's folder; a directory of TensorBoard event files without our plan is a log."""
    if source.endswith((".yaml", ".yml")) or source.startswith("s3://"):
        return True
    from orchestrator.folder import PLAN  # the folder's owner pulls in pyarrow: only for a directory

    path = Path(source)
    return path.is_dir() and ((path / PLAN).exists() or not tfevents.run_dirs(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", help=f"the training log or sweep: {FORMATS}")
    parser.add_argument(
        "--command", help="the training command, e.g. 'USE_LORA=True LORA_RANK=8 ... python training.py'"
    )
    parser.add_argument(
        "--intended-batch",
        type=int,
        help="the batch the run was meant to have (e.g. before an out-of-memory error halved it)",
    )
    parser.add_argument(
        "--train-tokens",
        type=int,
        help="tokens in the training data, when its file is not here (to count the epochs the log has seen)",
    )
    parser.add_argument(
        "--run",
        help="which run to diagnose where SOURCE holds several: a sweep's (default: the control's first seed), a W&B "
        "chart export's, or a TensorBoard directory's (default: the first; the diagnosis names the others)",
    )
    parser.add_argument(
        "--emit-spec",
        metavar="FILE",
        help="write an experiment spec: the current configuration as control, one option per fix",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write the diagnosis as JSON: healthy, findings, causes, options"
    )
    args = parser.parse_args(argv)
    if args.source is None and args.command is None:
        parser.print_usage(sys.stderr)
        print("error: give a SOURCE (a training log or a sweep), a --command, or both", file=sys.stderr)
        return 2
    try:
        config: dict[str, Any] = {}
        notes: list[str] = []
        ours = False
        log, title = RunLog(name="command", points=[], source="command"), "the given command"
        if args.source is not None:
            if _is_sweep(args.source):
                log, config, title = _our_sweep(args.source, args.run)
                ours = True
            else:
                log = parse(args.source, args.run)
                title = f"{args.source} ({log.source})"
        if args.command is not None:
            imported = import_command(args.command)
            config, notes, ours = imported.config, list(imported.notes), False
            if imported.unknown:
                notes.append(f"not imported (unknown variables): {', '.join(imported.unknown)}")
    except (LogError, CommandError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a sweep's storage that cannot be read
        print(f"error: {args.source}: cannot read the sweep's storage ({err})", file=sys.stderr)
        return 2
    # a run of ours left its defaults out of the config, and they are what it ran; an imported command's are unknown
    data = corpus(TrainSpec.model_validate(config).model_dump(mode="json") if ours else config)
    if args.train_tokens is not None:
        data = replace(data, train_tokens=args.train_tokens) if data else Corpus(args.train_tokens, 0, 0, None)
    elif data is not None and data.note:
        notes.append(data.note)
    ctx = Context(config, args.intended_batch, data, ours)
    if ctx.model is not None and reference(ctx.model) is None:
        notes.append(
            f"no published reference loss is known for {ctx.model}: its start is judged only against a uniform guess "
            "over its vocabulary"
        )
    if not config:
        notes.append(
            "no configuration (--command, or a spec or sweep as SOURCE): the LR is not judged, and the start only "
            "against a uniform guess over any common vocabulary"
        )
    findings = diagnose(log, ctx)
    unjudged = not_judged(ctx, log) if not any(f.rule == "task" for f in findings) else None
    if unjudged is not None:
        notes.append(unjudged)
    plan = advice.advise(ctx, log, findings, notes)
    print(advice.markdown(title, log, findings, ctx, plan, notes))
    if args.json:
        out = advice.to_json(findings, plan, log)
        if log.reading is not None:
            out["reading"] = log.reading.to_json()
        try:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        except OSError as err:
            print(f"error: --json {args.json}: cannot write it ({err.strerror})", file=sys.stderr)
            return 2
    if args.emit_spec:
        return _emit(Path(args.emit_spec), config, ours, findings, plan, title)
    return 0


def _emit(out: Path, config: dict[str, Any], ours: bool, findings: list, plan: advice.Advice, title: str) -> int:
    """Write the spec, or exit 2 saying why there is none: no configuration to run, or nothing to compare."""
    stated = [(what, path) for what, path in (("the model", "model.name"), ("the data", "data.path"))]
    missing = [] if ours else [what for what, path in stated if Context(config).get(path) is None]
    refusal = None
    if not config:
        refusal = (
            "there is no configuration to run: pass --command (the training command), or a spec or an experiment "
            "folder as SOURCE"
        )
    elif missing:
        refusal = (
            f"the configuration does not name {' or '.join(missing)} (MODEL_TYPE, TRAINING_DATA_SOURCE in --command); "
            "a spec without them would train plateau-sweep's defaults, not what the log trained"
        )
    elif healthy(findings):
        refusal = "the run is healthy, so there is no fix to compare; keep training"
    elif not plan.options:
        refusal = "no fix to compare: the diagnosis names checks to make first, not hypotheses to sweep"
    if refusal is not None:
        print(f"error: --emit-spec {out}: not written: {refusal}", file=sys.stderr)
        return 2
    try:
        text = advice.emit_spec(out.stem, config, plan, title)
        spec = yaml.safe_load(text)
        resolve_runs(ExperimentSpec(**{k: spec[k] for k in ("name", "control", "early_stopping", "base", "options")}))
        out.write_text(text)
    except (SpecError, ValueError) as err:
        print(
            f"error: --emit-spec: the current configuration is not a valid run ({err}); fix the command or the source",
            file=sys.stderr,
        )
        return 2
    except OSError as err:
        print(f"error: --emit-spec {out}: cannot write it ({err.strerror})", file=sys.stderr)
        return 2
    print(
        f"wrote {out}: the current configuration as control `current`, and {len(plan.options)} option(s): "
        f"{', '.join(o.key for o in plan.options)}\n"
        f"check it: python -m orchestrator.launch {out} --dry-run",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
