#!/usr/bin/env bash
# The equilibrium density of ANI-1x water (issue 13): configs/water_npt.toml
# (NPT, 300 K, 1 bar) with MEMBERS (default 8) members and no trajectory,
# run towards TARGET_STEPS (default 200,000 = 100 ps) in chunks, one per
# device call (chunk_tree and chunk_run in gpu_env.sh). Each call starts the
# run, or resumes it from the run directory the caller carried (RUNDIR,
# default out/water_density), steps
# until BUDGET_S (default 570) is nearly spent, stops it with SIGINT (the
# engine writes a checkpoint and exits 130) and returns the run directory
# as $OUT/water_density, to be carried into the next call.
#
#   OUT=/tmp/res bash benches/gpu_water_density.sh target/release/mlff-md
#   (then copy $OUT/water_density to out/water_density and run again)
#
# The run works in a fixed scratch directory, so the paths stored in its
# checkpoint are the same in every call whatever the repository's path.
# benches/analyze_npt.py reads the density from observables.h5 afterwards.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts water "$@"
RUN=${RUNDIR:-out/water_density}
chunk_tree water_density models/ani1x_nl.pt systems/water/water_1k.pdb
sed -e "s/^members = 16/members = ${MEMBERS:-8}/" -e 's/^trajectory_interval = 1000/trajectory_interval = 0/' \
  -e "s/^steps = 100000 .*/steps = ${TARGET_STEPS:-200000}/" configs/water_npt.toml > "$W/configs/water_npt.toml"
chunk_run water_density "$W/configs/water_npt.toml" "$RUN"
