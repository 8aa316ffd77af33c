"""The training recipe that runs on every Ray Train worker: set up, then one flat loop.

``train_loop`` is the entry point: validate the job, set up (data, model, optimizer,
micro-batch), then loop. Per step: set the LR, forward and backward over the
micro-batches, clip, update. Metrics stay on the device between evaluations (no
per-step CPU-GPU sync), and Ray hears about progress only at evaluations, since each
``ray.train.report()`` is a barrier across workers. Step 0 is evaluated before any
training, so every run's curve starts at the same point.

What the worker has to say (its data, a resume, a smaller micro-batch) goes to the
driver as ``notes`` with its next report, never to stdout: the driver prints it as the
run's own line, the same in a terminal, a pipe or ``ray job logs``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointUploadMode

from contract.layout import checkpoint_in_run, step_folder
from contract.report import Report, Timers
from contract.spec import JobConfig, TrainSpec
from jobs import checkpoint as ckpt
from jobs import data as data_lib
from jobs import evaluate as eval_lib
from jobs import memory, perf
from jobs.loss import LMWithLoss
from jobs.model import load_model, load_tokenizer
from jobs.profile import DATA, OPTIMIZER, StepProfiler
from jobs.schedule import lr_at


@dataclass
class Setup:
    """Everything the loop reads and never changes."""

    job: JobConfig
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module  # DDP-wrapped and compiled as the spec says
    optimizer: torch.optim.Optimizer
    tokenizer: Any
    data: data_lib.Dataset
    evalset: eval_lib.EvalSet
    order: data_lib.BatchOrder
    start: int  # the first step to train (0, or the resumed checkpoint's step)
    micro: int  # sequences per forward/backward on this worker
    memory_note: str | None  # set when the micro-batch had to shrink
    entered: float  # when this worker process started the job
    notes: list[str] = field(default_factory=list)  # rank 0's messages for the driver, sent with the next report
    # the report saved with the checkpoint it resumed from, sent with the next report: the driver keeps that
    # evaluation in the run's history even if it died before it could record it
    restored: Report | None = None
    # when the memory probe's try was the first step's whole forward and backward (fit_micro_batch): that
    # step's loss, its gradients left in place, and the seconds they took (the first window's training time)
    first_loss: torch.Tensor | None = None
    first_compute_s: float = 0.0

    @property
    def spec(self) -> TrainSpec:
        return self.job.spec

    def log(self, message: str) -> None:
        if self.rank == 0:
            self.notes.append(message)


@dataclass
class Window:
    """What the loop carries from one evaluation to the next."""

    start_step: int
    tick: float = field(default_factory=time.perf_counter)
    losses: list[torch.Tensor] = field(default_factory=list)
    norms: list[torch.Tensor] = field(default_factory=list)


Persist = Callable[[ray.train.Checkpoint, str], ray.train.Checkpoint]


def train_loop(config: dict[str, Any], *, persist: Persist | None) -> None:
    """Ray Train per-worker entry point: train ``config`` (a JobConfig dict) to its last step.

    ``persist(checkpoint, dir_name)`` uploads a written checkpoint folder into the run's
    storage; the driver passes Ray Train's own upload. None writes no checkpoints: Ray
    Train's local mode (``num_workers=0``, :func:`train_in_process`) has no storage to upload to.
    """
    entered = time.time()
    job = JobConfig.model_validate(config)
    setup = _setup(job, entered)
    _train(setup, persist)


def train_in_process(job: dict[str, Any]) -> Report:
    """Train one run (a JobConfig dict, as a trial receives it) here, through this loop, and return its last report.

    Ray Train's local mode runs the loop in this process with the calls it makes (context,
    report, get_checkpoint) answered locally and no Ray started; it has no storage, so the loop
    writes no checkpoints. A Ray worker runs with OMP_NUM_THREADS set to its whole CPUs, so this
    runs with as many torch threads: the same kernels, the same losses as the run in a sweep.
    """
    import logging

    from ray.train import RunConfig, ScalingConfig

    spec = JobConfig.model_validate(job).spec
    torch.set_num_threads(max(1, math.floor(spec.resources.cpus_per_worker)))
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # local mode logs every report at INFO
    trainer = ray.train.torch.TorchTrainer(
        functools.partial(train_loop, persist=None),
        train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=0),
        run_config=RunConfig(name=job["run_name"]),
    )
    return Report.from_result(trainer.fit().metrics)


# ----------------------------------------------------------------------- setup


def _setup(job: JobConfig, entered: float) -> Setup:
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(job.spec.run.seed)
    random.seed(job.spec.run.seed)
    notes: list[str] = []
    levers = job.spec.levers()
    if levers.compile or levers.loss != "model" or levers.memory_share:  # say what runs other than the plain step
        notes.append("compute: " + "; ".join(levers.describe()))
    tokenizer = load_tokenizer(job.spec, job.storage)
    data, evalset = _setup_data(job, tokenizer, notes)
    model, optimizer, start, restored = _setup_model_and_optimizer(job, device, notes)
    order = data_lib.BatchOrder(len(data.train), job.spec.data.batch_size, job.spec.run.seed, rank, world)
    setup = Setup(
        job,
        rank,
        world,
        device,
        model,
        optimizer,
        tokenizer,
        data,
        evalset,
        order,
        start,
        job.spec.micro_batch,
        None,
        entered,
        notes if rank == 0 else [],
        restored if rank == 0 else None,
    )
    _setup_micro_batch(setup)
    return setup


def _setup_data(job: JobConfig, tokenizer, notes: list[str]) -> tuple[data_lib.Dataset, eval_lib.EvalSet]:
    data = data_lib.load(job.spec.data, job.storage, tokenizer)
    evalset = eval_lib.eval_set(data.val_docs, job.evaluation)
    p = job.evaluation
    notes.append(
        f"data: {data.stats.describe()}; evaluation scores {evalset.eval_tokens:,} tokens of "
        f"{evalset.n_docs} val documents with context {p.context}, stride {p.stride}"
    )
    return data, evalset


def _setup_model_and_optimizer(job: JobConfig, device: torch.device, notes: list[str]):
    """Model, AdamW, the start step and the resumed checkpoint's report: from the newest complete checkpoint if
    there is one."""
    latest = ray.train.get_checkpoint()
    if latest is not None:

        def skipped(err: Exception) -> None:
            notes.append(f"not resuming from an incomplete checkpoint: {err}")

        with ckpt.newest_complete(latest, skipped) as directory:
            if directory is not None:
                model, optimizer = _build(job, device, directory)
                start = ckpt.restore_state(directory, optimizer)
                notes.append(f"resumed from the checkpoint at step {start}")
                return model, optimizer, start, ckpt.read_report(directory)
        notes.append("no complete checkpoint found; starting from step 0")
    return (*_build(job, device), 0, None)


def _build(job: JobConfig, device: torch.device, checkpoint_dir: str | None = None):
    """The model on its device (with the LM head's loss the spec chooses, DDP-wrapped when there are several workers,
    compiled with its loss if the levers say so) and its AdamW."""
    spec = job.spec
    levers = spec.levers()
    if levers.loss == "liger" and device.type != "cuda":
        raise ValueError(f"compute.loss: 'liger' runs on a GPU only, and this worker's device is {device}")
    model = load_model(spec, job.storage, checkpoint_dir=checkpoint_dir)
    if levers.loss != "model":
        model = LMWithLoss(model, levers.loss)
    model = ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=spec.optim.lr,
        betas=spec.optim.betas,
        weight_decay=spec.optim.weight_decay,
        fused=device.type == "cuda",  # one kernel for all parameters on GPU
    )
    return (torch.compile(model, mode=levers.compile_mode) if levers.compile else model), optimizer


def _setup_micro_batch(s: Setup) -> None:
    """Shrink the micro-batch until one step of it fits on every worker (jobs.memory), in the share of the GPU's
    memory the run may use: the process's allocator is capped at it, so a run sharing a GPU can neither crowd the
    others out nor be crowded out later."""
    share = s.spec.levers().memory_share
    if share is not None and s.device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(share, s.device)
    x = s.data.train[s.order.indices(s.start)].to(s.device)
    fitted, tried, first = fit_micro_batch(
        s.model, s.optimizer, x, s.micro, s.world, s.spec.compute.precision == "bf16"
    )
    if first is not None:
        s.first_loss, s.first_compute_s = first
    s.micro, s.memory_note = fitted, memory.fallback_note(tried, fitted, s.start)
    if s.memory_note:
        s.log(s.memory_note)


def fit_micro_batch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, micro: int, world: int, bf16: bool
) -> tuple[int, list[int], tuple[torch.Tensor, float] | None]:
    """The micro-batch that fits, from ``micro`` down, tried on ``x`` (this worker's share of the first step's
    batch), the sizes that did not (jobs.memory.fit_micro_batch), and, when the try was the first step's
    forward and backward, its loss and the seconds they took (else None).

    Each try is one forward and backward (no gradient communication) and, on a fresh
    optimizer, the allocation of its state by a zero-lr step that is then undone: the
    peak of a real step. The model and the optimizer are left as they were.

    A single worker whose first try is its whole share in one micro-batch has just run the
    first step's forward and backward: when it fits, its gradients stay in place and its
    dropout masks stay drawn, and the first step uses them (``train_step(computed=...)``),
    so the probe costs no step of its own. Otherwise the random number generators are
    restored too: a resumed run must draw the same dropout masks as an unbroken one.
    """
    fresh = not optimizer.state
    rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if x.device.type == "cuda" else None)
    kept: tuple[torch.Tensor, float] | None = None

    def try_step(m: int) -> None:
        nonlocal kept
        try:
            t0 = time.perf_counter()
            with _no_sync(model):
                loss = _forward(model, x[:m], bf16)
                loss.backward()
            seconds = time.perf_counter() - t0
            if fresh:
                _set_lr(optimizer, 0.0)
                optimizer.step()  # reads the gradients, leaves them as they are
            if world == 1 and m == len(x):  # a copy: under CUDA graphs the loss is a buffer the next replay reuses
                kept = loss.detach().clone(), seconds
        finally:  # what a failed try allocated goes too
            if fresh:
                optimizer.state.clear()
            if kept is None:
                optimizer.zero_grad(set_to_none=True)

    try:
        fitted, tried = memory.fit_micro_batch(try_step, micro, len(x), world, x.device)
    finally:
        if kept is None:
            torch.set_rng_state(rng[0])
            if rng[1] is not None:
                torch.cuda.set_rng_state_all(rng[1])
    return fitted, tried, kept


# ------------------------------------------------------------------- one step


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under torch.compile, DDP and loss wrappers (what save_pretrained needs)."""
    model = getattr(model, "_orig_mod", model)
    model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return model.lm if isinstance(model, LMWithLoss) else model


