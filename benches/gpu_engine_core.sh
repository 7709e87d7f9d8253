#!/usr/bin/env bash
# Engine-core throughput on a GPU (device tool): Langevin MD of R = 1, 64, 1024
# members of hexane (20 atoms) with the committed TorchScript test model,
# one batched forward + backward per step. Writes one summary.json per R and
# engine_core.json under $OUT.
#
#   OUT=/tmp/res bash benches/gpu_engine_core.sh [target/release/mlff-md]
set -euo pipefail
BIN=$(realpath "${1:-target/release/mlff-md}")
OUT=${OUT:?set OUT to a results directory}
. "$(dirname "$0")/gpu_env.sh"
WORK=$(mktemp -d)
gpu_info "$OUT/gpu.txt"

# Same first-step energies on CPU and CUDA (float32 model, 64 members).
cat > "$WORK/check.toml" <<TOML
[system]
structure = "$ROOT/systems/hexane.pdb"
[model]
path = "$ROOT/models/morse_test.pt"
[integrator]
kind = "langevin"
timestep = 0.25
temperature = 300.0
[ensemble]
members = 64
[run]
steps = 1
TOML
"$BIN" validate "$WORK/check.toml" --device cpu | tee "$OUT/validate_cpu.txt"
"$BIN" validate "$WORK/check.toml" --device cuda | tee "$OUT/validate_cuda.txt"

for spec in "1 4000" "64 4000" "1024 2000"; do
  set -- $spec
  R=$1; STEPS=$2
  cat > "$WORK/r$R.toml" <<TOML
[system]
structure = "$ROOT/systems/hexane.pdb"
[model]
path = "$ROOT/models/morse_test.pt"
dtype = "float32"
device = "cuda"
[integrator]
kind = "langevin"
timestep = 0.25
temperature = 300.0
friction = 1.0
[ensemble]
members = $R
seed = 1
[run]
steps = $STEPS
[output]
directory = "$WORK/out_r$R"
trajectory_interval = 0
observables_interval = 100
TOML
  # Warm-up run (CUDA context, kernel caches), then the measured run.
  "$BIN" run "$WORK/r$R.toml" --quiet --steps 200 --output "$WORK/warm_r$R"
  "$BIN" run "$WORK/r$R.toml" --quiet
  cp "$WORK/out_r$R/summary.json" "$OUT/summary_r$R.json"
done

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = []
for r in (1, 64, 1024):
    s = json.load(open(os.path.join(out, f"summary_r{r}.json")))
    rows.append({k: s[k] for k in ("members", "atoms_per_member", "steps", "wall_seconds",
                                    "steps_per_second", "member_steps_per_second",
                                    "ns_per_day", "aggregate_ns_per_day", "mean_temperature_k", "device")})
gpu = open(os.path.join(out, "gpu.txt")).read().strip()
json.dump({"gpu": gpu, "model": "models/morse_test.pt (float32)", "system": "hexane, 20 atoms",
           "integrator": "BAOAB Langevin, dt 0.25 fs, float64 state", "runs": rows},
          open(os.path.join(out, "engine_core.json"), "w"), indent=2)
print("| R | steps/s | member-steps/s | ns/day per member | aggregate ns/day | <T> K |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['members']} | {r['steps_per_second']:.1f} | {r['member_steps_per_second']:.0f} | "
          f"{r['ns_per_day']:.2f} | {r['aggregate_ns_per_day']:.1f} | {r['mean_temperature_k']:.1f} |")
PY
