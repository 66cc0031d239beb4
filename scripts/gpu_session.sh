#!/usr/bin/env bash
# One GPU session on a lent machine: install the package, build and check the CUDA ops, run the whole test
# suite on the GPU, then the benchmarks. Outputs go to $OUT (or ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# No package index on the GPU machine: make the source tree importable directly (wagi.ops lives in ops/).
[ -e wagi/ops ] || ln -s ../ops wagi/ops
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
STAGES=${STAGES:-ops,tests,bench}
if [[ $STAGES == *ops* ]]; then
  echo "== CUDA op tests"; time python3 -m pytest -q -x tests/test_ops_cuda.py 2>&1 | tee "$OUT/test_ops_cuda.log" | tail -15
fi
if [[ $STAGES == *bench* ]]; then
  echo "== benchmark"; python3 scripts/benchmark.py ${BENCH_ARGS:-} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" | tail -40
fi
if [[ $STAGES == *tests* ]]; then
  echo "== full test suite on the GPU machine"; python3 -m pytest -q tests 2>&1 | tee "$OUT/tests_gpu.log" | tail -15
fi
