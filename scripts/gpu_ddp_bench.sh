#!/usr/bin/env bash
# DDP scaling of the encoder trainer: the same per-process batch on 1 and on 2 GPUs of one machine.
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
# No package index on the GPU machine: the scripts import wagi from the source tree (wagi.ops lives in ops/).
ARGS="--config configs/bench_ddp_256.yaml --steps ${STEPS:-60} --warmup 10 --set experiment.out_dir=/tmp/ddp_runs"
for n in 1 2; do
  echo "== $n process(es)"
  torchrun --standalone --nproc_per_node $n scripts/bench_ddp.py $ARGS 2>&1 | grep -E "DDP_BENCH|Error|error" | tee -a "$OUT/ddp_bench.log"
done
