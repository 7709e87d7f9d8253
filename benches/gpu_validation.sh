#!/usr/bin/env bash
# Physical validation with ANI-1x on a GPU (device tool): NVE energy drift of
# alanine dipeptide at dt 0.5 and 0.25 fs, and a 64-member Langevin ensemble
# at 300 K. Packs observables and summaries into $OUT/validation.tgz for
# analysis by benches/analyze_validation.py.
#
#   OUT=/tmp/res bash benches/gpu_validation.sh [target/release/mlff-md]
set -euo pipefail
BIN=$(realpath "${1:-target/release/mlff-md}")
FINAL=${OUT:?set OUT to a results directory}
. "$(dirname "$0")/gpu_env.sh"
RES=$(mktemp -d)
gpu_info "$RES/gpu.txt"
NVE_PS=${NVE_PS:-2}
LANGEVIN_STEPS=${LANGEVIN_STEPS:-10000}
for dt in 0.5 0.25; do
  steps=$(python3 -c "print(int($NVE_PS*1000/$dt))")
  sed "s/^timestep = 0.5 /timestep = $dt /; s/^trajectory_interval = 200/trajectory_interval = 0/" configs/nve.toml > configs/_nve_$dt.toml
  "$BIN" run configs/_nve_$dt.toml --device cuda --steps "$steps" --output "$RES/nve_$dt" --quiet
  rm configs/_nve_$dt.toml
done
"$BIN" run configs/ensemble.toml --device cuda --steps "$LANGEVIN_STEPS" --output "$RES/langevin" --quiet
find "$RES" -name '*.xtc' -o -name '*.dcd' -o -name 'checkpoint*' | xargs rm -f
tar czf "$FINAL/validation.tgz" -C "$RES" .
cat "$RES"/*/summary.json | grep -E '"steps_per_second"|"mean_temperature_k"'
