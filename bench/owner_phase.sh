#!/bin/bash
# The owner phase of #27's recipes (bench/README.md "Keeping the warm start intelligible"): train voice NAME on the
# stand-in owner to each step count in STEPS (resuming), and deep-check it at each; the voice.json after each
# check is kept as $WORK/NAME-STEPS.json. Put a fitted checkpoint (bench/fit_to_base.py) at
# $WORK/models/voice-training/NAME/warm.ckpt first for the new recipe; without one, train makes the plain warm start.
#   bench/owner_phase.sh NAME "10 25" [--learning-rate 5e-5 ...]   (env: WORK=/tmp/own FROZEN=10 DATASET=...)
set -u
NAME=$1; STEPS=$2; shift 2
WORK=${WORK:-/tmp/own}
CACHE=${PLUSH_TEST_MODELS:-$HOME/.cache/plush-test-models}
JOE=$CACHE/piper-en-joe-medium/en/en_US/joe/medium/en_US-joe-medium.onnx
cd "$(dirname "$0")/.."
mkdir -p "$WORK"
printf '[models]\ndir = "%s/models"\n[stt]\nmodel = "%s/whisper-base"\n' "$WORK" "$CACHE" > "$WORK/plush.toml"
.venv/bin/python bench/stand_in_owner.py >/dev/null
for N in $STEPS; do
  echo "=== $NAME train to $N $(date +%T)"
  OMP_NUM_THREADS=1 .venv/bin/plush voice train "$NAME" --dataset "${DATASET:-$CACHE/stand-in-owner}" --base "$JOE" \
    --cpu --steps "$N" --frozen-steps "${FROZEN:-10}" --segment-size 4096 --batch-size 2 --fit-steps 0 \
    --config "$WORK/plush.toml" "$@" 2>&1 | grep -v Warning | tail -4
  echo "=== $NAME check at $N $(date +%T)"
  OMP_NUM_THREADS=1 .venv/bin/plush voice check "$NAME" --deep --config "$WORK/plush.toml" 2>&1 | tail -22
  cp "$WORK/models/voices/$NAME/voice.json" "$WORK/$NAME-$N.json"
done
echo "=== done $(date +%T)"
