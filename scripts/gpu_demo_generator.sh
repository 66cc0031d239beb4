#!/usr/bin/env bash
# Train the demo SWAGAN (configs/demo_swagan.yaml) in one time slice of a lent GPU machine and bring back
# what the next steps need under $OUT: the fp16 g_ema export, the full training state (split in 15 MiB
# parts: cat gan_state.part.* > latest.pt), the small run files, and the built CUDA ops.
# Resume in a later slice: put latest.pt back in runs/demo_swagan/checkpoints/ and run this again
# (the trainer is started with --resume auto).
# Optional: FD_JUDGE=1 measures FD-judge (scripts/fd_judge.py) of the exported generator (and of
# FD_REF=NAME=PATH too) at the end; JUDGE_ARGS="..." runs scripts/train_judge.py with those arguments on the
# same GPU while the generator trains (its --output should be under $OUT); EXT_CACHE=0 skips the ops tarball;
# FD_SNAPSHOTS=1 measures FD-judge of every step checkpoint written in this slice and brings the best g_ema
# back; STATE=0 leaves the full training state on the machine (for a next call on the same warm machine).
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
CONFIG=${CONFIG:-configs/demo_swagan.yaml}
RUN=${RUN:-runs/demo_swagan}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
# Build the CUDA ops while the training set is being rendered (the trainer waits on the build lock).
( time python3 -m wagi.ops.compile_check ) > "$LOGS/ops_build.log" 2>&1 &
BUILD=$!
if [ -n "${JUDGE_ARGS:-}" ]; then
  ( python3 scripts/train_judge.py $JUDGE_ARGS --no-progress > "$LOGS/train_judge.log" 2>&1;
    echo "train_judge exit $?" >> "$LOGS/train_judge.log" ) &
  JUDGE=$!
fi
start=$(date +%s)
MARK=$(mktemp); touch "$MARK"  # step checkpoints newer than this were written by this slice
timeout -s INT "${GUARD_S:-585}" python3 scripts/train_generator.py --config "$CONFIG" --resume auto \
  --time-limit "${MINUTES:-8.5}" --no-progress ${EXTRA:-} > "$LOGS/train_generator.log" 2>&1
echo "train_generator exit $? after $(( $(date +%s) - start )) s"
wait $BUILD
tail -3 "$LOGS/ops_build.log"
tail -4 "$LOGS/train_generator.log"
tail -2 "$RUN/metrics.jsonl"
python3 scripts/train_generator.py --export "$OUT/swagan128_demo.pt" --ckpt "$RUN/checkpoints/latest.pt"
if [ -n "${JUDGE:-}" ]; then wait "$JUDGE"; tail -25 "$LOGS/train_judge.log"; fi
if [ "${FD_JUDGE:-0}" = 1 ]; then
  python3 scripts/fd_judge.py --generator "$(basename "$RUN")=$OUT/swagan128_demo.pt" \
    ${FD_REF:+--generator "$FD_REF"} --json "$RUN/fd_judge.json" 2>&1 | tail -8
fi
if [ "${FD_SNAPSHOTS:-0}" = 1 ]; then
  # FD-judge of every kept step checkpoint of this slice (train.keep_checkpoints: 0, save_every as the
  # snapshot interval); the best one's g_ema comes back as $OUT/swagan128_best.pt.
  SNAP=$(mktemp -d); GENS=()
  for ck in $(find "$RUN/checkpoints" -name 'step_*.pt' -newer "$MARK" | sort); do
    name=$(basename "$ck" .pt)
    python3 scripts/train_generator.py --export "$SNAP/$name.pt" --ckpt "$ck" > /dev/null && GENS+=(--generator "$name=$SNAP/$name.pt")
  done
  python3 scripts/fd_judge.py "${GENS[@]}" ${FD_REF:+--generator "$FD_REF"} --json "$RUN/fd_snapshots.json" 2>&1 | grep FD-judge
  best=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['fd_judge']; r={k: v for k, v in r.items() if k.startswith('step_')}; print(min(r, key=r.get))" "$RUN/fd_snapshots.json")
  echo "best snapshot: $best"; cp "$SNAP/$best.pt" "$OUT/swagan128_best.pt"
fi
[ "${STATE:-1}" = 1 ] && split -b 15M "$RUN/checkpoints/latest.pt" "$OUT/gan_state.part."
cp "$LOGS"/*.log "$RUN"/
tar czf "$OUT/run_files.tgz" "$RUN/metrics.jsonl" "$RUN/config.yaml" "$RUN/samples" "$RUN"/*.log \
  $(ls "$RUN"/fd_judge.json "$RUN"/fd_snapshots.json 2>/dev/null)
[ "${EXT_CACHE:-1}" = 1 ] && [ -d .ext_cache ] && tar czf "$OUT/ext_cache.tgz" .ext_cache
ls -la "$OUT"
