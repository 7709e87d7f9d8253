#!/usr/bin/env bash
# AOTInductor packages on the GPU, what benches/gpu_pt2.sh left open
# (issue 14, item 5): (1) where the exporter's own check crashed (Python's
# fault handler on), (2) the package against its TorchScript source in the
# engine (64 x alanine dipeptide, Langevin, 400 steps: the step-0 energies,
# the same positions), (3) the package's step captured in a CUDA graph
# against the same run eager, bit for bit (observables and DCD frames), and
# (4) bench md of the package eager and graphed, at R = 1, 64 and 1024,
# beside ani1x_static.pt eager and graphed.
#
#   OUT=/tmp/res bash benches/gpu_pt2_check.sh .device/mlff-md "" COMMIT
# Carry the engine and models/ani1x_static.pt; results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts export,engine,bench "$@"
gpu_info "$OUT/gpu.txt"
echo "$COMMIT" > "$OUT/commit.txt"
STATIC=models/ani1x_static.pt
sha256sum $STATIC > "$OUT/models.sha256"
PK=/tmp/mlff_md_pt2 && mkdir -p $PK
ALA=systems/peptides/alanine_dipeptide.pdb
if part export; then
  for r in 64 1 1024; do
    [ -e $PK/ala_x$r.pt2 ] || t 200 "export_$r" python3 -X faulthandler python/export_pt2.py \
      --model $STATIC --structure $ALA --replicas $r --device cuda --out $PK/ala_x$r.pt2
  done
fi
# One config, three models/modes.
W=/tmp/mlff_md_pt2_runs && rm -rf $W && mkdir -p $W
config() {
  cat > "$W/$1.toml" <<TOML
[system]
structure = "$ROOT/$ALA"
[model]
path = "$2"
dtype = "float32"
device = "cuda"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
friction = 2.0
[ensemble]
members = 64
seed = 7
initial_temperature = 300.0
[run]
steps = 400
cuda_graphs = "$3"
[output]
directory = "$W/out_$1"
trajectory_format = "dcd"
trajectory_interval = 50
observables_interval = 10
TOML
}
if part engine; then
  config ts_eager "$ROOT/$STATIC" off
  config pt2_eager $PK/ala_x64.pt2 off
  config pt2_graph $PK/ala_x64.pt2 on
  t 60 run_ts_eager $BIN run $W/ts_eager.toml
  t 60 run_pt2_eager $BIN run $W/pt2_eager.toml
  t 60 run_pt2_graph $BIN run $W/pt2_graph.toml
  python3 - $W <<'PY' | tee "$OUT/engine_check.txt"
import sys, os, h5py, numpy as np
w = sys.argv[1]
def obs(name):
    p = f"{w}/out_{name}/observables.h5"
    if not os.path.exists(p):
        return None
    with h5py.File(p) as h:
        return h["observables/potential_energy/value"][()]
ts, eager, graph = obs("ts_eager"), obs("pt2_eager"), obs("pt2_graph")
if ts is not None and eager is not None:
    rel = np.abs(eager[0] - ts[0]) / np.abs(ts[0])
    print(f"package vs TorchScript, step 0 (same positions): largest relative energy difference {rel.max():.2e} over {rel.size} members")
    rel10 = np.abs(eager[1] - ts[1]) / np.abs(ts[1])
    print(f"  after 10 steps: {rel10.max():.2e}")
if eager is not None and graph is not None:
    same = eager.shape == graph.shape and np.array_equal(eager.view(np.uint64), graph.view(np.uint64))
    print(f"package graphed vs eager: energies of {eager.shape} records {'bit-identical' if same else 'DIFFER (largest %.2e eV)' % np.abs(eager - graph).max()}")
    for f in sorted(os.listdir(f"{w}/out_pt2_eager")):
        if f.endswith(".dcd"):
            a = open(f"{w}/out_pt2_eager/{f}", "rb").read()
            b = open(f"{w}/out_pt2_graph/{f}", "rb").read()
            if a != b:
                print(f"  {f}: DCD frames differ")
                break
    else:
        print("  every DCD trajectory identical byte for byte")
else:
    print("graphed run missing: see run_pt2_graph.log")
PY
fi
if part bench; then
  B="$BIN bench md --device cuda --warmup 10 --steps 200 --structures $ALA"
  for r in 1 64 1024; do
    [ -e $PK/ala_x$r.pt2 ] && t 60 "bench_pt2_$r" $B --cuda-graphs off,on \
      --model $PK/ala_x$r.pt2 --replicas $r --out "$OUT/bench_pt2_$r"
    t 60 "bench_ts_$r" $B --cuda-graphs off,on --model $STATIC --replicas $r --out "$OUT/bench_ts_$r"
  done
fi
pack
