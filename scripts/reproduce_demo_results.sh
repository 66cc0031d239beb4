#!/usr/bin/env bash
# Regenerate every number and figure of docs/results.md from the bundled demo models, on the CPU (~25 min
# on 2 cores): 500 held-out demo faces, per-sub-band L2 of the four demo models, the Figure-2b-style bar
# chart and the qualitative grid with crops; then the editing section: the edit-fidelity benchmark of the
# four models with the shipped directions on 200 held-out faces, and FD-judge of the bundled generator.
# Outputs: outputs/demo_results/ (tables, csv, json, figures), outputs/edit_benchmark/ and docs/img/*.png.
# Needs the installed package (pip install -e . from the repository root).
set -euo pipefail
PY=${PYTHON:-python}
TEST=${TEST_DIR:-data/demo_test500}
OUTDIR=${OUT_DIR:-outputs/demo_results}
# Seeds 1,001,000..1,001,499: held out from training (0..19,999), from the trainers' validation
# (1,000,000..1,000,063) and from examples/ (1,002,000+).
$PY scripts/make_demo_dataset.py --output "$TEST" --n 500 --seed-offset 1001000 --workers 2 --labels --overwrite
$PY scripts/eval_subbands.py --gt "$TEST" --size 128 --levels 1 --device cpu --output "$OUTDIR" --overwrite \
  --model wagi=pretrained/demo/wagi.pt --model wavelet_restyle=pretrained/demo/wavelet_restyle.pt \
  --model l2_restyle=pretrained/demo/l2_restyle.pt --model hfgi=pretrained/demo/hfgi.pt
$PY scripts/qualitative_grid.py --gt "$TEST" --labels "$TEST/labels.jsonl" --seed-offset 1001000 \
  --method l2_restyle="$OUTDIR/recon/l2_restyle" --method hfgi="$OUTDIR/recon/hfgi" \
  --method wagi="$OUTDIR/recon/wagi" --crops text,eyes --n 4 --output docs/img/results_qualitative.png --overwrite
cp "$OUTDIR/subbands_bar.png" docs/img/results_subbands_bar.png
cp "$OUTDIR/subbands_example.png" docs/img/results_subbands_example.png
EDITS=${EDIT_DIR:-outputs/edit_benchmark}
$PY scripts/eval_edits.py --n 200 --device cpu --output "$EDITS" --overwrite --no-progress
cp "$EDITS/edits_figure.png" docs/img/results_edits.png
$PY scripts/fd_judge.py --n 5000 --device cpu --json "$EDITS/fd_judge.json"
$PY scripts/eval_fusion.py --n 100 --device cpu --output "$EDITS/fusion" --overwrite --no-progress
$PY scripts/eval_fusion.py --n 100 --device cpu --edit-mode recompute --edit-gate none --output "$EDITS/fusion_before" \
  --overwrite --no-progress
echo "tables: $OUTDIR/results.md, $EDITS/edits.md, $EDITS/fusion/fusion.md"
