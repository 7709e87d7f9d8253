#!/usr/bin/env bash
# AIMNet2 wB97M-D3 on one GPU, the wheel's network as shipped
# (models/aimnet2_wb97m.pt, v1: all pairs, padded, eager) against its
# neighbour-list variant (models/aimnet2_wb97m_nl.pt, contract v2 with charge;
# issue 14 item 2), in parts:
#   bench    mlff-md bench md, Langevin, float64 state: alanine dipeptide and
#            chignolin (extended) at R = 1, 64, 1024 and Trp-cage (extended,
#            303 atoms) at R = 1, 64; v1 eagerly, the variant eager and graphed
#   repeat   the variant on configs/-style Langevin chignolin (folded) x 8,
#            graphed: two runs of STEPS steps, and one run of STEPS/2 resumed
#            to STEPS; their XTC trajectories compared byte for byte, their
#            observables (every 10 steps) returned
#   repeat_eager  the same without CUDA graphs
# (MODEL=models/ani1x_nl.pt runs the repeat parts with another v2 model;
# BENCH_MODELS="aimnet2_wb97m_ens_nl ..." benches other files of models/,
# those ending in _nl eager and graphed, the others eagerly; BENCH_LIMIT
# seconds per model, BENCH_STEPS timed steps per point, BENCH_REPLICAS the
# R of alanine dipeptide and chignolin.)
#
#   OUT=/tmp/res bash benches/gpu_aimnet2_nl.sh .device/mlff-md "" COMMIT
# Carry the engine and the model files the parts use. Results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts bench,repeat,repeat_eager "$@"
gpu_info "$OUT/gpu.txt"
echo "$COMMIT" > "$OUT/commit.txt"
BENCH_MODELS=${BENCH_MODELS:-aimnet2_wb97m aimnet2_wb97m_nl}
for m in $BENCH_MODELS; do sha256sum "models/$m.pt"; done > "$OUT/models.sha256"
P=systems/peptides
E="$BIN bench md --device cuda --warmup 5 --steps ${BENCH_STEPS:-50}"
if part bench; then
  for m in $BENCH_MODELS; do
    graphs=off
    [[ $m == *_nl ]] && graphs=off,on
    t "${BENCH_LIMIT:-200}" "bench_$m" $E --model models/$m.pt --cuda-graphs $graphs \
      --structures $P/alanine_dipeptide.pdb,$P/chignolin_extended.pdb \
      --replicas "${BENCH_REPLICAS:-1,64,1024}" --out "$OUT/bench_$m"
    t 90 "bench_trpcage_$m" $E --model models/$m.pt --cuda-graphs $graphs \
      --structures $P/trpcage_extended.pdb --replicas 1,64 --out "$OUT/bench_trpcage_$m"
  done
fi
# repeat_run TAG GRAPHS: the chignolin runs of the parts repeat (GRAPHS on)
# and repeat_eager (off) under $W/TAG; trajectories compared with run a's.
repeat_run() {
  local tag=$1 graphs=$2 d=$W/$1
  mkdir -p "$d"
  cat > "$d/chignolin.toml" <<CFG
[system]
structure = "$ROOT/$P/chignolin_folded.pdb"
[model]
path = "$ROOT/${MODEL:-models/aimnet2_wb97m_nl.pt}"
device = "cuda"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
friction = 1.0
[ensemble]
members = 8
seed = 2026
[run]
steps = $STEPS
cuda_graphs = "$graphs"
[output]
directory = "$d/out"
trajectory_format = "xtc"
trajectory_interval = 100
observables_interval = 10
checkpoint_interval = $((STEPS / 2))
CFG
  for r in a b; do
    t 120 "${tag}_$r" "$BIN" run "$d/chignolin.toml" --overwrite --output "$d/$r"
  done
  t 90 "${tag}_half" "$BIN" run "$d/chignolin.toml" --overwrite --output "$d/half" --steps $((STEPS / 2))
  t 90 "${tag}_resume" "$BIN" run "$d/chignolin.toml" --resume --output "$d/half" --steps "$STEPS"
  for other in b half; do
    for f in "$d/a"/*.xtc; do
      if cmp -s "$f" "$d/$other/$(basename "$f")"; then r=same; else r=DIFFERENT; fi
      echo "$tag a $other $(basename "$f") $r" >> "$OUT/identical.txt"
    done
  done
  for r in a b half; do cp "$d/$r/observables.h5" "$OUT/${tag}_${r}_observables.h5" 2>/dev/null; done
  grep -h "^done:\|graph" "$OUT"/"${tag}"_*.log | cut -c1-300 > "$OUT/${tag}_summary.txt"
}
STEPS=${STEPS:-4000}
W=/tmp/mlff_md_aimnet2_nl && rm -rf "$W" && mkdir -p "$W"
part repeat && repeat_run repeat on
part repeat_eager && repeat_run repeat_eager off
pack
