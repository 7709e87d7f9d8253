#!/usr/bin/env bash
# Constant pressure and the neighbour-list engine on one GPU (issues 12, 13),
# in one device session so every ratio is side by side:
#   list      bench md at this commit (after the list-build rework measured
#             on a CPU only): alanine dipeptide R = 1, 64, 1024, 4096,
#             chignolin x 32, water_3k x 8 (ani1x_nl.pt), with the
#             plain-PyTorch CUDA-graph reference for ala2 and chignolin
#   water     configs/water_npt.toml, MEMBERS members for WATER_STEPS steps
#             (NPT 300 K, 1 bar, ANI-1x), observables.h5 kept for the density
#   solvated  chignolin in water (systems/solvated/chignolin_water.pdb) x 32:
#             bench md, the reference, TorchSim NPT Langevin, and a short
#             NPT T-REMD run of configs/peptide_folding_water.toml
#   tests     the GPU tests (benches/gpu_tests.sh)
#
#   OUT=/tmp/res PARTS=list,water bash benches/gpu_npt.sh \
#       target/release/mlff-md target/release/deps/cuda_graphs-HASH COMMIT
# Carry target/release/mlff-md, the test binary (tests), models/ani1x_nl.pt
# and .whl (TorchSim). Everything stops by BUDGET_S seconds (default 560);
# results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts list,water "$@"
gpu_info "$OUT/gpu.txt"
ALA=systems/peptides/alanine_dipeptide.pdb
CHIG=systems/peptides/chignolin_extended.pdb
WATER=systems/water/water_3k.pdb
SOLV=systems/solvated/chignolin_water.pdb
NL=models/ani1x_nl.pt
sha256sum $NL > "$OUT/models.sha256"
echo "$COMMIT" > "$OUT/commit.txt"
E="$BIN bench md --device cuda --warmup 10 --cuda-graphs on --model $NL"
REF="python3 benches/reference_md.py --device cuda --graph on --model $NL --warmup 10"

if part list; then
  t 100 engine_ala2_nl $E --structures $ALA --replicas 1,64,1024,4096 --steps 200 --out "$OUT/engine_ala2_nl"
  t 60 engine_chignolin_nl $E --structures $CHIG --replicas 32 --steps 200 --out "$OUT/engine_chignolin_nl"
  t 60 engine_water3k_nl $E --structures $WATER --replicas 8 --steps 100 --out "$OUT/engine_water3k_nl"
  t 90 ref_ala2_nl $REF --structure $ALA --replicas 1,64,1024,4096 --steps 200 --out "$OUT/ref_ala2_nl.json"
  t 45 ref_chignolin_nl $REF --structure $CHIG --replicas 32 --steps 200 --out "$OUT/ref_chignolin_nl.json"
fi

if part water; then
  sed -e "s/^members = 16/members = ${MEMBERS:-8}/" -e 's/^trajectory_interval = 1000/trajectory_interval = 0/' \
    configs/water_npt.toml > configs/gpu_water_npt.toml
  t 330 run_water_npt "$BIN" run configs/gpu_water_npt.toml --steps "${WATER_STEPS:-30000}" \
    --output "$OUT/water_npt" --overwrite
  cp "$OUT/water_npt/summary.json" "$OUT/water_npt_summary.json" 2>/dev/null
  cp "$OUT/water_npt/observables.h5" "$OUT/water_npt_observables.h5" 2>/dev/null
  rm -rf "$OUT/water_npt"
fi

if part solvated && [ -e "$SOLV" ]; then
  # A fresh box compresses in its first steps: 60 eager warm-up steps let
  # the list grow before the step is captured.
  ES="$BIN bench md --device cuda --warmup 60 --cuda-graphs on --model $NL"
  t 120 engine_chigwater_nl $ES --structures $SOLV --replicas ${SOLV_R:-32} --steps 50 --out "$OUT/engine_chigwater_nl"
  t 90 ref_chigwater_nl $REF --structure $SOLV --replicas ${SOLV_R:-32} --steps 50 --out "$OUT/ref_chigwater_nl.json"
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site
    t 90 ts_chigwater_npt python3 benches/peers/torchsim_md.py --device cuda --model $NL --structure $SOLV \
      --replicas 32 --steps 50 --warmup 5 --ensemble npt --pressure 1.0 --out "$OUT/ts_chigwater_npt.json"
  fi
  [ "${FOLD_STEPS:-2000}" != 0 ] && t "${FOLD_LIMIT:-150}" run_folding_water "$BIN" run configs/peptide_folding_water.toml --steps "${FOLD_STEPS:-2000}" \
    --output "$OUT/folding_water" --overwrite
  cp "$OUT/folding_water/summary.json" "$OUT/folding_water_summary.json" 2>/dev/null
  rm -rf "$OUT/folding_water"
fi

# last: the first to go when the budget runs out
gpu_tests_part

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json")) + glob.glob(os.path.join(sys.argv[1], "engine_*", "*.json"))):
    d = json.load(open(f))
    for r in d.get("runs") or d.get("rows") or [d]:
        if "replicas" not in r:
            continue
        if "error" in r:
            print(f"{os.path.basename(f):32s} R={r['replicas']:5d}  {r['error']}")
            continue
        ms = r.get("ms_per_step") or 1e3 / r["steps_per_second"]
        print(f"{os.path.basename(f):32s} R={r['replicas']:5d}  {ms:9.3f} ms/step")
PY
pack
