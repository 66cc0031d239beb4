#!/usr/bin/env bash
# Fusion ablation for edits and the lattice (docs/method.md): retrain the demo WaGI's fusion stage (stage 2,
# configs/demo_wagi.yaml on the bundled wavelet-loss encoder, pretrained/demo/wavelet_restyle.pt) in four
# variants side by side on one lent GPU, for the same time each, and bring back their fp16 bundles:
#   A  as bundled (control: same recipe, same time)       B  fusion.cascade
#   C  cascade + loss.lattice                             D  cascade + lattice + fusion.edit_aug
#   E  cascade + fusion.edit_aug at the config's defaults (no lattice term)
#   H  the HFGI-style baseline (configs/demo_hfgi.yaml on the bundled L2-only encoder) + the same edit_aug as E
# Evaluate on the CPU afterwards with scripts/eval_fusion.py and scripts/eval_edits.py (--model NAME=PATH).
# VARIANTS="A B" runs a subset; MINUTES (default 6.2) is each run's training time; LATTICE (0.3) the term's
# weight, EDIT_AUG (0.5) the share of edited samples. Every run uses --resume auto (a second slice continues).
source "$(dirname "$0")/gpu_common.sh"  # strict pipes, $OUT, $LOGS, PYTHONPATH, ops
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
python3 -m wagi.ops.compile_check > "$LOGS/ops.log" 2>&1 &
python3 scripts/make_demo_dataset.py --cache runs/cache/demo_faces_128x20000.pt --n 20000 --workers 14 2>&1 | tail -1
wait
LAT=${LATTICE:-0.3}; EA=${EDIT_AUG:-0.5}
# D's draws and mask as measured on 2026-12-07 (docs/method.md); EA_SET="" takes the config's defaults instead
EA_SET=${EA_SET---set fusion.edit_aug.strength=[2.0,6.0] --set fusion.edit_aug.mask=[0.02,0.06,2]}
declare -A SETS=(
  [A]=""
  [B]="--set fusion.cascade=true"
  [C]="--set fusion.cascade=true --set loss.lattice=$LAT"
  [D]="--set fusion.cascade=true --set loss.lattice=$LAT --set fusion.edit_aug.prob=$EA --set fusion.edit_mode=recompute $EA_SET"
  [E]="--set fusion.cascade=true --set fusion.edit_aug.prob=$EA --set fusion.edit_mode=recompute"
  [H]="--set fusion.edit_aug.prob=$EA --set fusion.edit_mode=recompute"
)
declare -A BASE=([H]="demo_hfgi l2_restyle")  # config and bundled encoder of a variant (default: demo_wagi on wavelet_restyle)
train() {  # variant
  read -r cfg enc <<< "${BASE[$1]:-demo_wagi wavelet_restyle}"
  timeout -s INT "$(python3 -c "print(int(${MINUTES:-6.2} * 60 + 90))")" python3 scripts/train.py \
    --config "configs/$cfg.yaml" --set "experiment.name=abl_$1" --set "train.encoder_ckpt=pretrained/demo/$enc.pt" \
    --set data.workers=2 ${SETS[$1]} --resume auto --time-limit "${MINUTES:-6.2}" --no-progress > "$LOGS/abl_$1.log" 2>&1
  echo "abl_$1: exit $? ($(tail -1 "$LOGS/abl_$1.log"))"
}
VARIANTS=${VARIANTS:-A B C D}
for v in $VARIANTS; do train "$v" & done
wait
MODELS=()
for v in $VARIANTS; do
  [ -f "runs/abl_$v/checkpoints/latest.pt" ] && MODELS+=(--model "abl_$v=runs/abl_$v/checkpoints/latest.pt")
  grep '"val"' "runs/abl_$v/metrics.jsonl" | tail -1 | cut -c1-300
  cp "$LOGS/abl_$v.log" "runs/abl_$v/train.log"
done
mkdir -p "$LOGS/abl"
[ ${#MODELS[@]} -gt 0 ] && python3 scripts/bundle_models.py --output "$LOGS/abl" "${MODELS[@]}" 2>&1 | tail -6
mv "$LOGS"/abl/*.pt "$OUT"/ 2>/dev/null  # the bundles; their manifest goes into the tarball (few files per call)
tar czf "$OUT/run_files.tgz" $(ls runs/abl_*/{metrics.jsonl,config.yaml,train.log} 2>/dev/null) \
  $([ -f "$LOGS/abl/manifest.json" ] && echo "-C $LOGS/abl manifest.json")
ls -la "$OUT"
