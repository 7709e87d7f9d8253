#!/usr/bin/env bash
# SevenNet-0 (models/sevennet_0.pt, interface v2, eager) on one GPU, and the
# features that came with it (issues 13 and 14), in parts:
#   engine     mlff-md bench md: 512-atom Si crystal at R = 1, 8, 32; alanine
#              dipeptide at R = 1, 64, 1024 and chignolin at R = 1, 64
#              (the issue's ms/step table)
#   torchsim   the same Si crystal, same model file, in TorchSim 0.6.2
#              (benches/peers/torchsim_md.py: its own neighbour list, NVT
#              Langevin) at R = 1, 8, 32, beside the engine's rows (part
#              engine_si in the same call)
#   materials  configs/materials_nvt.toml for MATERIALS_STEPS steps: 512-atom
#              Si at 300/600/900/1200 K, two members each, the virial
#              pressure recorded (observables.h5 in the results)
#   water      configs/water_npt.toml for WATER_STEPS steps (graphed, with the
#              barostat and the pressure observable)
#   tests      the GPU tests (benches/gpu_tests.sh) if a test binary is given
#
#   OUT=/tmp/res PARTS=engine,materials,water,tests bash benches/gpu_sevenn.sh \
#       target/release/mlff-md target/release/deps/cuda_graphs-HASH COMMIT
# Carry target/release/mlff-md and models/sevennet_0.pt (engine, materials);
# models/ani1x_nl.pt (water); the test binary and models/ani1x.pt,
# ani1x_static.pt, ani1x_nl.pt (tests); .whl (torchsim; see
# benches/peers/README.md). Everything stops by BUDGET_S seconds (default
# 560); results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts engine,materials,water,tests "$@"
gpu_info "$OUT/gpu.txt"
MODEL=models/sevennet_0.pt
SI=systems/crystals/si_diamond_512.pdb
sha256sum $MODEL > "$OUT/models.sha256"
echo "$COMMIT" > "$OUT/commit.txt"
E="$BIN bench md --device cuda --warmup 5 --model $MODEL --timestep 1.0"

if part engine_si || part engine || part torchsim; then
  t 150 engine_si $E --structures $SI --replicas 1,8,32 --steps 30 --out "$OUT/engine_si"
fi
if part torchsim; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site
    for R in 1 8 32; do
      t 120 torchsim_si_R$R python3 benches/peers/torchsim_md.py --model $MODEL --structure $SI \
        --replicas $R --steps 30 --warmup 5 --device cuda --out "$OUT/torchsim_si_R$R.json"
    done
  else
    echo "no .whl/: TorchSim skipped" | tee -a "$OUT/skipped.txt"
  fi
fi
if part engine; then
  t 150 engine_ala2 $E --structures systems/peptides/alanine_dipeptide.pdb --replicas 1,64,1024 --steps 30 --out "$OUT/engine_ala2"
  t 120 engine_chignolin $E --structures systems/peptides/chignolin_extended.pdb --replicas 1,64 --steps 30 --out "$OUT/engine_chignolin"
fi
if part materials; then
  t 200 materials_nvt $BIN run configs/materials_nvt.toml --device cuda --steps ${MATERIALS_STEPS:-1000} \
    --output "$OUT/materials_nvt" --overwrite --quiet
  rm -f "$OUT"/materials_nvt/*.xtc
fi
if part water; then
  t 150 water_npt $BIN run configs/water_npt.toml --device cuda --steps ${WATER_STEPS:-1000} \
    --output "$OUT/water_npt" --overwrite --quiet
  rm -f "$OUT"/water_npt/*.xtc "$OUT"/water_npt/checkpoint*
fi
gpu_tests_part

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, sys
out = sys.argv[1]
for f in sorted(glob.glob(os.path.join(out, "engine_*", "*.json"))):
    for r in json.load(open(f))["rows"]:
        print(f"{os.path.basename(os.path.dirname(f)):18s} {os.path.basename(r.get('structure', '')):28s} "
              f"R={r['replicas']:5d}  {r['ms_per_step']:9.3f} ms/step  peak {r.get('peak_memory_mib') or r.get('peak_allocated_mib') or 0:.0f} MiB")
for f in sorted(glob.glob(os.path.join(out, "torchsim_*.json"))):
    r = json.load(open(f))
    print(f"{os.path.basename(f):47s} R={r['replicas']:5d}  {1000 / r['steps_per_second']:9.3f} ms/step (TorchSim)")
PY
pack
