#!/bin/bash
# The original lasp2 study's experiments at laptop scale (EMT as the oracle), and the experiments
# beyond it, each repeated R times with other committee and MD seeds, then their reports (mean ±
# spread over the repeats per iteration, with the complete-database band): docs/experiments.md.
# Each campaign is also one command pair:  lasp2 init DIR --example NAME && lasp2 run DIR
# Usage: bash scripts/run-experiments.sh [OUTPUT_DIR] [R]   (default: experiments/ and 5; resumable)
#        ONLY="experiment-1 experiment-3-learn" bash scripts/run-experiments.sh OUT 5
set -euo pipefail
out=${1:-experiments}
repeats=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
examples=${ONLY:-"complete-database experiment-1 experiment-2 experiment-3 experiment-3-larger \
experiment-3-npt experiment-3-strain experiment-3-learn"}
# the complete-database campaigns first: every other report draws their band
python "$here/run_repeats.py" complete-database -r "$repeats" -o "$out" --no-report
for name in $examples; do
  [ "$name" = complete-database ] && continue
  python "$here/run_repeats.py" "$name" -r "$repeats" -o "$out"
done
# Longer curves (about 10 iterations, as the original's): the surface walkers with a lower trigger
# and more MD before a walker counts as converged
if [ -z "${ONLY:-}" ] || [ -n "${LONG:-}" ]; then
  for name in experiment-1 experiment-2; do
    python "$here/run_repeats.py" "$name" -r "$repeats" -o "$out" --name "$name-long" \
      --set gamma.trigger=0.12 --set walkers[0].total_steps=3000 \
      --set convergence.steps_without_trigger=1000
  done
fi
