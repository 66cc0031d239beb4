#!/usr/bin/env bash
# GAN training speed on the GPU: rosinality-equivalent full-width SWAGAN-128 (cm 1, 512-d W) and the demo
# config, both batch 32, R1 every 16, path length every 4, from scripts/train_generator.py --benchmark-steps.
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
# No package index on the GPU machine: the scripts import wagi from the source tree (wagi.ops lives in ops/).
COMMON="--set data.demo_images=4096 --set data.cache_file=null --benchmark-steps ${STEPS:-160}"
for amp in none bf16; do
  echo "== full width (rosinality-equivalent model), amp=$amp"
  python3 scripts/train_generator.py --config configs/demo_swagan.yaml $COMMON --set train.amp=$amp \
    --set generator.style_dim=512 --set generator.channel_max=null --set discriminator.channel_max=null \
    2>&1 | grep -E "BENCHMARK_JSON|rror" | tee -a "$OUT/gan_bench.log"
  echo "== demo config, amp=$amp"
  python3 scripts/train_generator.py --config configs/demo_swagan.yaml $COMMON --set train.amp=$amp \
    2>&1 | grep -E "BENCHMARK_JSON|rror" | tee -a "$OUT/gan_bench.log"
done
