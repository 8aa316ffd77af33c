"""Stored calibrations of seed noise: for a configuration measured on many seeds, what one seed's loss varies by.

``seed_priors.json`` (beside this module) holds one entry per calibrated configuration,
written by ``python -m bench.calibration --store`` from seeds the verdict's own
calibration never uses. A sweep whose control is that configuration, scored on the same
val documents, pools its own seeds with the stored ones (:class:`~.stats.SeedPrior`):
four quiet seeds cannot make the noise look small, and a control of one or two seeds has a
stand-in. Any other configuration gets no prior: the calibration says nothing about
another model, data set or training length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contract.spec import EvalProtocol
from orchestrator.results.stats import MIN_DF, SeedPrior, control_seeds_for
from orchestrator.spec import Plan, Run, flatten
from orchestrator.spec.resolve import EXECUTION_ONLY

STORE = Path(__file__).with_name("seed_priors.json")

# Left out of the key: where the data lives (a local path is absolute in local mode; the val documents' token
# counts, checked at the verdict, say whether they are the same documents) and the seed.
_NOT_KEY = ("data.path", "run.seed")


def configuration(run: Run, protocol: EvalProtocol) -> dict[str, Any]:
    """What a calibration is keyed by: every field of the run that can change its losses, and how they are scored."""
    fields = flatten(run.spec.model_dump(mode="json"))
    key = {k: v for k, v in fields.items() if not k.startswith(EXECUTION_ONLY) and k not in _NOT_KEY}
    return {**key, "evaluation.context": protocol.context, "evaluation.stride": protocol.stride}


def stored(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["calibrations"] if path.is_file() else []


def entry(plan: Plan, control: str | None, path: Path | None = None) -> dict[str, Any] | None:
    """The stored calibration of the plan's control configuration, if there is one (its documents unchecked)."""
    run = next((r for r in plan.runs if r.option == control and r.search is None), None)
    if run is None:
        return None
    key = json.loads(json.dumps(configuration(run, plan.evaluation)))  # as stored: tuples become lists
    return next((c for c in stored(path or STORE) if c["configuration"] == key), None)


def prior(plan: Plan, control: str | None, doc_tokens: list[int] | None, path: Path | None = None) -> SeedPrior | None:
    """The stored calibration as a prior, when the control is its configuration and the runs were scored on its val
    documents (the same token count for every document)."""
    found = entry(plan, control, path)
    if found is None or doc_tokens is None or list(doc_tokens) != found["doc_tokens"]:
        return None
    return SeedPrior(found["shift_var"], found["residual_rate"], found["df"], found["source"])


def store(
    run: Run, protocol: EvalProtocol, doc_tokens: list[int], calibration: SeedPrior, path: Path | None = None
) -> None:
    """Keep ``calibration`` as the one for ``run``'s configuration (replacing an older one)."""
    key = json.loads(json.dumps(configuration(run, protocol)))
    path = path or STORE
    kept = [c for c in stored(path) if c["configuration"] != key]
    kept.append(
        {
            "configuration": key,
            "doc_tokens": list(doc_tokens),
            "shift_var": calibration.shift_var,
            "residual_rate": calibration.residual_rate,
            "df": calibration.df,
            "source": calibration.source,
        }
    )
    path.write_text(json.dumps({"calibrations": kept}, indent=1) + "\n")


def seed_notes(plan: Plan, control: str | None, path: Path | None = None) -> list[tuple[str, str]]:
    """What the dry run says after its seeds line: the stored calibration that joins the plan's seeds, or a warning
    that the verdict will take no fix (and the control seeds that change that)."""
    if control is None:
        return []
    variants: dict[str, int] = {}
    for run in plan.runs:
        if run.search is None:
            variants[run.variant] = variants.get(run.variant, 0) + 1
    df = sum(n - 1 for n in variants.values())
    found = entry(plan, control, path)
    if found is not None:
        return [
            (
                "",
                f"pooled with the stored calibration of the control's configuration: {found['df']} degrees of "
                f"freedom ({found['source']}), if the val documents are the ones it was measured on (checked at the "
                "verdict)",
            )
        ]
    if df >= MIN_DF:
        return []
    control_runs = sum(1 for r in plan.runs if r.option == control and r.search is None)
    return [
        (
            "warning",
            f"the seed noise rests on {df} degree{'s' if df != 1 else ''} of freedom, fewer than {MIN_DF}, and no "
            "stored calibration matches the control's configuration: the verdict will take no fix; control_seeds: "
            f"{control_seeds_for(control_runs, df)} fixes it",
        )
    ]
