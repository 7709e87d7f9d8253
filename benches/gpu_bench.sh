#!/usr/bin/env bash
# The full benchmark on a GPU (device tool), all in one session so ratios are
# side by side: mlff-md bench forces, mlff-md bench md, and the peers (ASE one
# replica at a time, TorchSim batched) on the same model, molecule and device.
#
#   OUT=/tmp/res bash benches/gpu_bench.sh [target/release/mlff-md]
# Peers need the wheels in .whl (see benches/peers/README.md).
set -uo pipefail
BIN=$(realpath "${1:-target/release/mlff-md}")
FINAL=${OUT:?set OUT to a results directory}
# Everything goes to one folder, packed into $OUT/results.tgz at the end
# (the device tool returns at most 8 files).
OUT=$(mktemp -d)
. "$(dirname "$0")/gpu_env.sh"
gpu_info "$OUT/gpu.txt"

echo "== mlff-md bench forces"
"$BIN" bench forces --device cuda --out "$OUT" 2>&1 | tee "$OUT/forces.log"
echo "== mlff-md bench md"
"$BIN" bench md --device cuda --steps ${MD_STEPS:-100} --out "$OUT" 2>&1 | tee "$OUT/md.log"

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  S=systems/peptides/alanine_dipeptide.pdb
  M=models/ani1x.pt
  echo "== peers"
  for R in 64 1024; do
    timeout 240 python3 benches/peers/torchsim_md.py --model $M --structure $S --replicas $R --steps 100 --warmup 10 --device cuda --out "$OUT/peer_torchsim_r$R.json" 2>&1 | tail -3
  done
  timeout 240 python3 benches/peers/ase_md.py --model $M --structure $S --replicas 256 --steps 4 --warmup 1 --device cuda --out "$OUT/peer_ase_r256.json" 2>&1 | tail -3
  # mlff-md on exactly the same runs, in the same session.
  "$BIN" bench md --device cuda --structures $S --replicas 64,256,1024 --steps 100 --warmup 10 --out "$OUT/same" 2>&1 | tail -5
fi
ls -la "$OUT"
tar czf "$FINAL/results.tgz" -C "$OUT" .
