#!/usr/bin/env bash
# Every GPU figure of docs/BENCHMARKS.md in one command, on a machine with one CUDA GPU:
#   bash bench/gpu.sh 2>&1 | tee gpu-bench.txt
#   bash bench/gpu.sh step sweep      # some sections only: step, sweep, ckpt
# GPT-2 124M shapes with random weights (no download). Each switch is measured on and off.
set -euo pipefail
cd "$(dirname "$0")/.."
sections="${*:-step sweep ckpt}"
step="python -m bench.step_throughput --device cuda --shape gpt2 --rounds 5 --steps 20"
if [[ $sections == *step* ]]; then
    echo "== full fine-tune, block 1024, batch 16: the >= 35% MFU target"
    $step --method full --block 1024 --batch 16 --precision bf16
    $step --method full --block 1024 --batch 16 --precision bf16 --compile  # 13.2% uncompiled on an H200
    echo "== the seed's block 128, batch 16: best configuration, then each switch off"
    $step --method both --block 128 --batch 16 --precision bf16 --compile
    $step --method both --block 128 --batch 16 --precision bf16
    $step --method both --block 128 --batch 16 --precision fp32
    $step --method both --block 128 --batch 16 --precision bf16 --attention eager
    $step --method both --block 128 --batch 16 --precision bf16 --no-fused
fi
if [[ $sections == *sweep* ]]; then
    # one seed per option (GPT-2 shapes, random init): the figures are how runs share the GPU and what
    # the start-up levers do there, not the verdict
    echo "== five best.yaml options sharing the GPU: as launched, with every start-up lever off, one after another"
    python -m bench.sweep_time --spec specs/best.yaml --only current --only lora_capacity --only lr_schedule \
        --only long_context --only full_finetune --set control_seeds=1 --set option_seeds=1 \
        --set model.init=random --set model.tokenizer=tiny-gpt2 --set compute.precision=bf16 \
        --set run.steps=300 --set run.eval_every=100 --set run.checkpoint_every=100
fi
if [[ $sections == *ckpt* ]]; then
    echo "== checkpoint stall per checkpoint, GPT-2 124M full fine-tune to a local SeaweedFS: synchronous vs asynchronous"
    python -m bench.checkpoint_stall --device cuda
fi
