"""From a training log to a diagnosis and a runnable sweep.

    python -m orchestrator.diagnose [SOURCE] [--command CMD] [--intended-batch N] [--emit-spec FILE]

SOURCE is a training log (a Hugging Face trainer_state.json, a nanoGPT-style log, CSV or
JSONL of per-step metrics), a plateau-sweep spec, or an experiment's folder in storage
(local or s3://; the endpoint comes from AWS_ENDPOINT_URL). --command imports the current
configuration from a command in the seed's environment-variable form. The diagnosis is
printed as markdown; --emit-spec writes an experiment spec whose base and control are the
current configuration, with one option per recommended fix. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from contract.presets import config_dict
from orchestrator.diagnose import advice
from orchestrator.diagnose.command import CommandError, import_command
from orchestrator.diagnose.logs import FORMATS, LogError, RunLog, parse
from orchestrator.diagnose.rules import Context, diagnose
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


def _longer_than_block(config: dict[str, Any]) -> tuple[float | None, str | None]:
    """The share of the data's documents longer than block_size, when the data file is here; with a note when
    estimated."""
    from contract.spec import DataSpec, StorageSpec
    from jobs.data import DataError, read_documents, tokenize

    data, block = config.get("data", {}), config.get("data", {}).get("block_size")
    path = data.get("path")
    if block is None or path is None or not Path(path).is_file():
        return None, None
    try:
        docs = read_documents(DataSpec(path=path), StorageSpec())
    except DataError:
        return None, None
    ctx = Context(config)
    name = ctx.value("model.tokenizer") or ctx.value("model.name")  # ModelSpec.tokenizer_source, for a partial config
    try:
        from transformers import AutoTokenizer

        from contract.presets import local_folder

        folder = local_folder(name)
        tokenizer = AutoTokenizer.from_pretrained(str(folder) if folder else name, local_files_only=True)
        lengths, note = [len(ids) for ids in tokenize(docs, tokenizer)], None  # as training counts them
    except (
        OSError,
        ValueError,
    ):  # not here (an uncached hub id), or not a name at all: English BPE averages about 4 characters a token
        lengths, note = (
            [len(d) / 4 for d in docs],
            f"document lengths in tokens are estimated at 4 characters a token ({name}'s tokenizer is not available "
            "offline)",
        )
    return sum(n > block for n in lengths) / len(lengths), note


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
    parser.add_argument("--run", help="which run of a sweep to diagnose (default: the control's first seed)")
    parser.add_argument(
        "--emit-spec",
        metavar="FILE",
        help="write an experiment spec: the current configuration as control, one option per fix",
    )
    args = parser.parse_args(argv)
    if args.source is None and args.command is None:
        parser.print_usage(sys.stderr)
        print("error: give a SOURCE (a training log or a sweep), a --command, or both", file=sys.stderr)
        return 2
    try:
        config: dict[str, Any] = {}
        notes: list[str] = []
        log, title = RunLog(name="command", points=[], source="command"), "the given command"
        if args.source is not None:
            is_sweep = (
                args.source.endswith((".yaml", ".yml")) or args.source.startswith("s3://") or Path(args.source).is_dir()
            )
            if is_sweep:
                log, config, title = _our_sweep(args.source, args.run)
            else:
                log = parse(args.source)
                title = f"{args.source} ({log.source})"
        if args.command is not None:
            imported = import_command(args.command)
            config, notes = imported.config, list(imported.notes)
            if imported.unknown:
                notes.append(f"not imported (unknown variables): {', '.join(imported.unknown)}")
    except (LogError, CommandError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a sweep's storage that cannot be read
        print(f"error: {args.source}: cannot read the sweep's storage ({err})", file=sys.stderr)
        return 2
    if log.longer_than_block is None:
        log.longer_than_block, note = _longer_than_block(config)
        notes += [note] if note else []
    model = config.get("model", {}).get("name")
    vocab = (config_dict(model) or {}).get("vocab_size") if model else None
    ctx = Context(config, args.intended_batch, vocab)
    findings = diagnose(log, ctx)
    opts = advice.options(config, findings, notes)
    print(advice.markdown(title, findings, ctx, opts, notes))
    if args.emit_spec:
        out = Path(args.emit_spec)
        last_val = log.evals[-1].val_loss if log.evals else None
        try:
            resolve_runs(ExperimentSpec(base=config, options={"current": {}}))
            out.write_text(advice.emit_spec(out.stem, config, opts, last_val, title))
        except (SpecError, ValueError) as err:
            print(
                f"error: --emit-spec: the current configuration is not a valid run ({err}); fix the command or the "
                "source",
                file=sys.stderr,
            )
            return 2
        except OSError as err:
            print(f"error: --emit-spec {out}: cannot write it ({err.strerror})", file=sys.stderr)
            return 2
        print(
            f"wrote {out}: the current configuration as control `current`, and {len(opts)} option(s): "
            f"{', '.join(o.key for o in opts)}\n"
            f"check it: python -m orchestrator.launch {out} --dry-run",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
