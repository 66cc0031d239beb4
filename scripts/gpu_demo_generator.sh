#!/usr/bin/env bash
# Train the demo SWAGAN (configs/demo_swagan.yaml) in one time slice of a lent GPU machine and bring back
# what the next steps need under $OUT: the fp16 g_ema export, the full training state (split in 15 MiB
# parts: cat gan_state.part.* > latest.pt), the small run files, and the built CUDA ops.
# Resume in a later slice: put latest.pt back in runs/demo_swagan/checkpoints/ and run this again
# (the trainer is started with --resume auto).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
LOGS=$(mktemp -d)
export PYTHONUNBUFFERED=1
[ -e wagi/ops ] || ln -s ../ops wagi/ops
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCH_EXTENSIONS_DIR=$PWD/.ext_cache
CONFIG=${CONFIG:-configs/demo_swagan.yaml}
RUN=${RUN:-runs/demo_swagan}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
# Build the CUDA ops while the training set is being rendered (the trainer waits on the build lock).
( time python3 -m wagi.ops.compile_check ) > "$LOGS/ops_build.log" 2>&1 &
BUILD=$!
start=$(date +%s)
timeout -s INT "${GUARD_S:-585}" python3 scripts/train_generator.py --config "$CONFIG" --resume auto \
  --time-limit "${MINUTES:-8.5}" --no-progress ${EXTRA:-} > "$LOGS/train_generator.log" 2>&1
echo "train_generator exit $? after $(( $(date +%s) - start )) s"
wait $BUILD
tail -3 "$LOGS/ops_build.log"
tail -4 "$LOGS/train_generator.log"
tail -2 "$RUN/metrics.jsonl"
python3 scripts/train_generator.py --export "$OUT/swagan128_demo.pt" --checkpoint "$RUN/checkpoints/latest.pt"
split -b 15M "$RUN/checkpoints/latest.pt" "$OUT/gan_state.part."
cp "$LOGS"/*.log "$RUN"/
tar czf "$OUT/run_files.tgz" "$RUN/metrics.jsonl" "$RUN/config.yaml" "$RUN/samples" "$RUN"/*.log
[ -d .ext_cache ] && tar czf "$OUT/ext_cache.tgz" .ext_cache
ls -la "$OUT"
