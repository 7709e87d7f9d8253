#!/usr/bin/env bash
# Replica-exchange overhead on a GPU (device tool): R = 8, 32, 128 replicas of
# hexane (20 atoms), geometric ladder 300-600 K, neighbour exchanges every 100
# steps, against a plain Langevin ensemble of the same R in the same session.
#
#   OUT=/tmp/res bash benches/gpu_replica_exchange.sh [target/release/mlff-md]
set -euo pipefail
BIN=$(realpath "${1:-target/release/mlff-md}")
OUT=${OUT:?set OUT to a results directory}
. "$(dirname "$0")/gpu_env.sh"
WORK=$(mktemp -d)
gpu_info "$OUT/gpu.txt"
STEPS=${STEPS:-4000}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu for a quick local check of the script

common() {
  cat <<TOML
[system]
structure = "$ROOT/systems/hexane.pdb"
[model]
path = "$ROOT/models/morse_test.pt"
dtype = "float32"
device = "$DEVICE"
[run]
steps = $STEPS
[output]
trajectory_interval = 0
observables_interval = 100
TOML
}

for R in 8 32 128; do
  { common; cat <<TOML
[integrator]
kind = "langevin"
timestep = 0.25
friction = 5.0
[replica_exchange]
t_min = 300.0
t_max = 600.0
n_replicas = $R
exchange_interval = 100
[ensemble]
seed = 1
TOML
  } > "$WORK/rex_$R.toml"
  { common; cat <<TOML
[integrator]
kind = "langevin"
timestep = 0.25
friction = 5.0
temperature = 300.0
[ensemble]
members = $R
seed = 1
TOML
  } > "$WORK/plain_$R.toml"
  for kind in plain rex; do
    "$BIN" run "$WORK/${kind}_$R.toml" --quiet --steps 200 --output "$WORK/warm_${kind}_$R"
    "$BIN" run "$WORK/${kind}_$R.toml" --quiet --output "$WORK/out_${kind}_$R"
    cp "$WORK/out_${kind}_$R/summary.json" "$OUT/summary_${kind}_r$R.json"
  done
done

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for r in (8, 32, 128):
    plain = json.load(open(os.path.join(out, f"summary_plain_r{r}.json")))
    rex = json.load(open(os.path.join(out, f"summary_rex_r{r}.json")))
    acc = rex["replica_exchange"]["neighbor_acceptance"]
    rows.append({
        "replicas": r,
        "steps": rex["steps"],
        "plain_steps_per_second": plain["steps_per_second"],
        "rex_steps_per_second": rex["steps_per_second"],
        "rex_over_plain": rex["steps_per_second"] / plain["steps_per_second"],
        "exchange_seconds": rex["exchange_seconds"],
        "rex_wall_seconds": rex["wall_seconds"],
        "exchange_overhead_percent": 100 * rex["exchange_seconds"] / rex["wall_seconds"],
        "exchanges": rex["replica_exchange"]["exchanges"],
        "mean_neighbor_acceptance": sum(acc) / len(acc),
        "min_neighbor_acceptance": min(acc),
        "round_trips": sum(rex["replica_exchange"]["round_trips_per_replica"]),
    })
gpu = open(os.path.join(out, "gpu.txt")).read().strip()
json.dump({"gpu": gpu, "model": "models/morse_test.pt (float32)", "system": "hexane, 20 atoms",
           "integrator": "BAOAB Langevin, dt 0.25 fs, friction 5/ps, float64 state",
           "replica_exchange": "geometric 300-600 K, neighbour scheme, every 100 steps",
           "runs": rows}, open(os.path.join(out, "replica_exchange.json"), "w"), indent=2)
print("| R | plain steps/s | REMD steps/s | REMD/plain | exchange time / wall | mean acceptance |")
print("|---|---|---|---|---|---|")
for x in rows:
    print(f"| {x['replicas']} | {x['plain_steps_per_second']:.1f} | {x['rex_steps_per_second']:.1f} | "
          f"{x['rex_over_plain']:.3f} | {x['exchange_overhead_percent']:.3f} % | {x['mean_neighbor_acceptance']:.2f} |")
PY
