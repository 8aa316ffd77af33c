"""Export a sweep's winner as a standalone model: one folder that loads with transformers alone.

    python -m orchestrator.export EXPERIMENT [--variant NAME] --out DIR [--no-check]

EXPERIMENT is the experiment's folder (``<storage.path>/<name>``), its ``s3://`` URI (the
endpoint from AWS_ENDPOINT_URL), or the spec that launched it. Without --variant the
verdict's take is exported; --variant names another variant, or one run of it
(``current[seed=1]``).

The checkpoint exported is the one the verdict's figures describe: the run's compared
evaluation (its final one, or with ``evaluation.selection_fraction`` its best). LoRA is
merged into the base weights, and the folder is written by ``save_pretrained`` with the
run's tokenizer and a model card (README.md: the verdict, the spec, the evaluation figures
with their interval). Before the folder appears at DIR it is loaded back with
``AutoModelForCausalLM.from_pretrained`` alone and scored under the experiment's protocol:
its val loss must equal the run's compared loss.

Reads storage only, never Ray. Exit codes: 0 exported; 2 bad input or nothing to export
(nothing was taken, the checkpoint was not kept), with the fix; 1 the exported model does
not reproduce the run's compared loss. DIR is written only when the export succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from contract.models import ModelUnavailable, check_reachable
from contract.spec import EvalProtocol, StorageSpec, TrainSpec
from contract.storage import download_dir, filesystem, is_s3
from orchestrator.folder import ExperimentFolder, locate
from orchestrator.results.records import OK_STATUSES, RunRecord, collect
from orchestrator.results.report import Results, build
from orchestrator.results.verdict import VariantResult
from orchestrator.spec import Run, SpecError

EXIT_EXPORTED, EXIT_MISMATCH, EXIT_REFUSED = 0, 1, 2
# How far the reloaded model's loss may be from the run's. In fp32, merged LoRA weights (W + alpha/r * B @ A, added
# once) instead of the adapter beside W change the loss by float rounding only (below 1e-7 on the demo model). A
# bf16 run is scored under bf16 autocast as it was, but kernels round differently by device and batch: on the demo
# model bf16 moves the loss 5e-5 from fp32 altogether; larger models move it more.
TOLERANCE = {"fp32": 1e-4, "bf16": 1e-3}
EVAL_WINDOWS = 8  # windows per forward pass when scoring: memory only, the losses do not depend on it


class ExportError(Exception):
    """Nothing can be exported as asked; the message says why and what to do."""


class Mismatch(Exception):
    """The exported model does not score what the run scored."""


@dataclass(frozen=True)
class Choice:
    """Which run's checkpoint is exported, and why that one."""

    variant: VariantResult  # as the verdict compared it
    run: RunRecord
    spec: Run  # the run as planned (plan.json)
    checkpoint: str  # its compared evaluation's checkpoint, in the experiment's folder
    taken: bool  # the verdict's take, rather than asked for by --variant
    seed_note: str  # how this seed was chosen among the variant's, when it has several


@dataclass(frozen=True)
class Exported:
    out: Path
    choice: Choice
    val_loss: float | None  # the exported folder's, under the protocol (None with check=False)


