#!/usr/bin/env bash
# MPI ranks sharing one GPU (issue 17, item 5): the shipped replica-exchange
# config (alanine dipeptide, 16 replicas, ANI-1x static, CUDA graphs) and a
# 256-replica version of it (16 members per temperature), each run as one
# process and as 2 ranks on the same GPU, 2,000 steps; ms/step per rank
# (the ranks step in lockstep) against one process with every member, and
# whether the exchange histories agree.
#
#   OUT=/tmp/res bash benches/gpu_mpi.sh .device/mlff-md "" COMMIT [OMPI_TGZ]
# The engine must be built with `--features mpi`. Open MPI comes from the
# machine if it has `mpirun`, else from OMPI_TGZ (a relocatable bundle of
# this machine's Open MPI: benches/pack_openmpi.sh). Carry the engine,
# models/ani1x_static.pt and the bundle; results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts runs "$@"
BUNDLE=${4:-}
gpu_info "$OUT/gpu.txt"
echo "$COMMIT" > "$OUT/commit.txt"
sha256sum models/ani1x_static.pt > "$OUT/models.sha256"
if ! command -v mpirun > /dev/null; then
  [ -n "$BUNDLE" ] || { echo "no mpirun on this machine and no Open MPI bundle given"; pack; exit 1; }
  OMPI=/tmp/mlff_md_ompi
  rm -rf "$OMPI" && mkdir -p "$OMPI" && tar -xzf "$(cd "$CALLER_DIR" && realpath "$BUNDLE")" -C "$OMPI"
  export OPAL_PREFIX=$OMPI/usr PATH=$OMPI/usr/bin:$PATH LD_LIBRARY_PATH=$OMPI/lib:$LD_LIBRARY_PATH
  echo "Open MPI from the carried bundle" | tee "$OUT/mpi.txt"
else
  echo "Open MPI of the machine: $(command -v mpirun)" | tee "$OUT/mpi.txt"
fi
mpirun --version 2>&1 | head -1 | tee -a "$OUT/mpi.txt"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mca_base_component_show_load_errors=0
MPI="mpirun --oversubscribe --bind-to none -x LD_LIBRARY_PATH"
CFG=configs/replica_exchange.toml
sed 's/^members_per_temperature = 1/members_per_temperature = 16/' $CFG > configs/remd_256.gpu.toml
RUN="run --steps 2000 --device cuda"
for c in replica_exchange:$CFG remd_256:configs/remd_256.gpu.toml; do
  name=${c%%:*} cfg=${c#*:}
  if part runs; then
    t 150 "${name}_1proc" $BIN $RUN "$cfg" --output /tmp/mlff_md_mpi/${name}_1 --overwrite
    t 150 "${name}_2ranks" $MPI -np 2 $BIN $RUN "$cfg" --output /tmp/mlff_md_mpi/${name}_2 --overwrite
    for k in 1 2; do
      d=/tmp/mlff_md_mpi/${name}_$k
      [ -e $d/summary.json ] && cp $d/summary.json "$OUT/${name}_${k}_summary.json"
    done
  fi
done
python3 - "$OUT" /tmp/mlff_md_mpi <<'PY' | tee "$OUT/table.md"
import json, sys, os
import h5py
out, runs = sys.argv[1], sys.argv[2]
print("| config | processes | members | ms/step (per rank) | replica-steps/s | exchange history as 1 process |")
print("|---|---|---|---|---|---|")
for name in ("replica_exchange", "remd_256"):
    ref = None
    for k in (1, 2):
        p = f"{out}/{name}_{k}_summary.json"
        if not os.path.exists(p):
            print(f"| {name} | {k} | | missing | | |")
            continue
        s = json.load(open(p))
        with h5py.File(f"{runs}/{name}_{k}/observables.h5") as h:
            hist = h["replica_exchange/state_of_replica"][()]
        same = "" if k == 1 else ("identical" if ref is not None and ref.shape == hist.shape and (ref == hist).all() else "differs")
        if k == 1:
            ref = hist
        print(f"| {name} | {k} | {s['members']} | {1000 / s['steps_per_second']:.3f} | {s['member_steps_per_second']:.0f} | {same} |")
PY
pack
