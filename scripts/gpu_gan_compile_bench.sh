#!/usr/bin/env bash
# GAN step speed with torch.compile on the rosinality-equivalent full-width SWAGAN-128 (cm 1, 512-d W),
# batch 32, R1 every 16, path length every 4: compiled main passes with the pure-PyTorch ops (which
# compile can fuse), with the CUDA ops, and the eager baseline on the same machine.
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
python3 scripts/make_demo_dataset.py --cache runs/cache/demo_faces_128x4096.pt --n 4096 --workers 14
COMMON="--set data.demo_images=4096 --set data.cache_file=runs/cache/demo_faces_128x4096.pt --set train.batch_size=32
  --set generator.style_dim=512 --set generator.channel_max=null --set discriminator.channel_max=null
  --benchmark-steps ${STEPS:-160}"
bench() {  # label, impl, extra...
  local label=$1 impl=$2; shift 2
  echo "== $label"
  WAGI_OPS_IMPL=$impl timeout "${EACH_S:-200}" python3 scripts/train_generator.py --config configs/demo_swagan.yaml \
    $COMMON "$@" 2>&1 | grep -E "BENCHMARK_JSON|rror" | sed "s/^/$label /" | tee -a "$OUT/gan_compile_bench.log"
}
bench compile_ref ref --set train.compile=true
bench eager_cuda cuda
bench compile_cuda cuda --set train.compile=true
