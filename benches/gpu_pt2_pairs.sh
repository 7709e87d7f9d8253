#!/usr/bin/env bash
# Packages of contract pt2-v2 (a neighbour-list model compiled with its
# backward pass, src/force/aoti.rs) against the TorchScript file they are
# compiled from (models/ani1x_nl.pt, the same file in every row), issue 12,
# in one device session. For each ROWS entry structure:R[:ROOM] (a PDB of
# systems/peptides or, periodic, systems/water: water_3k:8; ROOM, e.g.
# 1.6,1.3, compiles with `--room ROOM`, after the same row without it:
# chignolin_extended:32 chignolin_extended:32:1.6,1.3):
#   compile  `mlff-md compile` of a generated config (that structure, R
#            members, cuda) into the package cache (/tmp/mlff_md_pt2_cache,
#            kept while the machine stays warm), once for each kernel set
#            of KERNELS (default "model"; e.g. "model triton triton-tf32x3":
#            `compile --kernels`, each replacing the row's cached
#            package); the exporter's check in the log
#   bench    mlff-md bench md, graphed, the file and then --compiled (the
#            cached package for the row, after each kernel set's compile),
#            side by side
#   engine   (ENGINE_ROWS, default the first row) the row's config run for
#            200 steps three ways, with the last kernel set's package: the
#            file (compiled = "off", eager), the package eager and the
#            package graphed; the package against the file at step 0
#            (same positions) and after 10 steps, and graphed against eager
#            bit for bit (observables and DCD frames)
#
# BASE=PATH (optional): another build of the engine (e.g. the previous
# commit's, under .cache/bin), benched on the same file and package right
# after each bench row, then the row again (A, B, A: an A/B with the spread
# of A beside it; names bench_base_* and bench_*_again).
#
#   OUT=/tmp/res ROWS="chignolin_extended:32 alanine_dipeptide:4096" \
#     bash benches/gpu_pt2_pairs.sh target/release/mlff-md "" COMMIT
# Carry the engine and models/ani1x_nl.pt. Results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts compile,bench,engine "$@"
gpu_info "$OUT/gpu.txt"
MODEL=models/ani1x_nl.pt
sha256sum $MODEL > "$OUT/models.sha256"
echo "$COMMIT" > "$OUT/commit.txt"
export MLFF_MD_CACHE=/tmp/mlff_md_pt2_cache MLFF_MD_PYTHON=python3
mkdir -p "$MLFF_MD_CACHE" /tmp/mlff_md_pt2_configs
OPTS="bench md --device cuda --warmup 10 --steps ${STEPS:-200} --model $MODEL"
B="$BIN $OPTS"
[ -n "${BASE:-}" ] && BASE=$(cd "$CALLER_DIR" && realpath "$BASE")
# bench NAME ARGS...: the row with this engine, and with BASE, if given,
# then this engine again.
bench() {
  local name=$1; shift
  t 90 "$name" $B "$@" --out "$OUT/$name"
  [ -n "${BASE:-}" ] || return 0
  t 90 "${name/bench_/bench_base_}" "$BASE" $OPTS "$@" --out "$OUT/${name/bench_/bench_base_}"
  t 90 "${name}_again" $B "$@" --out "$OUT/${name}_again"
}
for spec in ${ROWS:-chignolin_extended:32 alanine_dipeptide:4096}; do
  IFS=: read -r name r room <<< "$spec"
  row=${name}_$r${room:+_room$room}
  pdb=systems/peptides/$name.pdb cfg=/tmp/mlff_md_pt2_configs/${name}_$r.toml
  [ -f "$pdb" ] || pdb=systems/water/$name.pdb
  # A file with a cell (CRYST1) is a periodic box, as bench md takes it.
  periodic=false && grep -q '^CRYST1' "$pdb" && periodic=true
  cat > "$cfg" <<TOML
[system]
structure = "$ROOT/$pdb"
periodic = $periodic
[model]
path = "$ROOT/$MODEL"
device = "cuda"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
friction = 1.0
[ensemble]
members = $r
seed = 7
initial_temperature = 300.0
[run]
steps = 200
[output]
directory = "/tmp/mlff_md_pt2_configs/unused"
trajectory_format = "dcd"
trajectory_interval = 50
observables_interval = 10
TOML
  # A row with room reuses its structure's file row, timed before it.
  if part bench && [ -z "$room" ]; then
    bench "bench_file_$row" --structures "$pdb" --replicas "$r"
  fi
  for k in ${KERNELS:-model}; do
    kr=$row; [ "$k" = model ] || kr=${row}_$k
    part compile && t 300 "compile_$kr" env ${INDUCTOR:+MLFF_MD_INDUCTOR_CONFIG="$INDUCTOR"} "$BIN" compile "$cfg" ${room:+--room "$room"} --kernels "$k"
    part bench && bench "bench_pt2_$kr" --compiled --structures "$pdb" --replicas "$r"
  done
done
ENGINE_ROWS=${ENGINE_ROWS:-${ROWS%% *}}
if part engine; then
  for spec in $ENGINE_ROWS; do
    # The package the cache holds for the row now (its last compile).
    IFS=: read -r name r _ <<< "$spec"
    c=/tmp/mlff_md_pt2_configs/${name}_$r
    sed 's/^device = "cuda"/device = "cuda"\ncompiled = "off"/' "$c.toml" > "${c}_off.toml"
    W=/tmp/mlff_md_pt2_runs/${name}_$r && rm -rf "$W" && mkdir -p "$W"
    t 90 "run_file_${name}_$r" "$BIN" run "${c}_off.toml" --cuda-graphs off --output "$W/file"
    t 90 "run_pt2_eager_${name}_$r" "$BIN" run "$c.toml" --cuda-graphs off --output "$W/eager"
    t 90 "run_pt2_graph_${name}_$r" "$BIN" run "$c.toml" --cuda-graphs on --output "$W/graph"
    python3 - "$W" "$spec" <<'PY' | tee -a "$OUT/engine_check.txt"
import os, sys, h5py, numpy as np
w, spec = sys.argv[1], sys.argv[2]
def obs(name):
    with h5py.File(f"{w}/{name}/observables.h5") as h:
        return h["observables/potential_energy/value"][()], h["parameters"].attrs.get("package_sha256", "")
(f, fp), (e, ep), (g, gp) = obs("file"), obs("eager"), obs("graph")
print(f"{spec}: package recorded: file run {bool(fp)}, eager {bool(ep)}, graphed {bool(gp)}")
for i, when in ((0, "step 0 (same positions)"), (1, "step 10")):
    rel = np.abs(e[i] - f[i]) / np.abs(f[i])
    print(f"  package vs file, {when}: largest relative energy difference {rel.max():.2e} over {rel.size} members")
same = np.array_equal(e.view(np.uint64), g.view(np.uint64))
frames = [n for n in sorted(os.listdir(f"{w}/eager")) if n.endswith(".dcd")]
same_frames = all(open(f"{w}/eager/{n}", "rb").read() == open(f"{w}/graph/{n}", "rb").read() for n in frames)
print(f"  package graphed vs eager: energies bit for bit {same}; {len(frames)} DCD files byte for byte {same_frames}")
PY
  done
fi
ls -la "$MLFF_MD_CACHE" > "$OUT/cache.txt"
pack
