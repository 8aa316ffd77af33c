"""Checkpoint stall: how long training waits per checkpoint, synchronous against asynchronous.

A full fine-tune checkpoint of GPT-2 124M (weights and AdamW state, random init, no
download) goes to a local SeaweedFS S3 server. Synchronous is what a report with a
checkpoint did before: write the folder (jobs.checkpoint.save), then upload it
(pyarrow copy_files, as Ray Train's default upload does), with training waiting for
both. Asynchronous is what the job does now (jobs.checkpoint.Checkpointer): copy the
tensors to host memory while training waits, then write and upload in the background.
The figure that matters is the time training is blocked; the background time is printed
too, because the next checkpoint waits for it.

    python -m bench.checkpoint_stall                 # GPT-2 124M, 3 checkpoints each way
    python -m bench.checkpoint_stall --shape tiny    # the demo model, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import torch

from contract.report import Report
from contract.spec import JobConfig, StorageSpec
from contract.storage import filesystem
from devtools.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3
from jobs import checkpoint as ckpt
from jobs.model import load_model

SHAPES = {"gpt2": "gpt2", "tiny": "tiny-gpt2"}


def model_and_optimizer(job: JobConfig, device: torch.device):
    model = load_model(job.spec, job.storage).to(device)  # as the job builds it: random init, offline
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randint(0, model.config.vocab_size, (1, 64), device=device)
    model(input_ids=x, labels=x).loss.backward()
    optimizer.step()  # AdamW state exists, as in any checkpoint after step 1
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def upload(local: str, storage: StorageSpec, name: str) -> None:
    fs, root = filesystem(storage.path, storage)
    pafs.copy_files(local, f"{root}/{name}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="gpt2", choices=list(SHAPES))
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the model trains (cuda: the snapshot includes the copy to host memory)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} | {platform.machine()}, {os.cpu_count()} cores | torch {torch.__version__} | "
        f"{time.strftime('%Y-%m-%d')}"
    )
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    server = SeaweedS3(work / "s3")
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
    try:
        server.create_bucket("bench")
        storage = StorageSpec(path="s3://bench/ckpt", endpoint_url=server.endpoint)
        job = JobConfig.model_validate(
            {
                "experiment": "bench",
                "run_name": "full",
                "option": "full",
                "spec": {"method": "full", "lora": None, "model": {"name": SHAPES[args.shape], "init": "random"}},
                "storage": storage.model_dump(),
                "evaluation": {"context": 128, "stride": 64},
            }
        )
        model, optimizer = model_and_optimizer(job, torch.device(args.device))
        sync_blocked, async_blocked, background = [], [], []
        size = 0
        for i in range(args.checkpoints):
            report = Report(step=i, total_steps=job.spec.run.steps)  # what a checkpoint keeps of its evaluation
            # synchronous: write, then upload, while training waits
            start = time.perf_counter()
            local = tempfile.mkdtemp(prefix="sync-", dir=work)
            ckpt.save(local, model, optimizer, job, report)
            upload(local, storage, f"sync_{i}")
            sync_blocked.append(time.perf_counter() - start)
            size = sum(f.stat().st_size for f in Path(local).rglob("*") if f.is_file())
            shutil.rmtree(local)

            # asynchronous: snapshot to host memory while training waits; write and upload in the background
            start = time.perf_counter()
            snap = ckpt.snapshot(model, optimizer, i, adapter_only=False)
            async_blocked.append(time.perf_counter() - start)
            # what the upload thread then does, timed on its own: the next checkpoint waits for it
            start = time.perf_counter()
            local = tempfile.mkdtemp(prefix="async-", dir=work)
            ckpt.write(local, snap, model, job, report)
            upload(local, storage, f"async_{i}")
            shutil.rmtree(local)
            background.append(time.perf_counter() - start)
        print(f"checkpoint: {args.shape} on {args.device}, full fine-tune, {size / 1e9:.2f} GB (weights + AdamW state)")
        print(
            f"synchronous  blocked per checkpoint: median {statistics.median(sync_blocked):.2f} s  "
            f"({', '.join(f'{t:.2f}' for t in sync_blocked)})"
        )
        print(
            f"asynchronous blocked per checkpoint: median {statistics.median(async_blocked):.2f} s  "
            f"({', '.join(f'{t:.2f}' for t in async_blocked)})"
        )
        print(f"asynchronous write + upload in the background: median {statistics.median(background):.2f} s")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
