#!/usr/bin/env bash
# Issue 7 on one GPU, in one session so every ratio is side by side:
#  1. the GPU tests of graph replay (tests/cuda_graphs.rs, --ignored);
#  2. mlff-md bench md, ANI-1x static export, eager vs CUDA graph, and the
#     dynamic export eagerly;
#  3. TorchSim (batched Langevin) on the same molecule and R;
#  4. summed kernel time per step from torch.profiler (benches/profile_step.py).
#
#   OUT=/tmp/res bash benches/gpu_cuda_graphs.sh target/release/mlff-md [test binary]
# The test binary is target/release/deps/cuda_graphs-*; it has this
# checkout's absolute path compiled in, so the script links it if missing.
set -uo pipefail
BIN=$(realpath "${1:-target/release/mlff-md}")
TESTBIN=${2:-}
FINAL=${OUT:?set OUT to a results directory}
OUT=$(mktemp -d)
. "$(dirname "$0")/gpu_env.sh"
gpu_info "$OUT/gpu.txt"
S=systems/peptides/alanine_dipeptide.pdb
R=${REPLICAS:-1,64,1024,4096}

if [ -n "$TESTBIN" ]; then
  BUILT=${BUILT_ROOT:-/work/main}
  [ -e "$BUILT" ] || { mkdir -p "$(dirname "$BUILT")" && ln -s "$ROOT" "$BUILT"; }
  echo "== GPU tests"
  timeout 300 "$TESTBIN" --ignored --test-threads=1 --nocapture 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "^test |eager|REMD|result"
fi

echo "== bench md: static ANI-1x, eager vs graph"
"$BIN" bench md --device cuda --model models/ani1x_static.pt --structures $S --replicas $R \
  --cuda-graphs off,on --steps ${MD_STEPS:-200} --warmup 10 --out "$OUT" 2>&1 | tee "$OUT/md_static.log"
echo "== bench md: dynamic ANI-1x (eager)"
mkdir -p "$OUT/dynamic"
"$BIN" bench md --device cuda --model models/ani1x.pt --structures $S --replicas 1,64,1024 \
  --cuda-graphs off --steps 100 --warmup 10 --out "$OUT/dynamic" 2>&1 | tee "$OUT/md_dynamic.log"

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  echo "== TorchSim"
  for r in 1 64 1024; do
    timeout 200 python3 benches/peers/torchsim_md.py --model models/ani1x.pt --structure $S --replicas $r \
      --steps 100 --warmup 10 --device cuda --out "$OUT/peer_torchsim_r$r.json" 2>&1 | tail -2
  done
fi

echo "== profiler: summed kernel time per step"
python3 benches/profile_step.py --model models/ani1x_static.pt --structure systems/peptides/alanine_dipeptide.xyz \
  --replicas 1,64,1024 --out "$OUT/profile_step.json" 2>&1 | tail -4
ls -la "$OUT"
tar czf "$FINAL/results.tgz" -C "$OUT" .
