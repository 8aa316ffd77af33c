"""The training loop that runs on every Ray Train worker: setup, then one flat loop.

Per step: set the LR, forward, backward, clip, update. Metrics stay on the device
between evaluations (no per-step CPU-GPU sync), and Ray is told about progress
only at evaluations, since each ``ray.train.report()`` is a barrier across workers.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from jobs import checkpoint as ckpt
from jobs import data as data_lib
from jobs import perf
from jobs.model import load_model, load_tokenizer
from jobs.schedule import lr_at
from orchestrator.spec import JobConfig, TrainSpec


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train per-worker entry point: train ``config`` (a JobConfig dict) to its last step."""
    entered = time.time()
    job = JobConfig.model_validate(config)
    spec = job.spec
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(spec.run.seed)
    random.seed(spec.run.seed)

    tokenizer = load_tokenizer(spec, job.storage)
    data = data_lib.load(spec.data, job.storage, tokenizer)
    if rank == 0:
        print(f"[{job.run_name}] data: {data.stats.describe()}")
    model, optimizer, start = _setup_model_and_optimizer(job, device)
    if rank == 0 and start:
        print(f"[{job.run_name}] resumed from the checkpoint at step {start}")

    _loop(job, model, optimizer, start, data, tokenizer, rank, world, device, entered)


def _setup_model_and_optimizer(job: JobConfig, device: torch.device):
    """Model, AdamW and the start step: from the newest complete checkpoint if there is one."""
    latest = ray.train.get_checkpoint()
    if latest is not None:
        with ckpt.newest_complete(latest, lambda err: print(f"[{job.run_name}] not resuming from an incomplete checkpoint: {err}")) as directory:
            if directory is not None:
                model, optimizer = _build(job, device, directory)
                return model, optimizer, ckpt.restore_state(directory, optimizer)
        print(f"[{job.run_name}] no complete checkpoint found; starting from step 0")
    return (*_build(job, device), 0)


def _build(job: JobConfig, device: torch.device, checkpoint_dir: str | None = None):
    """The model on its device (DDP-wrapped when there are several workers, compiled if the spec says so) and its AdamW."""
    spec = job.spec
    model = ray.train.torch.prepare_model(load_model(spec, job.storage, checkpoint_dir=checkpoint_dir))
    optimizer = _setup_optimizer(spec, model, device)
    return (torch.compile(model) if spec.compute.compile else model), optimizer


def _setup_optimizer(spec: TrainSpec, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=spec.optim.lr,
        betas=spec.optim.betas,
        weight_decay=spec.optim.weight_decay,
        fused=device.type == "cuda",  # one kernel for all parameters on GPU
    )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under torch.compile and DDP wrappers (what save_pretrained needs)."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], x: torch.Tensor, lr: float, max_norm: float, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch ``x``: set the LR, forward, backward, clip, update.

    Returns (loss, pre-clip gradient norm), both left on the device: no sync point.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
        # No KV cache: nothing is decoded here, and building one costs ~5% of a step.
        loss = model(input_ids=x, labels=x, use_cache=False).loss
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), norm


