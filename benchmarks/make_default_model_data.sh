#!/usr/bin/env bash
# Training data of the shipped default model and its candidates: every level L1-L6, 16 sequences as the level
# is written and 48 with the randomisation block on, 64 frames each, 160x160 (6 x 64 x 64 = 24,576 frames;
# curricula/default_model.yaml (the previous default) uses L1-L5, 20,480 frames; the wide curricula of the shipped model use L1-L6).
# Resumable (rerun skips finished sequences) and shardable: SHARD=I/N runs the I-th of N shards
# (e.g. a SLURM array: SHARD=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).
#   bash benchmarks/make_default_model_data.sh data_train
# The counts and seeds can be changed for a wider set of shorter sequences (more scenes per frame), e.g.
#   RAND_SEQ=160 PLAIN_SEQ=32 FRAMES=8 RAND_SEED=3000 PLAIN_SEED=4000 SUFFIX=d \
#       bash benchmarks/make_default_model_data.sh data_train   # adds L1d, L1rd, ... (9,216 frames)
set -euo pipefail
OUT=${1:-data_train}
SHARD=${SHARD:-0/1}
RAND_SEQ=${RAND_SEQ:-48} PLAIN_SEQ=${PLAIN_SEQ:-16} FRAMES=${FRAMES:-64}
RAND_SEED=${RAND_SEED:-1000} PLAIN_SEED=${PLAIN_SEED:-2000} SUFFIX=${SUFFIX:-}
cd "$(dirname "$0")/.."
for level in L1_straight L2_curved L3_haustra L4_flexures L5_tortuous L6_cavity; do
  short=${level%%_*}
  colondepth synth --recipe "synth/$level.yaml" --out "$OUT/${short}r$SUFFIX" --sequences "$RAND_SEQ" --frames "$FRAMES" \
    --size 160 160 --seed "$RAND_SEED" --randomise --no-video --quiet --shard "$SHARD"
  colondepth synth --recipe "synth/$level.yaml" --out "$OUT/$short$SUFFIX" --sequences "$PLAIN_SEQ" --frames "$FRAMES" \
    --size 160 160 --seed "$PLAIN_SEED" --no-video --quiet --shard "$SHARD"
done
