#!/usr/bin/env bash
# Train the four demo inversion models on one lent GPU in one time slice (docs/results.md):
#   stage 1 (in parallel): demo_l2_restyle, demo_wavelet_restyle   (encoders, frozen demo SWAGAN)
#   stage 2 (in parallel): demo_wagi (wavelet fusion on the wavelet-loss encoder),
#                          demo_hfgi (feature fusion on the L2-only encoder)
# then bundle them (fp16, manifest) into $OUT/demo and time inversion on the GPU. Every run is started with
# --resume auto and --time-limit, so a second slice continues each one exactly.
# Needs pretrained/demo/swagan128.pt (scripts/gpu_demo_generator.sh exports it).
# EXTRA="--set ..." goes to every run; WAGI_EXTRA / HFGI_EXTRA only to demo_wagi / demo_hfgi, e.g. the fusion
# fixes of docs/method.md ("Trained ablation"): WAGI_EXTRA="--set fusion.cascade=true".
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
BUDGET_S=${BUDGET_S:-560}       # seconds for everything up to the bundle
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -m wagi.ops.compile_check > "$LOGS/ops.log" 2>&1 &
python3 scripts/make_demo_dataset.py --cache runs/cache/demo_faces_128x20000.pt --n "${DEMO_IMAGES:-20000}" \
  --workers "${WORKERS:-14}" 2>&1 | tee "$LOGS/cache.log"
wait
left=$(( BUDGET_S - ($(date +%s) - start) ))
minutes() { python3 -c "print(max(0.2, round(($1) / 60.0, 2)))"; }
T1=$(minutes "($left - 70) * ${SPLIT:-0.5}")
echo "stage 1: $T1 min each"
train() {  # name, minutes, [extra options of this run]
  timeout -s INT "$(python3 -c "print(int($2 * 60 + 90))")" python3 scripts/train.py --config "configs/$1.yaml" \
    --resume auto --time-limit "$2" --no-progress ${EXTRA:-} ${3:-} > "$LOGS/$1.log" 2>&1
  echo "$1: exit $? ($(tail -1 "$LOGS/$1.log"))"
}
train demo_l2_restyle "$T1" & train demo_wavelet_restyle "$T1" & wait
left=$(( BUDGET_S - ($(date +%s) - start) ))
T2=$(minutes "$left - 40")
echo "stage 2: $T2 min each"
train demo_wagi "$T2" "${WAGI_EXTRA:-}" & train demo_hfgi "$T2" "${HFGI_EXTRA:-}" & wait
echo "training done after $(( $(date +%s) - start )) s"
python3 scripts/bundle_models.py --output "$OUT/demo" --model wagi=runs/demo_wagi/checkpoints/latest.pt \
  --model hfgi=runs/demo_hfgi/checkpoints/latest.pt --model l2_restyle=runs/demo_l2_restyle/checkpoints/latest.pt \
  --model wavelet_restyle=runs/demo_wavelet_restyle/checkpoints/latest.pt 2>&1 | tail -6
python3 scripts/benchmark.py --only demo --models "$OUT/demo" --json "$LOGS/bench_demo_gpu.json" 2>&1 | tail -22
for r in demo_l2_restyle demo_wavelet_restyle demo_wagi demo_hfgi; do
  grep '"val"' "runs/$r/metrics.jsonl" | tail -1 | cut -c1-400
  cp "$LOGS/$r.log" "runs/$r/train.log" 2>/dev/null
done
cp "$LOGS"/cache.log "$LOGS"/bench_demo_gpu.json runs/ 2>/dev/null
tar czf "$OUT/run_files.tgz" runs/*/metrics.jsonl runs/*/config.yaml runs/*/train.log runs/*/images runs/cache.log \
  runs/bench_demo_gpu.json 2>/dev/null
mv "$OUT"/demo/* "$OUT"/ && rmdir "$OUT/demo"
ls -la "$OUT"
