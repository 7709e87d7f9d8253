#!/usr/bin/env bash
# `mlff-md compile` and the package cache on one GPU (issue 14): for each
# shipped config that runs models/ani1x_static.pt, in one device session:
#   ts1      run CONFIG --steps N with an empty cache: the TorchScript file
#            (the run's hint line names `mlff-md compile`)
#   compile  mlff-md compile CONFIG: the time, and the exporter's check
#   pkg1     the same run: the cached package stands in for the file
#   ts2/pkg2 both again, alternating, for the spread of the timings
#   half     (replica_exchange only) the package run to N/2, then --resume
#            to N: its trajectories must equal pkg1's byte for byte, as must
#            pkg2's (same config, seed and device)
#
#   OUT=/tmp/res CONFIGS="replica_exchange ensemble nve" bash benches/gpu_compile.sh target/release/mlff-md "" COMMIT
# Carry the engine and models/ani1x_static.pt. The cache lives in
# /tmp/mlff_md_cache, so a second call on the still-warm machine finds the
# packages of the first. Results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts runs "$@"
gpu_info "$OUT/gpu.txt"
echo "$COMMIT" > "$OUT/commit.txt"
sha256sum models/ani1x_static.pt > "$OUT/models.sha256"
export MLFF_MD_PYTHON=python3
CACHE=/tmp/mlff_md_cache EMPTY=/tmp/mlff_md_empty_cache W=/tmp/mlff_md_compile
mkdir -p "$CACHE" "$EMPTY" && rm -rf "$W" && mkdir -p "$W"
STEPS=${STEPS:-20000}
for c in ${CONFIGS:-replica_exchange ensemble nve}; do
  cfg=configs/$c.toml
  run() {  # run NAME CACHE [ARGS...]
    local name=$1 cache=$2; shift 2
    t 150 "${c}_$name" env MLFF_MD_CACHE="$cache" "$BIN" run "$cfg" --output "$W/${c}_$name" "$@"
  }
  run ts1 "$EMPTY" --overwrite --steps "$STEPS"
  t 300 "${c}_compile" env MLFF_MD_CACHE="$CACHE" "$BIN" compile "$cfg"
  run pkg1 "$CACHE" --overwrite --steps "$STEPS"
  run ts2 "$EMPTY" --overwrite --steps "$STEPS"
  run pkg2 "$CACHE" --overwrite --steps "$STEPS"
  if [ "$c" = replica_exchange ]; then
    run half "$CACHE" --overwrite --steps $((STEPS / 2))
    run half "$CACHE" --resume --steps "$STEPS"
  fi
  for other in pkg2 half; do
    [ -d "$W/${c}_$other" ] || continue
    for f in "$W/${c}_pkg1"/*.xtc "$W/${c}_pkg1"/*.dcd; do
      [ -e "$f" ] || continue
      if cmp -s "$f" "$W/${c}_$other/$(basename "$f")"; then r=same; else r=DIFFERENT; fi
      echo "$c $other $(basename "$f") $r" >> "$OUT/identical.txt"
    done
  done
  grep -h "^done:\|^compiled\|^note:\|package" "$OUT/${c}"_*.log | cut -c1-300 > "$OUT/${c}_summary.txt"
done
ls -la "$CACHE" > "$OUT/cache.txt"
pack
