#!/usr/bin/env bash
# Replica exchange of alanine dipeptide with ANI-1x on a GPU (device tool):
# 16 temperatures 300-600 K x 8 independent ladders = 128 replicas in one
# batch, so the 300 K ensemble gets 8 ladders' worth of sampling per step.
# Writes only the demultiplexed trajectories (XYZ), packs the 300 K ones,
# the observables and the summary into $OUT/remd.tgz for
# benches/ramachandran.py.
#
#   OUT=/tmp/res bash benches/gpu_remd_ramachandran.sh [target/release/mlff-md]
set -uo pipefail
BIN=$(realpath "${1:-target/release/mlff-md}")
FINAL=${OUT:?set OUT to a results directory}
. "$(dirname "$0")/gpu_env.sh"
RES=$(mktemp -d)
STEPS=${STEPS:-26000}
gpu_info "$RES/gpu.txt"
cat > configs/_remd_rama.toml <<TOML
[system]
structure = "../systems/peptides/alanine_dipeptide.pdb"
[model]
path = "../models/ani1x.pt"
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
scheme = "neighbor"
members_per_temperature = 8
[ensemble]
seed = 11
[run]
steps = $STEPS
[output]
directory = "$RES/remd"
trajectory_format = "xyz"
trajectory_interval = 50
trajectory_members = []
observables_interval = 500
checkpoint_interval = 0
TOML
# SIGTERM before the device limit: mlff-md flushes and checkpoints on it.
timeout -s TERM ${LIMIT:-540} "$BIN" run configs/_remd_rama.toml 2>&1 | grep -v "^step" | tail -30
rm -f configs/_remd_rama.toml
cd "$RES/remd" && tar czf "$FINAL/remd.tgz" summary.json observables.h5 topology.pdb temperature_00_*K_ladder*.xyz ../gpu.txt 2>/dev/null || tar czf "$FINAL/remd.tgz" observables.h5 topology.pdb temperature_00_*K_ladder*.xyz ../gpu.txt
ls -la "$FINAL"
