#!/usr/bin/env bash
# AOTInductor packages (.pt2) against the TorchScript path on one GPU (issue
# 14, item 5), every package compiled from the same file the TorchScript rows
# use (models/ani1x_static.pt), all in one device session:
#   export  python/export_pt2.py --device cuda (on the GPU machine: a CUDA
#           package is compiled there): alanine dipeptide x 1, 64, 1024 and
#           chignolin x 32; compile time and the exporter's check in the logs
#   bench   mlff-md bench md, same structure and R: the package eager and
#           graphed against ani1x_static.pt eager and graphed
#
#   OUT=/tmp/res bash benches/gpu_pt2.sh target/release/mlff-md "" COMMIT
# Carry the engine and models/ani1x_static.pt. Packages stay on the device
# (/tmp/mlff_md_pt2: up to tens of MB each). Everything stops by BUDGET_S
# seconds (default 560); results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts export,bench "$@"
gpu_info "$OUT/gpu.txt"
STATIC=models/ani1x_static.pt
sha256sum $STATIC > "$OUT/models.sha256"
echo "$COMMIT" > "$OUT/commit.txt"
PK=/tmp/mlff_md_pt2
mkdir -p "$PK"
B="$BIN bench md --device cuda --warmup 10 --steps 200"
for spec in alanine_dipeptide:1 alanine_dipeptide:64 alanine_dipeptide:1024 chignolin_extended:32; do
  name=${spec%%:*} r=${spec##*:}
  pdb=systems/peptides/$name.pdb pkg=$PK/${name}_x$r.pt2
  if part export; then
    t 240 "export_${name}_$r" python3 python/export_pt2.py --model $STATIC --structure "$pdb" \
      --replicas "$r" --device cuda --out "$pkg"
  fi
  if part bench; then
    [ -e "$pkg" ] && t 60 "bench_pt2_${name}_$r" $B --cuda-graphs off,on --model "$pkg" \
      --structures "$pdb" --replicas "$r" --out "$OUT/bench_pt2_${name}_$r"
    t 60 "bench_ts_${name}_$r" $B --cuda-graphs off,on --model $STATIC \
      --structures "$pdb" --replicas "$r" --out "$OUT/bench_ts_${name}_$r"
  fi
done
pack
