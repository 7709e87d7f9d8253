#!/usr/bin/env bash
# `mlff-md report` on a real replica-exchange run (issue 16): alanine
# dipeptide with ANI-1x (models/ani1x_static.pt, as configs/replica_exchange.toml),
# 16 temperatures 300-600 K x 8 ladders = 128 replicas in one batch on the
# GPU, 10 ps of equilibration and STEPS (default 300,000: 150 ps) in all;
# then the report with the starting structure as the RMSD reference, timed.
# Demultiplexed trajectories only (trajectory_members = []).
#
#   OUT=/tmp/res bash benches/gpu_report.sh [target/release/mlff-md [COMMIT]]
# Carry target/release/mlff-md and models/ani1x_static.pt. Results:
# $OUT/results.tgz (run directory with report/, logs, gpu.txt).
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts run "$@"
STEPS=${STEPS:-300000}
gpu_info "$OUT/gpu.txt"
echo "$COMMIT" > "$OUT/commit.txt"
cat > "$OUT/ala2_remd.toml" <<TOML
[system]
structure = "$ROOT/systems/peptides/alanine_dipeptide.pdb"
[model]
path = "$ROOT/models/ani1x_static.pt"
device = "cuda"
[minimize]
max_force = 0.05
[integrator]
kind = "langevin"
timestep = 0.5
friction = 2.0
[replica_exchange]
t_min = 300.0
t_max = 600.0
n_replicas = 16
exchange_interval = 100
members_per_temperature = 8
[ensemble]
seed = 2026
[equilibration]
steps = 20000
[run]
steps = $STEPS
[output]
directory = "$OUT/ala2_remd"
trajectory_format = "xtc"
trajectory_interval = 500
trajectory_members = []
observables_interval = 100
checkpoint_interval = 100000
TOML
if part run; then
  t 420 run "$BIN" run "$OUT/ala2_remd.toml" --quiet
  t 120 report bash -c "time '$BIN' report '$OUT/ala2_remd' --reference '$ROOT/systems/peptides/alanine_dipeptide.pdb'"
fi
pack
