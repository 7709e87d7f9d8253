#!/usr/bin/env bash
# Issue 6's long validation run: configs/ensemble.toml as shipped (64 members
# of alanine dipeptide, Langevin 300 K, 100 ps = 200,000 steps of 0.5 fs,
# ANI-1x static export, CUDA graphs on), outputs packed into $OUT.
#   OUT=/tmp/res bash benches/gpu_ensemble_100ps.sh target/release/mlff-md
set -uo pipefail
BIN=$(realpath "${1:-target/release/mlff-md}")
. "$(dirname "$0")/gpu_env.sh"
W=$(mktemp -d)
mkdir -p "$W/ensemble"
gpu_info "$W/gpu.txt"
timeout ${LIMIT:-560} "$BIN" run configs/ensemble.toml --cuda-graphs on -o "$W/ensemble" --overwrite 2>&1 | tr '\r' '\n' | grep -v "^step " | tail -20
echo "exit status ${PIPESTATUS[0]}"
mv "$W/gpu.txt" "$W/ensemble/"
tar czf "${OUT:?}/ensemble.tgz" -C "$W" ensemble
