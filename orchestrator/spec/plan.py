"""The resolved plan: every run's hyperparameters and derived figures, printed before anything starts."""

from __future__ import annotations

from contract.parameters import count_parameters
from orchestrator.spec.experiment import ExperimentSpec
from orchestrator.spec.resolve import Plan, Run, flatten


def batch_line(run: Run) -> str:
    """workers x micro-batch x accumulation steps = the effective batch."""
    spec = run.spec
    workers = spec.resources.num_workers
    return (
        f"{spec.data.batch_size} sequences = {workers} worker{'s' if workers > 1 else ''} x micro-batch "
        f"{spec.micro_batch} "
        f"x {spec.accumulation_steps} accumulation step{'s' if spec.accumulation_steps > 1 else ''}"
    )


def describe_run(run: Run) -> str:
    spec = run.spec
    fields = flatten(spec.model_dump(mode="json"))
    lines = [
        f"== {run.name}"
        + ("" if run.name == run.option else f"  (option {run.option})")
        + (f", an arm of the LR search of {run.search}" if run.search else ""),
        f"   overrides: {run.overrides or '(none: the base)'}",
    ]
    width = max(len(k) for k in fields)
    lines += [f"   {key:<{width}}  {value}" for key, value in fields.items()]
    r = spec.resources
    params = count_parameters(spec)
    if params is None:
        params_text = (
            "unknown until the model is loaded (counted from the config of a GPT-2 known offline, LoRA on its "
            "c_attn, c_proj and c_fc)"
        )
    else:
        trainable, total = params
        params_text = f"{trainable:,} of {total:,} ({trainable / total:.2%})"
    tokens = spec.data.batch_size * spec.data.block_size
    lines += [
        f"   -> effective batch      {batch_line(run)}",
        f"   -> tokens per step      {tokens:,}",
        f"   -> tokens in the run    {tokens * spec.run.steps:,}",
        f"   -> warmup steps         {spec.warmup_steps}",
        f"   -> trainable params     {params_text}",
        f"   -> resources            {r.num_workers} worker(s) x ({r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} "
        "GPU)",
        *(f"   -> {'compute' if i == 0 else '':<20} {line}" for i, line in enumerate(spec.levers().describe())),
    ]
    return "\n".join(lines)


def _numbers(seeds: list[int]) -> str:
    return (
        f"{seeds[0]}-{seeds[-1]}"
        if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2
        else (", ".join(map(str, seeds)))
    )


def seeds_line(experiment: ExperimentSpec, plan: Plan) -> str:
    """How many seeds each variant runs, what they measure (the seed noise every interval counts) and what that costs
    (an LR search's arms run one seed each and are left out)."""
    variants: dict[str, list[Run]] = {}
    for run in plan.runs:
        if run.search is None:
            variants.setdefault(run.variant, []).append(run)
    df = sum(len(runs) - 1 for runs in variants.values())
    if not df:
        return "1 per variant: these runs measure no seed noise of their own"
    control = [r for r in plan.runs if r.option == experiment.control and r.search is None]
    others = [len(runs) for runs in variants.values() if runs[0].option != experiment.control]
    parts = [f"control {len(control)} ({_numbers([r.spec.run.seed for r in control])})"] if control else []
    if others:
        other_seeds = sorted(r.spec.run.seed for r in plan.runs if r.option != experiment.control or r.search)
        parts.append(
            f"other variants {min(others)}"
            + (f"-{max(others)}" if max(others) > min(others) else "")
            + f" each ({_numbers(other_seeds)})"
        )
    extra = [r for runs in variants.values() for r in runs[1:]]
    share = sum(tokens(r) for r in extra) / sum(tokens(r) for r in plan.runs)
    return (
        f"{', '.join(parts)}: the seed noise every interval counts, pooled over "
        f"{sum(len(runs) > 1 for runs in variants.values())} variant(s) with {df} degree(s) of freedom; "
        f"{len(extra)} extra run(s), {share:.0%} of the sweep's training tokens"
    )


def shared_seeds(plan: Plan) -> str | None:
    """A warning when runs of different variants share a seed number (a seed listed by hand): they start from the same
    initialisation and data order, a correlation the interval does not count."""
    by_seed: dict[int, list[str]] = {}
    for run in plan.runs:
        by_seed.setdefault(run.spec.run.seed, []).append(run.variant)
    shared = {seed: sorted(set(v)) for seed, v in by_seed.items() if len(set(v)) > 1}
    if not shared:
        return None
    seed, names = next(iter(sorted(shared.items())))
    return (
        f"{', '.join(names)} share seed {seed}"
        + (f" ({len(shared) - 1} more seed(s) shared)" if len(shared) > 1 else "")
        + ": their runs start alike, a correlation the intervals do not count; drop run.seed from the options to give "
        "each variant seeds of its own"
    )


