#!/usr/bin/env bash
# Score the shipped default model (data/default_model.pt) on held-out synthetic sequences of every level.
# The held-out sets use seed 777; the model was trained on seed 0 data (curricula/default_model.yaml),
# so no held-out frame, colon or trajectory was seen in training.
#   bash benchmarks/heldout_default_model.sh [OUT]     (default OUT: out/heldout)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/heldout}
CD=${COLONDEPTH:-.venv/bin/colondepth}
for recipe in synth/L1_straight.yaml synth/L2_curved.yaml synth/L3_haustra.yaml synth/L4_flexures.yaml synth/L5_tortuous.yaml; do
  level=$(basename "$recipe" .yaml | cut -d_ -f1)
  "$CD" synth --recipe "$recipe" --out "$OUT/data/$level" --sequences 2 --frames 24 --size 128 128 --seed 777 --no-video --quiet
done
"$CD" evaluate --data "$OUT/data" --align median --json "$OUT/default_model_median.json"
"$CD" evaluate --data "$OUT/data" --align none --json "$OUT/default_model_metric.json"