def export(source: str, out: str | Path, variant: str | None = None, check: bool = True) -> Exported:
    """Export the verdict's take (or ``variant``) of the experiment at ``source`` into the new folder ``out``.

    Raises :class:`ExportError` when there is nothing to export as asked, and :class:`Mismatch` when the exported
    model, loaded back, does not score the run's compared loss (``out`` is then not written).
    """
    out = _new_folder(out)
    folder = locate(source)
    stored = folder.plan()
    if stored is None:
        raise ExportError(
            f"{source}: no experiment at {folder.uri} (no plan.json); pass the experiment's folder "
            "(<storage.path>/<name>), its s3:// URI (with AWS_ENDPOINT_URL for another endpoint than AWS), or its spec"
        )
    experiment, plan = stored
    if not folder.reported():
        raise ExportError(
            f"{folder.uri}: no summary.json: the sweep has not finished, or its report was not written; wait for it, "
            "or rebuild the report with `python -m orchestrator.launch SPEC --report`"
        )
    results = build(folder, experiment, plan, collect(folder, plan))  # what --report computes, from the same records
    choice = choose(results, variant)
    spec = choice.spec.spec
    print(_describe(folder, choice), flush=True)
    with tempfile.TemporaryDirectory() as scratch, _staging(out) as stage:
        checkpoint = _fetch(choice.checkpoint, folder.storage, Path(scratch))
        save_standalone(spec, folder.storage, checkpoint, stage)
        val_loss = None
        if check:
            val_loss = score(stage, spec, plan.evaluation, folder.storage, choice.run.eval_tokens)
            print(_check_line(val_loss, choice, out), flush=True)
            tolerance = TOLERANCE[spec.compute.precision]
            if abs(val_loss - choice.run.compared_loss) > tolerance:
                raise Mismatch(
                    f"the exported model scores {val_loss:.6f} under the protocol, the run {choice.run.run} scored "
                    f"{choice.run.compared_loss:.6f} at step {choice.run.compared_step} (more than {tolerance:g} "
                    f"apart); {out} was not written. Pass --no-check to export it anyway"
                )
        (stage / "README.md").write_text(model_card(results, choice, val_loss))
    return Exported(out, choice, val_loss)


# --------------------------------------------------------------------- choose


def choose(results: Results, name: str | None) -> Choice:
    """The run and checkpoint to export: the verdict's take, or the variant (or run) ``name``.

    Of a variant with several seeds, the run with the lowest val loss at its compared evaluation, as measured on the
    documents that choose (the rule that picks each run's compared evaluation, so with a selection share the seed is
    not chosen on the documents that score it); ties go to the first in the plan.
    """
    folder, verdict = results.folder, results.comparisons.verdict
    variants = {v.variant: v for v in results.comparisons.variants}
    runs = {r.run: r for r in results.records}
    taken = name is None
    if taken:
        if verdict.take is None:
            raise ExportError(
                f"nothing to export: the verdict took no fix ({verdict.reason}). To export one anyway, pass "
                f"--variant NAME, one of: {', '.join(variants)}"
            )
        name = verdict.take
    if name in variants:
        variant, candidates = variants[name], variants[name].runs
    elif name in runs and runs[name].variant in variants:
        variant, candidates = variants[runs[name].variant], [runs[name]]
    else:
        raise ExportError(
            f"--variant {name!r}: no such variant in {folder.uri}; choose from {', '.join(variants)} "
            f"(or one of their runs: {', '.join(r for r in runs if r not in variants)})"
        )
    compared = [r for r in candidates if r.compared_step is not None]
    if not compared:
        raise ExportError(
            f"--variant {name!r}: {candidates[0].run} has no evaluation to export ({candidates[0].status}: "
            f"{candidates[0].reason}); choose another variant"
        )
    run = min(compared, key=lambda r: r.selection_loss)
    seed_note = ""
    if len(candidates) > 1:
        losses = ", ".join(f"seed {r.seed}: {r.selection_loss:.4f}" for r in compared)
        seed_note = (
            f"{name} ran {len(candidates)} seeds; this is seed {run.seed}, the one with the lowest val loss at its "
            f"compared evaluation on the documents that choose ({losses})"
        )
        if results.protocol.selection_fraction is None:
            seed_note += (
                ". Those documents also score it, so its own loss is a slightly optimistic estimate; the verdict's "
                "figure is the mean over the seeds"
            )
    planned = results.run(run.run)
    return Choice(variant, run, planned, _checkpoint(folder, run, planned), taken, seed_note)