def tokens(run: Run) -> int:
    """Training tokens of the whole run."""
    return run.spec.data.batch_size * run.spec.data.block_size * run.spec.run.steps


def search_line(experiment: ExperimentSpec, plan: Plan) -> str:
    """What the LR search runs, where it prunes, and what it can cost against one run per option."""
    if not plan.searches:
        return "off: each option runs at its own optim.lr"
    by_name = {r.name: r for r in plan.runs}
    arms = sum(len(s.runs) for s in plan.searches)
    rungs = sorted({step for s in plan.searches for step in s.rungs})
    most = sum(tokens(r) for r in plan.runs)
    plain = sum(tokens(r) for r in plan.runs if r.search is None) + sum(
        tokens(by_name[s.runs[0]]) for s in plan.searches if s.option != experiment.control
    )
    eta = plan.searches[0].eta
    pruning = (
        f"arms pruned at steps {', '.join(map(str, rungs))} (at each, the best 1/{eta} of a variant's arms go on)"
        if rungs
        else "no rung before the last step: every arm runs to the end"
    )
    return (
        f"{len(plan.searches)} variant(s), {arms} arms; {pruning}; each variant's LR chosen on "
        f"{plan.evaluation.selection_fraction:.0%} of the val documents and scored on the rest; at most "
        f"{most:,} training tokens, {most / plain:.1f}x the {plain:,} of one run per option"
    )


def concurrency_line(experiment: ExperimentSpec, plan: Plan, local: bool, chosen: int | None) -> str:
    """How many runs go at once, and how that was chosen. ``chosen``: what local mode chose from the cores."""
    if experiment.max_concurrent:
        return f"{experiment.max_concurrent} (the spec's max_concurrent)"
    if chosen:
        return f"{chosen} (local mode, from this machine's cores)"
    if local:
        return "as many runs as this machine's resources hold"
    # Not what the cluster holds at launch: on an autoscaling cluster that is the head alone. A run that the
    # cluster cannot hold yet waits in its trial, and its Train workers' demand is what makes the autoscaler
    # add the nodes it needs, up to the cluster's max_workers.
    return (
        f"all {len(plan.runs)} runs offered at once (on a cluster: each run's demand reaches the autoscaler, and "
        "runs wait for nodes, not for each other; set max_concurrent to cap it)"
    )


def describe(
    experiment: ExperimentSpec,
    plan: Plan,
    concurrency: int | None = None,
    local: bool = False,
    seed_notes: list[tuple[str, str]] = (),
) -> str:
    """The whole plan: experiment settings, then one block per run. ``concurrency``: what local mode chose;
    ``seed_notes``: (label, text) lines after the seeds, from the verdict's side (what stands in for unmeasured seed
    noise, or a warning that nothing does)."""
    notes = list(seed_notes)
    shared = shared_seeds(plan)
    if shared:
        notes.append(("warning", shared))
    es, ev = experiment.early_stopping, plan.evaluation
    compared = (
        "each run's final evaluation"
        if ev.selection_fraction is None
        else f"each run's best evaluation, chosen on {ev.selection_fraction:.0%} of the val documents "
        "and scored on the rest"
    )
    head = [
        f"experiment   {experiment.name}: {len(plan.runs)} run(s)"
        + (f", control {experiment.control}" if experiment.control else ""),
        f"seeds        {seeds_line(experiment, plan)}",
        *(f"{label:<13}{text}" for label, text in notes),
        f"lr search    {search_line(experiment, plan)}",
        f"evaluation   every run scored on the same val tokens: windows of {ev.context} tokens every {ev.stride} "
        f"(at least {ev.context - ev.stride} tokens of "
        f"context){'' if ev.max_documents is None else f', first {ev.max_documents} documents'}; compared: {compared}",
        f"storage      {experiment.storage.path}/{experiment.name}"
        + (f" (endpoint {experiment.storage.endpoint_url})" if experiment.storage.endpoint_url else ""),
        "early stop   "
        + (
            f"val loss > best + {es.min_delta} for {es.patience} eval(s) in a row, after {es.grace_evals} eval(s) of "
            "grace"
            if es.enabled
            else "off"
        ),
        f"concurrency  {concurrency_line(experiment, plan, local, concurrency)}",
        "tracking     TensorBoard event files in each run's folder"
        + (f"; MLflow at {experiment.tracking.mlflow_uri}" if experiment.tracking.mlflow_uri else ""),
        "",
    ]
    return "\n".join(head) + "\n\n".join(describe_run(run) for run in plan.runs)
