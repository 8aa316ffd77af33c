#!/usr/bin/env bash
# Every measurement of issue 34 in one device call, most important first, each under a cap and all under one deadline,
# each figure printed as soon as it is measured (a cut-off run keeps what finished). On the device, after
# `bash bench/gpu_bundle.sh` here (the carry .gpu/):
#   device run, carry [".gpu"], timeout_s 600:  OUT=$OUT bash bench/gpu_run.sh
#   a second call for what the deadline skipped:  OUT=$OUT bash bench/gpu_run.sh levers step
# Rehearsal on a CPU (tiny shapes, a few steps; the bundle for this machine's Python, a venv with only what the device
# image has): PYV=3.11 DEST=/tmp/gpu-cpu bash bench/gpu_bundle.sh
#   DEV=cpu CAPX=4 DEADLINE=3000 CARRY=/tmp/gpu-cpu PY=/tmp/devlike/bin/python OUT=/tmp/gpu-out bash bench/gpu_run.sh
# Sections: full (block 1024 full fine-tune: eager with its profile, then compiled with the chunked loss and its
# profile), lora (the seed's shape: eager, then CUDA graphs, each profiled), five (best.yaml's five options sharing the
# GPU, one after another, and as five HF Trainer runs one after another), levers (each remaining lever alone), step
# (bench.step_throughput: ours against a bare loop and HF Trainer), tests (tests/test_gpu.py).
set -uo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
DEV=${DEV:-cuda}; PY=${PY:-$(command -v python3)}; DEADLINE=${DEADLINE:-560}; CARRY=${CARRY:-.gpu}
CAPX=${CAPX:-1}  # every cap times this: a rehearsal on 2 CPU cores compiles far slower than the device
OUT=${OUT:?set OUT to the folder whose files come back}; T=${T:-/tmp/gpurun}
sections=${*:-full lora five levers step tests}
mkdir -p "$T/bin" "$OUT"
start=$(date +%s); el() { echo "[+$(( $(date +%s) - start ))s] $*"; }
exec > >(tee -a "$OUT/log.txt") 2>&1

# 1) what the image lacks, from the carry; `python` is the image's Python with it (Ray starts workers with it)
rm -rf "$T/site" && tar -C "$T" -xJf "$CARRY/site.tar.xz"
printf '#!/bin/sh\nexec %s "$@"\n' "$PY" > "$T/bin/python"; chmod +x "$T/bin/python"
export PATH=$T/bin:$PATH PYTHONPATH=$T/site:$PWD
el "unpacked $(head -1 "$CARRY/site.txt") bundle"
{ [[ $DEV == cuda ]] && nvidia-smi; nproc; free -g; python -c "import sys, torch, transformers, peft, ray, pydantic, \
boto3; print(sys.version); print('torch', torch.__version__, torch.cuda.is_available(), 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'ray', ray.__version__, 'pydantic', pydantic.__version__)"
python -c "import liger_kernel, triton; print('liger-kernel', liger_kernel.__name__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/env.txt"

# sec CAP TITLE COMMAND...: run under min(CAP, the time to the deadline), or say it was skipped
capped() { local cap=$(( $1 * CAPX )) left=$(( DEADLINE - ($(date +%s) - start) ))
    echo $(( cap < left ? cap : left )); }
sec() { local cap; cap=$(capped "$1"); local title=$2; shift 2
    (( cap < 20 )) && { el "== $title: SKIPPED, no time left"; return; }
    el "== $title (cap ${cap}s)"; timeout -k 10 "$cap" "$@"; el "rc=$?"; }
# the runs' folders (histories, profiles' tables and traces; no checkpoints) as one file per section
keep() { [[ -d $T/$1 ]] || return 0; tar -C "$T" --exclude='step_*' -czf "$OUT/$1.tgz" "$1"
    (( $(stat -c %s "$OUT/$1.tgz") > 15000000 )) && tar -C "$T" --exclude='step_*' --exclude='*.json.gz' \
        -czf "$OUT/$1.tgz" "$1" && el "$1.tgz: traces left out (over 15 MB)"; }

if [[ $DEV == cuda ]]; then
    shape=(); steps=(); short=(--set run.steps=200 --set run.eval_every=100 --set run.checkpoint_every=100)
    step=(--shape gpt2 --precision bf16 --rounds 3 --steps 20); long=1024
    liger=(--only full_liger --only full_compiled_liger)
else  # the rehearsal: the tiny preset, a few steps, every profile at step 3
    shape=(--set model.name=tiny-gpt2 --set data.block_size=128 --set resources.gpus_per_worker=0
        --set resources.cpus_per_worker=1 --set compute.precision=fp32)
    steps=(--set run.steps=6 --set run.eval_every=2 --set run.checkpoint_every=6 --set data.batch_size=8
        --set compute.profile.start_step=3 --set compute.profile.steps=1)
    short=(--set run.steps=20 --set run.eval_every=10 --set run.checkpoint_every=20 --set model.name=tiny-gpt2)
    step=(--shape tiny --precision fp32 --rounds 1 --steps 2 --warmup 1); long=128
    liger=()  # Triton kernels: a GPU only (the spec refuses it without one)
fi
# bench.mfu stops its sweep 45 s before the cap, to print the table of the runs that finished a window
mfu() { local name=$1 nominal=$2 cap; cap=$(capped "$2"); shift 2
    sec "$nominal" "MFU through the sweep: $name" python -m bench.mfu --storage "$T/$name" --budget $(( cap - 45 )) \
        "${shape[@]}" "${steps[@]}" "$@"; keep "$name"; }

for s in $sections; do case $s in
full) mfu full 180 --only full_eager --only full_compiled_chunked ;;
lora) mfu lora 150 --only lora_eager --only lora_graphs ;;
five)
    # one seed per option, 200 steps (§12 ran 300): how five runs share one GPU against one after another
    five=(--spec specs/best.yaml --only current --only lora_capacity --only lr_schedule --only long_context
        --only full_finetune --set control_seeds=1 --set option_seeds=1 --set model.init=random
        --set model.tokenizer=tiny-gpt2 "${short[@]}")
    [[ $DEV == cuda ]] && five+=(--set compute.precision=bf16)
    sec 240 "five best.yaml options: sharing the GPU, then one after another" \
        python -m bench.sweep_time --sweeps "as launched,one by one" "${five[@]}"
    sec 150 "the same five as HF Trainer runs, one after another" python -m bench.hf_sweep "${five[@]}" ;;
levers) mfu levers 330 --only full_chunked "${liger[@]:0:2}" --only full_compiled --only lora_compiled \
    "${liger[@]:2}" --only lora_graphs_chunked ;;
step)
    bench=(python -m bench.step_throughput --device "$DEV" "${step[@]}")
    sec 120 "step bench, block $long full fine-tune, compiled" "${bench[@]}" --method full --block $long --compile
    sec 90 "step bench, block 128 LoRA and full, compiled" "${bench[@]}" --method both --block 128 --compile ;;
tests) sec 120 "tests/test_gpu.py" python -m pytest -q -p no:cacheprovider -o addopts= tests/test_gpu.py ;;
*) el "unknown section $s" ;;
esac; done
el done
