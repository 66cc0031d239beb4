#!/usr/bin/env bash
# The fast path's numbers in one call of a lent GPU (issue: G forward 1024² and full inversion, bf16, accuracy):
#   1. scripts/benchmark.py: generator 256² / 1024² (fp32 and PRECISION, with the top-15 kernel table of the
#      PRECISION forward), inversion and the fusion-stage training step;
#   2. accuracy on the bundled demo model: per-band L2 of the 500 demo test faces inverted in fp32 and in
#      PRECISION (scripts/eval_subbands.py --precision), same faces as docs/results.md;
#   3. the GPU tests (CUDA ops in every dtype, precision), which skip on the project's CPU machine.
# Everything lands in $OUT: bench.json, subbands_fp32.json, subbands_<PRECISION>.json, gpu_tests.log.
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
PRECISION=${PRECISION:-bf16}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
python3 -m wagi.ops.compile_check 2>&1 | tail -2
TEST=$(mktemp -d)/demo_test
python3 scripts/make_demo_dataset.py --output "$TEST" --n 500 --seed-offset 1001000 --workers 14 --labels 2>&1 | tail -1 &
python3 scripts/benchmark.py --only generator,inversion,train_step --sizes 256,1024 --precision "$PRECISION" \
  --profile 15 --json "$OUT/bench.json" 2>&1 | tail -60
wait
for p in fp32 "$PRECISION"; do
  python3 scripts/eval_subbands.py --gt "$TEST" --size 128 --levels 1 --device cuda --precision "$p" \
    --model wagi=pretrained/demo/wagi.pt --output "$TEST/../eval_$p" --no-progress 2>&1 | tail -8
  cp "$TEST/../eval_$p/results.json" "$OUT/subbands_$p.json"
done
python3 -m pytest -q tests/test_ops_cuda.py tests/test_precision.py tests/test_fastpath.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.log"
ls -la "$OUT"
