#!/usr/bin/env bash
# The neighbour-list skin on one GPU (issue 12), side by side in one device
# session: mlff-md bench md (graphed, ani1x_nl.pt) on the periodic systems
# with the stored list's skin at SKINS Å (0: the list built in every step,
# the engine before skins), and the plain-PyTorch CUDA-graph reference:
#   water_3k x 8, chignolin in water x ${SOLV_R:-32}
# then the GPU tests (benches/gpu_tests.sh) if a test binary is given.
#
#   OUT=/tmp/res SKINS=0,0.5,1.0 bash benches/gpu_skin.sh \
#       target/release/mlff-md target/release/deps/cuda_graphs-HASH COMMIT
# Carry target/release/mlff-md, the test binary and models/ani1x_nl.pt
# (models/ani1x.pt and ani1x_static.pt too for the tests). Everything stops
# by BUDGET_S seconds (default 560); results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts engine,reference,tests "$@"
gpu_info "$OUT/gpu.txt"
WATER=systems/water/water_3k.pdb
SOLV=systems/solvated/chignolin_water.pdb
NL=models/ani1x_nl.pt
sha256sum $NL > "$OUT/models.sha256"
echo "$COMMIT" > "$OUT/commit.txt"
# A fresh solvated box compresses in its first steps: 60 eager warm-up
# steps let the list grow before the step is captured.
E="$BIN bench md --device cuda --warmup 60 --cuda-graphs on --model $NL"
REF="python3 benches/reference_md.py --device cuda --graph on --model $NL --warmup 10"

if part engine; then
  for s in ${SKINS//,/ }; do
    t 60 engine_water3k_skin$s $E --structures $WATER --replicas 8 --steps 200 --skin $s --out "$OUT/engine_water3k_skin$s"
  done
  for s in ${SKINS//,/ }; do
    t 90 engine_chigwater_skin$s $E --structures $SOLV --replicas ${SOLV_R:-32} --steps 50 --skin $s --out "$OUT/engine_chigwater_skin$s"
  done
fi
if part reference; then
  t 45 ref_water3k $REF --structure $WATER --replicas 8 --steps 100 --out "$OUT/ref_water3k.json"
  t 90 ref_chigwater $REF --structure $SOLV --replicas ${SOLV_R:-32} --steps 50 --out "$OUT/ref_chigwater.json"
fi
gpu_tests_part

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, sys
out = sys.argv[1]
for f in sorted(glob.glob(os.path.join(out, "engine_*", "*.json"))):
    for r in json.load(open(f))["rows"]:
        nl = r.get("neighbor_list") or {}
        print(f"{os.path.basename(os.path.dirname(f)):28s} R={r['replicas']:3d}  {r['ms_per_step']:9.3f} ms/step  "
              f"list build {r['ms_per_list_build_graphed'] or 0:8.3f} ms  rebuild every {r.get('list_rebuild_every')}  "
              f"stored rows {nl.get('outer_capacity')}  peak {r['peak_allocated_mib'] or 0:.0f} MiB")
for f in sorted(glob.glob(os.path.join(out, "ref_*.json"))):
    for r in json.load(open(f)).get("runs", []):
        print(f"{os.path.basename(f):28s} R={r['replicas']:3d}  {r['ms_per_step']:9.3f} ms/step (plain-PyTorch reference)")
PY
pack