def _no_sync(model: torch.nn.Module):
    """DDP's no_sync (no gradient all-reduce on this backward), or nothing without DDP."""
    ddp = getattr(model, "_orig_mod", model)
    return ddp.no_sync() if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
        # No KV cache: nothing is decoded here, and building one costs ~5% of a step.
        return model(input_ids=x, labels=x, use_cache=False).loss


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[torch.Tensor],
    lr: float,
    max_norm: float,
    bf16: bool = False,
    computed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over this worker's share of the batch, as ``micro_batches``.

    Every micro-batch has the same number of tokens, so scaling each loss by
    1/len(micro_batches) accumulates exactly this worker's mean, and DDP's average
    across equal shares is the mean over the whole batch: the same step for any
    split into workers and micro-batches. Gradients are all-reduced on the last
    micro-batch only. Returns (mean loss, pre-clip gradient norm), left on the device.
    ``computed``: the loss of this step's forward and backward, already run by the memory
    probe (:func:`fit_micro_batch`), whose gradients are in place; the step only updates.
    """
    _set_lr(optimizer, lr)
    mean = computed
    if mean is None:
        total = torch.zeros((), device=micro_batches[0].device)
        for i, x in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last else _no_sync(model):
                loss = _forward(model, x, bf16)
                (loss / len(micro_batches)).backward()
            total += loss.detach()
        mean = total / len(micro_batches)
    with torch.profiler.record_function(OPTIMIZER):
        # no error_if_nonfinite: that check reads the norm on the host, a sync every step; a non-finite loss is
        # found at the next evaluation instead (_window_metrics)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return mean, norm


def _batch(s: Setup, step: int) -> torch.Tensor:
    """This worker's share of step ``step``'s batch, on its device. On a GPU through pinned memory, so the copy is
    asynchronous: from pageable memory CUDA first waits for the GPU's queue to drain, a host sync every step."""
    with torch.profiler.record_function(DATA):
        x = s.data.train[s.order.indices(step)]
        return (x.pin_memory() if s.device.type == "cuda" else x).to(s.device, non_blocking=True)


