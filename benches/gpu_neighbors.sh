#!/usr/bin/env bash
# Neighbour-list models on one GPU (issue 12), in one device session so
# every ratio is side by side: mlff-md (bench md), the plain-PyTorch
# CUDA-graph reference (benches/reference_md.py) and TorchSim
# (benches/peers/torchsim_md.py, its own Langevin and neighbour list) on
#   alanine dipeptide  R = 1, 64, 1024, 4096   ani1x_static.pt and ani1x_nl.pt
#   chignolin (extended, 140 atoms) x 32       ani1x_nl.pt
#   water_3k (3,000 atoms, periodic) x 8       ani1x_nl.pt
# plus the GPU tests, where the engine's step time goes (Verlet vs Langevin,
# float32 vs float64 state) and a short water run with its O-O g(r).
#
#   OUT=/tmp/res PARTS=tests,engine,reference bash benches/gpu_neighbors.sh \
#       target/release/mlff-md target/release/deps/cuda_graphs-HASH COMMIT
# PARTS (comma-separated; run in this order): tests, engine, reference,
# torchsim, runs, repeats (engine and reference at R = 1 and 64, both models,
# alternated three times: the spread of each figure), profile (the
# reference's step, --profile: summed kernel time per part of the step).
# Carry: target/release/mlff-md (engine, runs), the test binary (tests),
# models/ani1x_static.pt and models/ani1x_nl.pt, .whl (torchsim: TorchSim
# wheels, benches/peers/README.md). Everything stops by
# BUDGET_S seconds (default 560) after the start: each command gets at most
# its own limit and what is left of the budget, and is skipped when less
# than 15 s are left; results written so far are kept. Results:
# $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts tests,engine,reference "$@"
gpu_info "$OUT/gpu.txt"
ALA=systems/peptides/alanine_dipeptide.pdb
CHIG=systems/peptides/chignolin_extended.pdb
WATER=systems/water/water_3k.pdb
STATIC=models/ani1x_static.pt
NL=models/ani1x_nl.pt
for f in $NL $ALA $CHIG $WATER; do [ -e "$f" ] || { echo "missing $f (carry it)"; exit 2; }; done
sha256sum models/*.pt > "$OUT/models.sha256"
echo "$COMMIT" > "$OUT/commit.txt"

gpu_tests_part

if part engine; then
  E="$BIN bench md --device cuda --warmup 10"
  # alanine dipeptide: static vs neighbour-list export, graphed
  t 100 engine_ala2_static $E --model $STATIC --structures $ALA --replicas 1,64,1024,4096 \
    --cuda-graphs on --steps 200 --out "$OUT/engine_ala2_static"
  t 100 engine_ala2_nl $E --model $NL --structures $ALA --replicas 1,64,1024,4096 \
    --cuda-graphs on --steps 200 --out "$OUT/engine_ala2_nl"
  t 60 engine_chignolin_nl $E --model $NL --structures $CHIG --replicas 32 \
    --cuda-graphs on --steps 200 --out "$OUT/engine_chignolin_nl"
  t 60 engine_water3k_nl $E --model $NL --structures $WATER --replicas 8 \
    --cuda-graphs on --steps 100 --out "$OUT/engine_water3k_nl"
  # where the step's time goes: no thermostat noise, then a float32 state
  t 60 engine_ala2_static_verlet $E --model $STATIC --structures $ALA --replicas 1,64,1024 \
    --cuda-graphs on --steps 200 --integrator verlet --out "$OUT/engine_ala2_static_verlet"
  t 60 engine_ala2_static_f32 $E --model $STATIC --structures $ALA --replicas 1,64,1024 \
    --cuda-graphs on --steps 200 --precision float32 --out "$OUT/engine_ala2_static_f32"
fi

if part reference; then
  REF="python3 benches/reference_md.py --device cuda"
  # plain-PyTorch reference, CUDA graph on (one process per model/system; all R in it)
  t 90 ref_ala2_static $REF --graph on --model $STATIC --structure $ALA --replicas 1,64,1024,4096 \
    --steps 200 --warmup 10 --out "$OUT/ref_ala2_static.json"
  t 90 ref_ala2_nl $REF --graph on --model $NL --structure $ALA --replicas 1,64,1024,4096 \
    --steps 200 --warmup 10 --out "$OUT/ref_ala2_nl.json"
  t 45 ref_chignolin_nl $REF --graph on --model $NL --structure $CHIG --replicas 32 \
    --steps 200 --warmup 10 --out "$OUT/ref_chignolin_nl.json"
  t 45 ref_water3k_nl $REF --graph on --model $NL --structure $WATER --replicas 8 \
    --steps 100 --warmup 10 --out "$OUT/ref_water3k_nl.json"
fi

# --- TorchSim 0.6.2: its nvt_langevin, its neighbour list for v2 (one process per R)
if part torchsim; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site
    TS="python3 benches/peers/torchsim_md.py --device cuda"
    for r in 1 64 1024; do
      t 45 ts_ala2_nl_r$r $TS --model $NL --structure $ALA --replicas $r --steps 100 --warmup 10 --out "$OUT/ts_ala2_nl_r$r.json"
    done
    t 45 ts_chignolin_nl_r32 $TS --model $NL --structure $CHIG --replicas 32 --steps 100 --warmup 10 --out "$OUT/ts_chignolin_nl_r32.json"
    t 45 ts_water3k_nl_r8 $TS --model $NL --structure $WATER --replicas 8 --steps 50 --warmup 5 --out "$OUT/ts_water3k_nl_r8.json"
    # the largest batch last: the first to go when the budget runs out
    t 60 ts_ala2_nl_r4096 $TS --model $NL --structure $ALA --replicas 4096 --steps 50 --warmup 5 --out "$OUT/ts_ala2_nl_r4096.json"
  else
    echo "no .whl/: TorchSim skipped" | tee -a "$OUT/skipped.txt"
  fi
fi

if part runs; then
  # Water: configs/water_box.toml with 2 members, XYZ frames every 0.1 ps
  # and 2 ps (after its 500 FIRE iterations), for the O-O g(r) past 0.5 ps.
  sed -e 's/trajectory_format = "xtc"/trajectory_format = "xyz"/' -e 's/^members = 8/members = 2/' \
    configs/water_box.toml > configs/gpu_water.toml
  t 150 run_water "$BIN" run configs/gpu_water.toml --steps 4000 --output "$OUT/water" --overwrite
  t 60 water_gofr python3 benches/analyze_water.py "$OUT/water" --cell 31.079 --skip-ps 0.5 \
    --interval 200 --out "$OUT/water_gofr.json"
  cp "$OUT/water/summary.json" "$OUT/water_summary.json" 2>/dev/null
  rm -rf "$OUT/water"
fi

if part repeats; then
  for round in 1 2 3; do
    for m in static nl; do
      t 40 rep${round}_engine_ala2_$m $BIN bench md --device cuda --warmup 10 --model models/ani1x_$m.pt \
        --structures $ALA --replicas 1,64 --cuda-graphs on --steps 500 --out "$OUT/rep${round}_engine_ala2_$m"
      t 40 rep${round}_ref_ala2_$m python3 benches/reference_md.py --device cuda --graph on \
        --model models/ani1x_$m.pt --structure $ALA --replicas 1,64 --steps 500 --warmup 10 \
        --out "$OUT/rep${round}_ref_ala2_$m.json"
    done
  done
fi

if part profile; then
  P="python3 benches/reference_md.py --device cuda --graph on --steps 100 --warmup 10 --profile 5"
  t 60 prof_ala2_static $P --model $STATIC --structure $ALA --replicas 1,1024 --out "$OUT/prof_ala2_static.json"
  t 90 prof_ala2_nl $P --model $NL --structure $ALA --replicas 1,1024,4096 --out "$OUT/prof_ala2_nl.json"
  t 60 prof_chignolin_nl $P --model $NL --structure $CHIG --replicas 32 --out "$OUT/prof_chignolin_nl.json"
fi

# one line per result: engine, model, structure, R, ms/step
python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    d = json.load(open(f))
    rows = d.get("runs") or [d]
    for r in rows:
        if "error" in r:
            print(f"{os.path.basename(f):32s} R={r['replicas']:5d}  {r['error']}")
            continue
        ms = r.get("ms_per_step") or 1e3 / r["steps_per_second"]
        extra = f" graph {d['graph']}" if "graph" in d else ""
        print(f"{os.path.basename(f):32s} R={r['replicas']:5d}  {ms:9.3f} ms/step  "
              f"{r['replica_steps_per_second']:12.0f} replica-steps/s{extra}")
        if "profile" in r:
            p = r["profile"]
            print(f"{'':32s}   kernels {p['summed_kernel_ms_per_step']:.3f} ms, {p['kernels_per_step']:.0f} per step: "
                  + ", ".join(f"{q['name']} {q['kernel_ms']:.3f} ms/{q['kernels']:.0f}" for q in p["parts"]))
EOF
pack