def _checkpoint(folder: ExperimentFolder, run: RunRecord, planned: Run) -> str:
    """The compared evaluation's checkpoint in the folder; ExportError with the fix when there is none."""
    step, every = run.compared_step, planned.spec.run
    if run.compared_checkpoint is None:
        raise ExportError(
            f"{run.run}: no checkpoint was written at its compared evaluation, step {step} (checkpoints come every "
            f"run.checkpoint_every {every.checkpoint_every} steps and at the last); relaunch with --fresh and "
            f"run.checkpoint_every equal to run.eval_every ({every.eval_every}) so that every evaluation has one"
        )
    uri = run.compared_checkpoint
    fs, path = filesystem(uri, folder.storage)
    if fs.get_file_info(f"{path}/manifest.json").type.name != "File":
        raise ExportError(
            f"{run.run}: the checkpoint of its compared evaluation (step {step}) is not at {uri} or is incomplete: "
            f"Ray keeps the run.keep_checkpoints ({every.keep_checkpoints}) best by val loss and the latest, and it "
            "was not kept; relaunch with --fresh and a higher run.keep_checkpoints"
        )
    return uri


# ---------------------------------------------------------------------- build


def _fetch(uri: str, storage: StorageSpec, scratch: Path) -> Path:
    """The checkpoint as a local folder, complete by its manifest (an s3:// one is downloaded into ``scratch``)."""
    from jobs.checkpoint import IncompleteCheckpoint, verify

    local = download_dir(uri, scratch / "checkpoint", storage) if is_s3(uri) else Path(uri)
    try:
        verify(local)
    except IncompleteCheckpoint as err:
        raise ExportError(f"{uri}: {err}; export another run, or relaunch the sweep to write it again") from None
    return local


