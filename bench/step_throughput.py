"""Step throughput: our job's training step vs a bare PyTorch loop vs Hugging Face Trainer (+ peft).

Same model shape, batch, block and step count for all three, in one process,
alternating round by round after a warm-up, so machine noise hits all of them.
Prints tokens/s per loop (median over rounds) and the ratios measured in this run.

    python -m bench.step_throughput                                   # CPU, tiny GPT-2, LoRA and full
    python -m bench.step_throughput --device cuda --shape gpt2 --precision bf16 --block 1024 --batch 16
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

from contract.presets import config_dict
from contract.spec import LoraSpec
from jobs import perf
from jobs.data import BatchOrder
from jobs.model import lora_config
from jobs.schedule import lr_at
from jobs.train import train_step

SHAPES = {"tiny": "tiny-gpt2", "gpt2": "gpt2"}


def build(shape: str, method: str, attention: str) -> torch.nn.Module:
    config = config_dict(SHAPES[shape])
    model_type = config.pop("model_type")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config), attn_implementation=attention)
    if method == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(model, LoraSpec(rank=16, alpha=32.0)))
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(model, blocks, args, device):
    """The loop body of jobs.train: LR from the schedule, the batch order, train_step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda" and args.fused)
    order = BatchOrder(len(blocks), args.batch, seed=0)
    step = 0

    def run(n: int) -> None:
        nonlocal step
        losses = []
        for _ in range(n):
            lr = lr_at(step, lr=1e-4, total_steps=10**9, kind="constant")
            x = blocks[order.indices(step)].to(device, non_blocking=True)
            loss, _ = train_step(model, optimizer, [x], lr, 1.0, args.precision == "bf16")
            losses.append(loss)
            step += 1
        torch.stack(losses).tolist()  # the loop's one sync point per evaluation window

    return run


def bare(model, blocks, args, device):
    """nanoGPT-style: forward, backward, clip, AdamW, nothing else."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda" and args.fused)
    position = 0

    def run(n: int) -> None:
        nonlocal position
        for _ in range(n):
            start = position % (len(blocks) - args.batch)
            x = blocks[start : start + args.batch].to(device, non_blocking=True)
            position += args.batch
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync(device)

    return run


class _Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def hf_trainer(model, blocks, args, device):
    """What users would otherwise run: transformers.Trainer on the (peft) model."""
    output = tempfile.mkdtemp(prefix="hf-bench-")

    def run(n: int) -> None:
        training = TrainingArguments(
            output_dir=output,
            max_steps=n,
            per_device_train_batch_size=args.batch,
            learning_rate=1e-4,
            max_grad_norm=1.0,
            lr_scheduler_type="constant",
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=device.type == "cpu",
            bf16=args.precision == "bf16",
            seed=0,
        )
        Trainer(model=model, args=training, train_dataset=_Blocks(blocks)).train()  # prints its own runtime line
        sync(device)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="tiny", choices=list(SHAPES))
    parser.add_argument("--method", default="both", choices=["lora", "full", "both"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per loop per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--fused", action=argparse.BooleanOptionalAction, default=True, help="fused AdamW on GPU (--no-fused: foreach)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {args.threads} threads"
    )
    print(f"machine: {platform.node()} | {name} | torch {torch.__version__} | {time.strftime('%Y-%m-%d')}")
    print(
        f"shape {args.shape}, batch {args.batch}, block {args.block}, {args.steps} steps x {args.rounds} rounds, "
        f"{args.precision}, {args.attention}"
        f"{', compiled' if args.compile else ''}{'' if args.fused else ', unfused AdamW'}"
    )
    vocab = config_dict(SHAPES[args.shape])["vocab_size"]
    blocks = torch.randint(0, vocab, (max(256, 4 * args.batch), args.block), generator=torch.Generator().manual_seed(0))
    tokens = args.batch * args.block * args.steps
    peak = perf.peak_flops(device, args.precision)

    for method in ["lora", "full"] if args.method == "both" else [args.method]:
        base = build(args.shape, method, args.attention)
        loops = {}
        for label, make in (("ours", ours), ("bare", bare), ("hf_trainer", hf_trainer)):
            model = copy.deepcopy(base).to(device)
            run_model = torch.compile(model) if args.compile and label != "hf_trainer" else model
            loops[label] = (make(run_model, blocks, args, device), model)
        for run, _ in loops.values():
            run(args.warmup)
        speeds: dict[str, list[float]] = {label: [] for label in loops}
        for _ in range(args.rounds):
            for label, (run, _) in loops.items():
                start = time.perf_counter()
                run(args.steps)
                speeds[label].append(tokens / (time.perf_counter() - start))
        median = {label: statistics.median(v) for label, v in speeds.items()}
        fpt = perf.flops_per_token(loops["bare"][1], args.block)
        print(f"\n[{method}] tokens/s (median of {args.rounds} rounds)")
        for label, value in median.items():
            mfu = f"  MFU {value * fpt / peak:.1%}" if peak else ""
            print(f"  {label:<11} {value:>12,.0f}{mfu}   rounds: {', '.join(f'{v:,.0f}' for v in speeds[label])}")
        # Ratios per round (the loops ran back to back), then their median: noise that hits a
        # whole round cancels out.
        for a, b in (("ours", "bare"), ("ours", "hf_trainer"), ("hf_trainer", "bare")):
            ratios = [x / y for x, y in zip(speeds[a], speeds[b])]
            pair = f"{a}/{b}"
            print(
                f"  ratio {pair:<22} {statistics.median(ratios):.3f}   (per round: "
                f"{', '.join(f'{r:.2f}' for r in ratios)})"
            )


if __name__ == "__main__":
    main()