# ----------------------------------------------------------------------- loop


def _train(s: Setup, persist: Persist | None) -> None:
    spec, run = s.spec, s.spec.run
    sched = spec.optim.schedule
    max_norm = spec.optim.grad_clip or math.inf
    bf16 = spec.compute.precision == "bf16"
    checkpointer = ckpt.Checkpointer(_unwrap(s.model), s.job, persist, s.tokenizer if spec.method == "full" else None)
    first_step_at = time.time() - s.first_compute_s  # the first step began with the probe's try when it was one
    timers = Timers(setup=first_step_at - s.entered)  # worker start to first step: data, model, checkpoint, probe
    if s.start == 0:
        _report(s, Reported(0, first_step_at, None, _evaluate(s, bf16, timers)), timers, checkpointer, save=False)
    window = Window(s.start, tick=time.perf_counter() - s.first_compute_s)
    profiler = _profiler(s, persist)

    for step in range(s.start, run.steps):
        # 1) learning rate: a pure function of the step, so resume needs nothing else
        lr = lr_at(
            step,
            lr=spec.optim.lr,
            total_steps=run.steps,
            kind=sched.kind,
            warmup_steps=spec.warmup_steps,
            floor_ratio=sched.floor_ratio or 0.0,
        )

        # 2) forward and backward over the micro-batches, clip (measuring the pre-clip norm), update
        x = _batch(s, step)
        computed = s.first_loss if step == s.start else None
        loss, norm = train_step(s.model, s.optimizer, list(x.split(s.micro)), lr, max_norm, bf16, computed)
        profiler.step(step)
        window.losses.append(loss)
        window.norms.append(norm)

        done = step + 1
        if done % run.eval_every and done != run.steps:
            continue

        # 3) window statistics; .tolist() is the CPU-GPU sync point that makes the timing honest
        stats = _window_stats(s, window, done, lr, max_norm, timers)

        # 4) divergence ends the run cleanly: report it, keep the last good checkpoint, stop
        if stats.diverged_at is not None:
            s.log(f"diverged at step {stats.diverged_at}: non-finite training loss")
            _report(s, Reported(done, first_step_at, stats, None), timers, checkpointer, save=False)
            break

        # 5) evaluate; 6) report, with a checkpoint at checkpoint steps
        evaluation = _evaluate(s, bf16, timers)
        due = done % run.checkpoint_every == 0 or done == run.steps
        _report(s, Reported(done, first_step_at, stats, evaluation), timers, checkpointer, persist is not None and due)
        window = Window(done)
    profiler.close()
    checkpointer.wait()


