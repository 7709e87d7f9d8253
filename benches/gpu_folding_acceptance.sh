#!/usr/bin/env bash
# Exchange acceptance of chignolin in water x 32 replicas (issue 13):
# configs/peptide_folding_water.toml as shipped (FIRE minimisation, NPT at
# 1 bar with the Monte Carlo barostat, T-REMD 300-420 K, exchanges every
# 200 steps) but with its 1 ns equilibration cut to EQUIL_STEPS (default
# 2,000 = 1 ps), observables every 50 steps and no pressure evaluations,
# run in chunks of one device call each (chunk_run in gpu_env.sh).
#
#   OUT=/tmp/res bash benches/gpu_folding_acceptance.sh target/release/mlff-md
#   (then copy $OUT/folding_water to out/folding_acceptance and run again)
#
# benches/analyze_acceptance.py reads the acceptance per neighbour pair from
# the returned observables.h5 and exchanges.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts acceptance "$@"
chunk_tree folding_acceptance models/ani1x_nl.pt systems/solvated/chignolin_water.pdb
sed -e "s/^steps = 2000000 .*/steps = ${EQUIL_STEPS:-2000}/" \
  -e 's/^observables_interval = 200$/observables_interval = 50/' \
  -e 's/^checkpoint_interval = 200000$/checkpoint_interval = 2000/' \
  -e '/^\[output\]/a pressure = false' \
  configs/peptide_folding_water.toml > "$W/configs/peptide_folding_water.toml"
diff configs/peptide_folding_water.toml "$W/configs/peptide_folding_water.toml" > "$FINAL/config.diff"
chunk_run folding_water "$W/configs/peptide_folding_water.toml" "${RUNDIR:-out/folding_acceptance}"