def save_standalone(spec: TrainSpec, storage: StorageSpec, checkpoint: Path, out: Path) -> None:
    """Write the model of ``checkpoint`` into ``out`` with ``save_pretrained``: LoRA merged into the base, the
    tokenizer beside it."""
    from transformers import AutoTokenizer

    from jobs.model import load_model, load_tokenizer

    try:
        if spec.method == "lora":
            if spec.model.init == "pretrained":
                check_reachable(spec.model.name, storage)  # the base the adapter was trained on
            check_reachable(spec.model.tokenizer_source, storage)
        model = load_model(spec, storage, checkpoint_dir=str(checkpoint))
        # A full checkpoint carries the run's tokenizer; an adapter's comes from where the run took it.
        tokenizer = (
            AutoTokenizer.from_pretrained(checkpoint) if spec.method == "full" else load_tokenizer(spec, storage)
        )
    except ModelUnavailable as err:
        raise ExportError(str(err)) from None
    if spec.method == "lora":
        model = model.merge_and_unload()  # W + alpha/r * B @ A into the base's own layers: no peft to load it
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def score(folder: Path, spec: TrainSpec, protocol: EvalProtocol, storage: StorageSpec, eval_tokens: int) -> float:
    """The val loss of the model in ``folder`` under the experiment's protocol, on the documents that score.

    The folder is loaded as a user loads it, ``AutoModelForCausalLM.from_pretrained`` and its own tokenizer, and
    scored by jobs.evaluate on the val documents jobs.data gives the run's data spec, under the run's precision.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs import data as data_lib
    from jobs import evaluate as eval_lib

    try:
        dataset = data_lib.load(spec.data, storage, AutoTokenizer.from_pretrained(folder))
    except data_lib.DataError as err:
        raise ExportError(
            f"{err}; the check scores the run's val documents: run the export where the sweep was launched, or pass "
            "--no-check"
        ) from None
    evalset = eval_lib.eval_set(dataset.val_docs, protocol)
    if evalset.eval_tokens != eval_tokens:
        raise ExportError(
            f"data.path {spec.data.path!r}: its val documents give {evalset.eval_tokens:,} tokens to score, the run "
            f"scored {eval_tokens:,}: the file changed since the sweep; restore it, or pass --no-check"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(folder).to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=spec.compute.precision == "bf16"):
        doc_nll = eval_lib.per_document_nll(model, evalset, EVAL_WINDOWS, device)
    return protocol.mean_nll(doc_nll.tolist(), evalset.doc_tokens, "score")


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A folder beside ``out`` that becomes ``out`` only when the block succeeds: a failed export leaves nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        if out.is_dir():
            out.rmdir()  # empty: _new_folder checked
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _new_folder(out: str | Path) -> Path:
    if is_s3(str(out)):
        raise ExportError(f"--out {out}: export to a local folder, then upload it (aws s3 cp --recursive DIR {out})")
    out = Path(out).expanduser().absolute()  # said in full in what is printed and in errors: no doubt where it went
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ExportError(f"--out {out}: exists and is not an empty folder; remove it or choose another --out")
    return out


# ---------------------------------------------------------------------- words


def _kind(spec: TrainSpec) -> str:
    if spec.method == "full":
        return f"a full fine-tune of `{spec.model.name}`"
    lora = spec.lora
    return (
        f"LoRA (rank {lora.rank}, alpha {lora.alpha:g}, on {', '.join(lora.target_modules)}) merged into "
        f"`{spec.model.name}`"
    )


def _describe(folder: ExperimentFolder, choice: Choice) -> str:
    run = choice.run
    why = "the verdict's take" if choice.taken else "asked for with --variant"
    if run.status not in OK_STATUSES:
        why += f"; it is {run.status}, so the verdict could not take it"
    lines = [
        f"exporting {choice.variant.variant} from {folder.uri} ({why})",
        f"  run {run.run}, step {run.compared_step} of {run.total_steps} (its compared evaluation): "
        + _kind(choice.spec.spec).replace("`", ""),
        f"  checkpoint {choice.checkpoint}",
    ]
    if choice.seed_note:
        lines.append(f"  {choice.seed_note}")
    return "\n".join(lines)


def _check_line(val_loss: float, choice: Choice, out: Path) -> str:
    compared = choice.run.compared_loss
    return (
        f"val loss under the protocol: {val_loss:.6f} loaded back from {out} with from_pretrained, "
        f"{compared:.6f} the run's compared loss (Δ {val_loss - compared:+.1e})"
    )


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _figures(results: Results, choice: Choice, val_loss: float | None) -> str:
    """The card's table: this folder's loss beside the run's, the variant's and the control's, and Δ with its
    interval."""
    run, variant = choice.run, choice.variant
    rows = [
        (
            "this folder, loaded back with from_pretrained and scored under the protocol",
            "not checked (--no-check)" if val_loss is None else f"{val_loss:.6f}",
        ),
        (f"run `{run.run}` at its compared evaluation (step {run.compared_step})", f"{run.compared_loss:.6f}"),
    ]
    control = results.comparisons.control
    for v in [variant] + ([control] if control not in (None, variant) else []):
        spread = f", seed sd {v.seed_std:.4f}" if v.seed_std is not None else ""
        role = "control" if v is control else "variant"
        rows.append((f"{role} `{v.variant}`: mean over {len(v.runs)} seed(s){spread}", _fmt(v.compared_mean)))
    delta = variant.delta
    if delta is not None:
        low, high = delta.ci95
        rows.append(
            (
                "Δ vs the control, 95% paired-bootstrap interval over documents and seeds",
                f"{delta.mean:+.4f} [{low:+.4f}, {high:+.4f}], p {delta.p:.4f}, Holm-corrected {variant.p_holm:.4f}",
            )
        )
    return "\n".join(["| | val loss (nats/token) |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def model_card(results: Results, choice: Choice, val_loss: float | None) -> str:
    """README.md of the exported folder: what it is and how to load it, the verdict, the evaluation figures with their
    interval, and the spec that produced it."""
    name, folder, protocol = results.experiment.name, results.folder, results.protocol
    run, spec = choice.run, choice.spec.spec
    why = "The verdict's take" if choice.taken else f"Exported on request (`--variant {choice.variant.variant}`)"
    scored = (
        "all val documents, at each run's final evaluation"
        if protocol.selection_fraction is None
        else f"the {1 - protocol.selection_fraction:.0%} of val documents that did not choose each run's best "
        "evaluation, at that evaluation"
    )
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:", "- plateau-sweep"]
    kind = "full-fine-tune" if spec.method == "full" else "merged-lora"
    front += [f"- {json.dumps(name)}", f"- {kind}", "---"]  # a JSON string is valid YAML
    return "\n".join(
        [
            *front,
            "",
            f"# {name} / {choice.variant.variant}: {run.run} at step {run.compared_step}",
            "",
            f"{why}: {_kind(spec)}, option `{run.option}` of sweep `{name}`, at its compared evaluation (step "
            f"{run.compared_step} of {run.total_steps}, {run.status.replace('_', ' ')}). It loads with "
            "transformers alone:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
            "",
            'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this folder>")',
            'generate = pipeline("text-generation", model="<this folder>")',
            "```",
            "",
            "## The verdict",
            "",
            results.comparisons.verdict.reason,
            "",
            _before_relying(results, choice.taken),
            "",
            "## Evaluation",
            "",
            f"Every run of the sweep is scored on the same {_fmt(results.eval_tokens, ',')} val tokens, with a "
            f"sliding window of {protocol.context} tokens every {protocol.stride}. Compared: the mean NLL "
            f"on {scored}.",
            "",
            _figures(results, choice, val_loss),
            "",
            *([choice.seed_note + ".", ""] if choice.seed_note else []),
            "## Spec",
            "",
            f"The resolved spec of run `{run.run}`, which produced these weights:",
            "",
            "```yaml",
            yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).rstrip(),
            "```",
            "",
            f"Exported from the checkpoint `{choice.checkpoint}` of the experiment in `{folder.uri}`.",
            "",
        ]
    )


def _before_relying(results: Results, taken: bool) -> str:
    """Where the sweep says what the verdict does not: what its curves showed, and the experiment that confirms it
    (the follow-up confirms the take; for another variant it is a sweep about other runs)."""
    from orchestrator.diagnose.sweep import follow_up_spec

    text = (
        f'Before relying on it: `report.md` in `{results.folder.uri}` says, under "Why each run won or lost", what '
        "the diagnosis found on this variant's curve (such as memorisation, a learning rate outside the usual range, a "
        "clip that acts as a learning-rate cut)"
    )
    follow_up = follow_up_spec(results) if taken else None  # the one the report wrote beside it
    return text + (f"; `{follow_up.name}`, beside it, is the sweep that would confirm it." if follow_up else ".")


# ------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="the experiment's folder, its s3:// URI, or the spec that launched it")
    parser.add_argument("--variant", help="export this variant (or one run of it) instead of the verdict's take")
    parser.add_argument("--out", required=True, help="the folder to write (new, or empty)")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="do not load the folder back and score it under the protocol (the check reads the val data)",
    )
    args = parser.parse_args(argv)
    try:
        done = export(args.experiment, args.out, args.variant, check=not args.no_check)
    except (ExportError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except Mismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MISMATCH
    except OSError as err:  # reading the experiment's storage, or writing --out
        print(
            f"error: {err}; check {args.experiment} (the path, AWS_ENDPOINT_URL, the credentials) and that --out "
            "can be written",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    files = sorted(p.name for p in done.out.iterdir())
    print(f"wrote {done.out}: {', '.join(files)}")
    print(
        f'load it: AutoModelForCausalLM.from_pretrained("{done.out}"), or pipeline("text-generation", '
        f'model="{done.out}")'
    )
    return EXIT_EXPORTED


if __name__ == "__main__":
    sys.exit(main())