def _profiler(s: Setup, persist: Persist | None) -> StepProfiler:
    """compute.profile's profiler: its folder goes into the run's storage beside the checkpoints (here, without
    storage: Ray Train's local mode)."""

    def publish(folder) -> str:
        if persist is None:
            return str(folder)
        return persist(ray.train.Checkpoint.from_directory(str(folder)), "profile").path

    vocab = _unwrap(s.model).config.vocab_size
    return StepProfiler(s.spec.compute.profile, s.start, s.rank, s.device, vocab, publish, s.log)


@dataclass
class WindowStats:
    """The training window's figures, named as the report names them."""

    train_loss: float | None  # None when not finite
    lr: float
    grad_norm: float | None
    clip_rate: float
    grad_norms: list[float | None]  # per step; None where not finite
    tokens_per_s: float
    mfu: float | None
    diverged_at: int | None  # the first step whose loss was not finite; None when every one was


@dataclass
class Evaluation:
    """One evaluation's figures, named as the report names them."""

    val_loss: float
    doc_nll: list[float]
    doc_tokens: list[int]


@dataclass
class Reported:
    """What one report says besides what every report carries: its step, and its window and evaluation (no window at
    step 0, no evaluation after a divergence)."""

    step: int
    first_step_at: float
    window: WindowStats | None
    evaluation: Evaluation | None


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _window_stats(s: Setup, window: Window, done: int, lr: float, max_norm: float, timers: Timers) -> WindowStats:
    losses, norms = torch.stack(window.losses), torch.stack(window.norms)
    finite = torch.isfinite(losses)
    stats = torch.stack([losses.mean(), norms.mean(), (norms > max_norm).float().mean(), (~finite).float().sum()])
    if s.world > 1:
        dist.all_reduce(stats)
        stats /= s.world
    mean_loss, mean_norm, clip_rate, non_finite = stats.tolist()
    elapsed = time.perf_counter() - window.tick
    timers.train += elapsed
    tokens_per_s = s.spec.data.batch_size * s.spec.data.block_size * (done - window.start_step) / elapsed
    diverged_at = None
    if non_finite > 0:
        bad = (~finite).nonzero()
        diverged_at = window.start_step + int(bad[0]) + 1 if len(bad) else done
    peak = perf.peak_flops(s.device, s.spec.compute.precision)
    return WindowStats(
        train_loss=_finite(mean_loss),
        lr=lr,
        grad_norm=_finite(mean_norm),
        clip_rate=clip_rate,
        grad_norms=[_finite(n) for n in norms.tolist()],  # the diagnosis reads their percentiles
        tokens_per_s=tokens_per_s,
        # MFU against the peak of the precision in use, per worker
        mfu=tokens_per_s * perf.flops_per_token(_unwrap(s.model), s.spec.data.block_size) / (peak * s.world)
        if peak
        else None,
        diverged_at=diverged_at,
    )


