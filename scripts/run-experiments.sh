#!/bin/bash
# The original lasp2 study's experiments at laptop scale (EMT as the oracle), then their reports.
# Each is also one command pair:  lasp2 init DIR --example NAME && lasp2 run DIR
# Usage: bash scripts/run-experiments.sh [OUTPUT_DIR]     (default: experiments/; resumable)
set -euo pipefail
out=${1:-experiments}
mkdir -p "$out"
examples="complete-database experiment-1 experiment-2 experiment-3 experiment-3-larger"
for name in $examples; do
  [ -f "$out/$name/campaign.yaml" ] || lasp2 init "$out/$name" --example "$name" >/dev/null
  start=$(date +%s)
  lasp2 run "$out/$name" -q
  echo "$name: $(( $(date +%s) - start )) s wall" | tee -a "$out/timings.txt"
done
for name in $examples; do
  [ "$name" = complete-database ] && continue
  lasp2 report "$out/$name" --complete-database "$out/complete-database"
done
