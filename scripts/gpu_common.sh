# The environment of every scripts/gpu_*.sh on a lent GPU machine (sourced; the repository root is the working
# directory): strict pipes, $OUT (the folder that comes back), $LOGS (a scratch folder), unbuffered Python, WaGI
# importable from the checkout with its CUDA ops (wagi/ops), and one extension build cache.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
LOGS=$(mktemp -d)
export PYTHONUNBUFFERED=1
[ -e wagi/ops ] || ln -s ../ops wagi/ops
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCH_EXTENSIONS_DIR=$PWD/.ext_cache