def _evaluate(s: Setup, bf16: bool, timers: Timers) -> Evaluation:
    """The protocol's per-document losses, and the val loss that early stopping and checkpoint ranking use."""
    t0 = time.perf_counter()
    batch = max(1, s.micro * s.spec.data.block_size // s.job.evaluation.context)  # about a micro-batch of tokens
    with torch.autocast(device_type=s.device.type, dtype=torch.bfloat16, enabled=bf16):
        doc_nll = eval_lib.per_document_nll(s.model, s.evalset, batch, s.device, s.rank, s.world)
    doc_nll = doc_nll.tolist()
    val_loss = s.job.evaluation.mean_nll(doc_nll, s.evalset.doc_tokens, "choose")
    timers.eval += time.perf_counter() - t0
    return Evaluation(val_loss, doc_nll, s.evalset.doc_tokens)


def _build_report(s: Setup, r: Reported, timers: Timers, checkpoint: str | None) -> Report:
    """The report of ``r``, with what every report carries."""
    window, evaluation = r.window, r.evaluation
    return Report(
        step=r.step,
        total_steps=s.spec.run.steps,
        **(asdict(evaluation) if evaluation else {}),
        eval_tokens=s.evalset.eval_tokens,
        checkpoint=checkpoint,
        **(asdict(window) if window else {}),
        diverged=window is not None and window.diverged_at is not None,
        micro_batch_size=s.micro,
        accumulation_steps=s.spec.worker_batch // s.micro,
        memory_fallback=s.memory_note,
        data_longer_than_block=s.data.stats.longer_than_block,
        # where this attempt runs and where it began: a restart (a lost worker or node) shows as a new pair
        # (Ray Train's local mode runs the loop outside Ray, where asking for the context would start Ray)
        node_id=ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
        resumed_from=s.start,
        first_step_at=r.first_step_at,
        timers=timers.model_copy(),
        reported_at=time.time(),
        notes=s.notes[:],
        restored=s.restored,
    )


def _report(s: Setup, r: Reported, timers: Timers, checkpointer: ckpt.Checkpointer, save: bool) -> None:
    """Report to Ray (a barrier across workers), handing rank 0's checkpoint to the background upload: the one place
    the report is a dict."""
    t0 = time.perf_counter()
    # where the checkpoint goes, relative to the run's folder: in Ray Train's run (named by the driver), by its step
    where = checkpoint_in_run(ray.train.get_context().get_experiment_name(), r.step) if save else None
    report = _build_report(s, r, timers, where)
    checkpoint, upload = None, None
    if save and s.rank == 0:  # the checkpoint keeps its evaluation, not the messages this report carries
        kept = report.model_copy(update={"notes": [], "restored": None})
        checkpoint, upload = checkpointer.prepare(s.optimizer, kept)
    timers.checkpoint += time.perf_counter() - t0
    s.notes.clear()
    s.restored = None
    t0 = time.perf_counter()
    ray.train.report(
        report.model_dump(),
        checkpoint=checkpoint,
        checkpoint_dir_name=step_folder(r.step) if save else None,
        checkpoint_upload_mode=CheckpointUploadMode.ASYNC,
        checkpoint_upload_fn=upload,
    )
    timers.report += time.perf_counter() - t0