def _mean_across_workers(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values)
        values /= world
    return values


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: torch.Tensor, batch_size: int, max_batches: int | None, device: torch.device, rank: int = 0, world: int = 1) -> float:
    """Mean loss over the val blocks (the first ``max_batches`` batches), sharded across workers."""
    model.eval()
    starts = list(range(0, len(val), batch_size))[:max_batches]
    total = torch.zeros(2, device=device)
    for start in starts[rank::world]:
        x = val[start : start + batch_size].to(device)
        total[0] += model(input_ids=x, labels=x, use_cache=False).loss * len(x)
        total[1] += len(x)
    if world > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def _loop(job: JobConfig, model, optimizer, start: int, data: data_lib.Dataset, tokenizer, rank: int, world: int, device: torch.device, entered: float) -> None:
    spec = job.spec
    run, sched = spec.run, spec.optim.schedule
    order = data_lib.BatchOrder(len(data.train), spec.data.batch_size, run.seed, rank, world)
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = spec.optim.grad_clip or math.inf
    tokens_per_step = spec.data.batch_size * spec.data.block_size * world
    bf16 = spec.compute.precision == "bf16"
    peak = perf.peak_flops(device)
    flops_per_token = perf.flops_per_token(_unwrap(model), spec.data.block_size)
    timing = {"train": 0.0, "eval": 0.0, "checkpoint": 0.0, "report": 0.0}
    first_step_at = time.time()
    setup_s = first_step_at - entered  # worker start to first step: data, model, checkpoint
    losses, norms = [], []
    window_start, tick = start, time.perf_counter()
    model.train()

    for step in range(start, run.steps):
        # 1) learning rate: a pure function of the step, so resume needs nothing else
        lr = lr_at(step, lr=spec.optim.lr, total_steps=run.steps, kind=sched.kind, warmup_steps=spec.warmup_steps, floor_ratio=sched.floor_ratio)

        # 2) forward, backward, clip (measuring the pre-clip norm), update; results stay on device
        x = data.train[order.indices(step)].to(device, non_blocking=True)
        loss, norm = train_step(model, optimizer, params, x, lr, max_norm, bf16)
        losses.append(loss)
        norms.append(norm)

        done = step + 1
        if done % run.eval_every and done != run.steps:
            continue

        # 3) window statistics; .tolist() is the CPU-GPU sync point that makes the timing honest
        window = torch.stack([torch.stack(losses), torch.stack(norms)])
        finite = torch.isfinite(window[0])
        stats = _mean_across_workers(torch.stack([window[0].mean(), window[1].mean(), (window[1] > max_norm).float().mean(), (~finite).float().sum()]), world).tolist()
        train_time = time.perf_counter() - tick
        timing["train"] += train_time
        metrics: dict[str, Any] = {
            "step": done,
            "total_steps": run.steps,
            "train_loss": stats[0],
            "lr": lr,
            "grad_norm": stats[1],
            "clip_rate": stats[2],
            "tokens_per_s": tokens_per_step * (done - window_start) / train_time,
            "diverged": False,
            "data_longer_than_block": data.stats.longer_than_block,
            "data_train_tokens": data.stats.train_tokens,
            "time_setup_s": setup_s,
            "first_step_at": first_step_at,
        }
        if peak:  # MFU against the GPU's bf16 peak, per worker
            metrics["mfu"] = metrics["tokens_per_s"] * flops_per_token / (peak * world)

        # 4) divergence ends the run cleanly: report it, keep the last good checkpoint, stop
        if stats[3] > 0:
            first_bad = window_start + int((~finite).nonzero()[0]) + 1 if not finite.all() else done
            metrics.update(diverged=True, diverged_at=first_bad, val_loss=math.nan, perplexity=math.nan)
            if rank == 0:
                print(f"[{job.run_name}] diverged at step {first_bad}: non-finite training loss")
            ray.train.report(metrics)
            return

        # 5) evaluate
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            val_loss = evaluate(model, data.val, spec.data.batch_size, run.eval_batches, device, rank, world)
        timing["eval"] += time.perf_counter() - t0
        metrics.update(val_loss=val_loss, perplexity=math.exp(min(val_loss, 50.0)))
        metrics.update({f"time_{k}_s": v for k, v in timing.items()})

        # 6) report, with a checkpoint at checkpoint steps (rank 0 writes it; Ray uploads it)
        save_now = done % run.checkpoint_every == 0 or done == run.steps
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            t0 = time.perf_counter()
            if save_now and rank == 0:
                ckpt.save(tmp, _unwrap(model), optimizer, done, job, metrics, tokenizer if spec.method == "full" else None)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            timing["checkpoint"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics["reported_at"] = time.time()
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"step_{done:06d}" if save_now else None)
            timing["report"] += time.perf_counter() - t0

        losses, norms = [], []
        window_start, tick = done, time.perf_counter()
