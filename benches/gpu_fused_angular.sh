#!/usr/bin/env bash
# The neighbour-list ANI's force call compiled and with a fused angular sum
# (issue 12), side by side in one device session on one model file:
#   engine  mlff-md bench md (graphed): alanine dipeptide R = ALA_R (default
#           1,64,1024,4096) and chignolin x 32, for the step around the call
#   forms   benches/fused_angular.py: the force call in FORMS (default
#           script, compiled, fused_triton_dot, fused_triton_dot_row_tf32x3;
#           a fused form with _nets appended runs the networks by
#           python/network_triton.py, e.g. fused_triton_dot_row_nets),
#           with the engine's capacities for these systems, and a kernel
#           profile of 3 eager calls each
#
#   OUT=/tmp/res bash benches/gpu_fused_angular.sh target/release/mlff-md - COMMIT
# Carry the binary and models/ani1x_nl.pt. Everything stops by BUDGET_S
# seconds (default 560); results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts engine,forms "$@"
gpu_info "$OUT/gpu.txt"
NL=${MODEL:-models/ani1x_nl.pt}
ALA=systems/peptides/alanine_dipeptide.pdb
CHIG=systems/peptides/chignolin_extended.pdb
sha256sum "$NL" "$BIN" > "$OUT/files.sha256"
echo "$COMMIT" > "$OUT/commit.txt"

if part engine; then
  E="$BIN bench md --device cuda --warmup 10 --cuda-graphs on --steps 200 --model $NL"
  t 120 md_ala2 $E --structures $ALA --replicas "${ALA_R:-1,64,1024,4096}" --out "$OUT/md_ala2"
  t 60 md_chig $E --structures $CHIG --replicas 32 --out "$OUT/md_chig"
fi
if part forms; then
  # PATH:R:K:KA, K and KA as mlff-md's list gives them (the engine part's
  # JSON, neighbor_list: capacity, inner_capacities)
  SYSTEMS="--system $CHIG:32:43:22"
  for r in $(echo "${ALA_R:-1,64,1024,4096}" | tr , '\n' | sort -rn); do
    SYSTEMS="$SYSTEMS --system $ALA:$r:22:19"
  done
  t 420 fused_angular env PYTHONPATH=python:benches python3 benches/fused_angular.py \
    --model "$NL" --device cuda --profile 3 $SYSTEMS \
    --forms "${FORMS:-script,compiled,fused_triton_dot,fused_triton_dot_row_tf32x3}" \
    --out "$OUT/fused_angular.json"
fi
pack
