"""What a sweep replaces: the runs of a spec as Hugging Face Trainer scripts, one after another.

Each run of the plan (the same ``--spec``, ``--only`` and ``--set`` as bench.sweep_time)
becomes one fresh Python process, as a user would start a script: it loads the same
model (peft LoRA or full), tokenizes the same data into the same blocks, and trains it
with ``transformers.Trainer`` for the same steps, batch, LR schedule, clipping and
precision, evaluating on the val documents and saving a checkpoint at the same steps.
Prints each run's wall time as it ends, then the whole.

    python -m bench.hf_sweep --spec specs/best.yaml --only current --set run.steps=300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from orchestrator.launch import gpus_here, localize
from orchestrator.spec import load

SCHEDULES = {"constant": "constant", "warmup_constant": "constant_with_warmup", "warmup_linear": "linear"}


def train_one(job: dict) -> None:
    """One run with transformers.Trainer (a JobConfig dict)."""
    import torch
    from transformers import Trainer, TrainingArguments

    from bench.step_throughput import _Blocks
    from contract.spec import JobConfig
    from jobs import data as data_lib
    from jobs.model import load_model, load_tokenizer

    config = JobConfig.model_validate(job)
    spec, storage = config.spec, config.storage
    data = data_lib.load(spec.data, storage, load_tokenizer(spec, storage))
    val = data_lib.pack(data.val_docs, spec.data.block_size)
    torch.manual_seed(spec.run.seed)
    model = load_model(spec, storage)
    sched = spec.optim.schedule
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-sweep-"),
        max_steps=spec.run.steps,
        per_device_train_batch_size=spec.data.batch_size,
        per_device_eval_batch_size=spec.data.batch_size,
        learning_rate=spec.optim.lr,
        weight_decay=spec.optim.weight_decay,
        adam_beta1=spec.optim.betas[0],
        adam_beta2=spec.optim.betas[1],
        max_grad_norm=spec.optim.grad_clip or 0.0,
        lr_scheduler_type=SCHEDULES[sched.kind],
        warmup_steps=spec.warmup_steps,
        eval_strategy="steps",
        eval_steps=spec.run.eval_every,
        save_strategy="steps",
        save_steps=spec.run.checkpoint_every,
        logging_steps=spec.run.eval_every,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=spec.compute.precision == "bf16",
        seed=spec.run.seed,
    )
    Trainer(model=model, args=args, train_dataset=_Blocks(data.train), eval_dataset=_Blocks(val)).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=None)
    parser.add_argument("--only", action="append")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: train this JobConfig JSON here
    args = parser.parse_args()
    if args.one:
        return train_one(json.loads(args.one))
    from orchestrator.sweep.trial import job_configs

    experiment, plan = load(args.spec, args.set, args.only)
    plan = localize(experiment, plan, gpus_here(), 1).plan
    start = time.perf_counter()
    for run, job in zip(plan.runs, job_configs(experiment, plan)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.hf_sweep", "--one", json.dumps(job)], check=True)
        print(f"HF Trainer {run.name:<28}{time.perf_counter() - t0:>8.1f} s", flush=True)
    print(f"{'HF Trainer, one by one':<28}{time.perf_counter() - start:>7.1f} s", flush=True)


if __name__ == "__main__":
    main()
