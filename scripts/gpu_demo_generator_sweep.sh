#!/usr/bin/env bash
# Several demo-generator configs side by side in one slice of a lent GPU, to compare them within one call (they
# share the card, so each runs slower than alone: docs/train_generator.md, "v7, v8").
#   CONFIGS="configs/demo_swagan_v6.yaml configs/demo_swagan_v7.yaml" MINUTES=7 bash scripts/gpu_demo_generator_sweep.sh
# Each run trains for MINUTES (--resume auto: a next call on the same warm machine continues it), then FD-judge
# of every step checkpoint written in this slice (one scripts/fd_judge.py call for all runs: the real faces'
# features are computed once) and each run's best g_ema comes back as $OUT/<run>_best.pt, with the runs' small
# files in $OUT/sweep_files.tgz. The full training states stay on the machine. FD_N: FD-judge samples (5000).
# ORACLE=PATH (a checkout of rosinality/stylegan2-pytorch, e.g. carried as runs/ext/rosinality) adds one run of
# rosinality's own training loop on our networks (scripts/dev/rosinality_train_oracle.py, ORACLE_ARGS for its
# options; default: configs/demo_swagan_v4.yaml from the bundled g_ema, as v4's first slice) beside the configs,
# for the same minutes, its snapshots measured with theirs: a check of our training loop.
# RAW_G=1 also measures each snapshot's raw generator (train_generator.py --export --network g); the best file
# that comes back is chosen among the g_ema snapshots only.
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
CONFIGS=${CONFIGS:?set CONFIGS to one or more GAN configs}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -m wagi.ops.compile_check > "$LOGS/ops.log" 2>&1 &
# The configs' training sets, rendered once before the runs start (the runs would otherwise each render it).
for spec in $(python3 -c "import sys, yaml
for p in sys.argv[1:]:
    c = yaml.safe_load(open(p)); d = c['data']
    if d.get('demo') and d.get('cache_file'): print(f\"{d['cache_file']},{d['demo_images']},{c['generator']['size']}\")" $CONFIGS | sort -u); do
  IFS=, read -r cache n size <<< "$spec"
  python3 scripts/make_demo_dataset.py --cache "$cache" --n "$n" --size "$size" --workers 14 2>&1 | tail -1
done
wait
MARK=$(mktemp); touch "$MARK"
RUNS=()
for cfg in $CONFIGS; do
  run=$(python3 -c "import sys, yaml; e = yaml.safe_load(open(sys.argv[1]))['experiment']; print(e.get('out_dir', 'runs') + '/' + e['name'])" "$cfg")
  RUNS+=("$run")
  ( timeout -s INT "$(python3 -c "print(int(${MINUTES:-7} * 60 + 90))")" python3 scripts/train_generator.py \
      --config "$cfg" --resume auto --time-limit "${MINUTES:-7}" --no-progress > "$LOGS/$(basename "$run").log" 2>&1
    echo "$run: exit $? ($(tail -1 "$LOGS/$(basename "$run").log"))" ) &
done
if [ -n "${ORACLE:-}" ]; then
  RUNS+=(runs/oracle_ours)
  ( timeout -s INT "$(python3 -c "print(int(${MINUTES:-7} * 60 + 120))")" python3 scripts/dev/rosinality_train_oracle.py \
      --rosinality "$ORACLE" --nets ours --minutes "${MINUTES:-7}" \
      --snapshot-every 500 --out runs/oracle_ours ${ORACLE_ARGS:---config configs/demo_swagan_v4.yaml} \
      > "$LOGS/oracle_ours.log" 2>&1
    echo "runs/oracle_ours: exit $? ($(tail -1 "$LOGS/oracle_ours.log"))" ) &
fi
wait
SNAP=$(mktemp -d); GENS=()
for run in "${RUNS[@]}"; do
  tail -1 "$run/metrics.jsonl" 2>/dev/null | cut -c1-300
  for ck in $(find "$run/checkpoints" -name 'step_*.pt' -newer "$MARK" 2>/dev/null | sort); do
    name="$(basename "$run")__$(basename "$ck" .pt)"
    python3 scripts/train_generator.py --export "$SNAP/$name.pt" --ckpt "$ck" > /dev/null && GENS+=(--generator "$name=$SNAP/$name.pt")
    if [ "${RAW_G:-0}" = 1 ]; then  # the raw generator beside g_ema: does the average blur what G draws?
      python3 scripts/train_generator.py --export "$SNAP/${name}__raw.pt" --ckpt "$ck" --network g > /dev/null \
        && GENS+=(--generator "${name}__raw=$SNAP/${name}__raw.pt")
    fi
  done
  for ck in $(find "$run/snapshots" -name 'step_*.pt' -newer "$MARK" 2>/dev/null | sort); do  # the oracle's: already g_ema files
    name="$(basename "$run")__$(basename "$ck" .pt)"; cp "$ck" "$SNAP/$name.pt"; GENS+=(--generator "$name=$SNAP/$name.pt")
  done
  mkdir -p "$run" && cp "$LOGS/$(basename "$run").log" "$run/train_generator.log"
done
python3 scripts/fd_judge.py --n "${FD_N:-5000}" "${GENS[@]}" ${FD_REF:+--generator "$FD_REF"} --json "$LOGS/fd_sweep.json" 2>&1 | grep -A1 FD-judge
for run in "${RUNS[@]}"; do
  r=$(basename "$run"); [ "$r" = oracle_ours ] && continue  # the oracle's FD-judge is in fd_sweep.json; no file back
  best=$(python3 -c "import json, sys; f = json.load(open(sys.argv[1]))['fd_judge']
print(min((k for k in f if k.startswith(sys.argv[2] + '__') and not k.endswith('__raw')), key=f.get, default=''))" \
    "$LOGS/fd_sweep.json" "$r")
  echo "$r best: ${best:-none (no snapshot)}"; [ -n "$best" ] && cp "$SNAP/$best.pt" "$OUT/${r}_best.pt"
done
tar czf "$OUT/sweep_files.tgz" -C "$LOGS" fd_sweep.json -C "$PWD" $(for run in "${RUNS[@]}"; do
  for f in metrics.jsonl config.yaml oracle.json train_generator.log samples; do [ -e "$run/$f" ] && echo "$run/$f"; done; done)
ls -la "$OUT"
