#!/usr/bin/env bash
# Score a depth model (default: the shipped data/default_model.pt) on held-out synthetic sequences of every level.
# The held-out sets use seed 777; the shipped curricula train on seed-0 data, so no held-out colon or
# trajectory was seen in training.
#   bash benchmarks/heldout_default_model.sh [OUT [CHECKPOINT]]     (default OUT: out/heldout)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/heldout}
CKPT=${2:-}
CD=${COLONDEPTH:-.venv/bin/colondepth}
NAME=$([ -n "$CKPT" ] && basename "$(dirname "$(dirname "$CKPT")")" || echo default_model)
for recipe in synth/L1_straight.yaml synth/L2_curved.yaml synth/L3_haustra.yaml synth/L4_flexures.yaml synth/L5_tortuous.yaml synth/L6_cavity.yaml; do
  level=$(basename "$recipe" .yaml | cut -d_ -f1)
  "$CD" synth --recipe "$recipe" --out "$OUT/data/$level" --sequences 2 --frames 24 --size 128 128 --seed 777 --no-video --quiet
done
CK=()
[ -n "$CKPT" ] && CK=(--checkpoint "$CKPT")
"$CD" evaluate "${CK[@]}" --data "$OUT/data" --align median --json "$OUT/${NAME}_median.json"
"$CD" evaluate "${CK[@]}" --data "$OUT/data" --align none --json "$OUT/${NAME}_metric.json"
