#!/usr/bin/env bash
# High-throughput screening on one GPU (issue 15), side by side in one
# device session, FIRE to 0.05 eV/Å on the MOSES library
# (systems/screen/library.sdf.gz, `make screen-library`):
#   engine_ani2xt   mlff-md screen, the default model (ANI-2xt), whole library
#   engine_ani1x    mlff-md screen with models/ani1x.pt (H C N O records)
#   engine_ani2xt_jit  engine_ani2xt with TorchScript graph optimisation on
#   engine_ani1x_400k  engine_ani1x with batches of up to 400,000 atoms
#   single_ani2xt   the first SINGLE_N records one molecule per force call
#                   ([batch] max_molecules = 1: the one-at-a-time loop)
#   single_ani1x    the same with models/ani1x.pt
#   torchsim_ani1x  TorchSim's batched FIRE with in-flight autobatching on
#                   the same models/ani1x.pt (benches/torchsim_screen.py;
#                   wheels from .device/wheels, see that script)
#   torchsim_ani2xt the same on the default model, models/ani2xt_nl.pt (v2:
#                   TorchSim's own neighbour list every force call)
#   pairs_ani2xt    engine_ani2xt and torchsim_ani2xt alternated, ROUNDS
#                   pairs (default 2): engine_r1, torchsim_r1, engine_r2, ...;
#                   the summary gives each pair's ratio (the engine's own
#                   spread between runs was ~1.4x on an H100, 2026-12-05)
#   plain_first, conformers_ani2xt  the first SINGLE_N records minimised, and
#                   with conformer sampling (see there)
#   models          ms/step of ANI-2xt and AIMNet2 (issue 14): bench md on
#                   alanine dipeptide and chignolin at R = 1, 64, 1024
#
#   OUT=/tmp/res PARTS=engine_ani2xt,... bash benches/gpu_screen.sh target/release/mlff-md - COMMIT
# Carry target/release/mlff-md, systems/screen/library.sdf.gz, the models
# the parts use and .device/wheels (torchsim). Results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts engine_ani2xt,engine_ani1x,single_ani2xt,single_ani1x,torchsim_ani1x "$@"
gpu_info "$OUT/gpu.txt"
echo "$COMMIT" > "$OUT/commit.txt"
LIB=${LIB:-systems/screen/library.sdf.gz}
DEV=${DEV:-cuda}
SINGLE_N=${SINGLE_N:-100}
sha256sum models/*.pt $LIB > "$OUT/inputs.sha256" 2>/dev/null

# A screen config for MODEL with extra [batch] lines.
config() {
  local model=$1 name=$2; shift 2
  printf '[model]\npath = "%s"\ndevice = "%s"\n[batch]\n%s\n' "$ROOT/$model" "$DEV" "$*" > "$OUT/$name.toml"
  echo "$OUT/$name.toml"
}
# The first N records of the library (benches/sdf_records.py keeps each
# record's own text).
PYTHONPATH=benches python3 - "$LIB" "$SINGLE_N" "$OUT/first.sdf" <<'PY'
import sys
import sdf_records
lib, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "w") as f:
    for k, r in enumerate(sdf_records.read_records(lib)):
        if k == n:
            break
        f.write(r.text)
PY
S="$BIN screen --quiet --overwrite"
# The default model's screen (engine_ani2xt, pairs_ani2xt) and TorchSim's
# (torchsim_ani2xt, pairs_ani2xt; needs the install below) under a name
# suffix: logs NAME.log, results screen_ani2xt$1/ and torchsim_ani2xt$1.json.
engine_ani2xt() {
  t 300 engine_ani2xt$1 $S $LIB --config "$(config models/ani2xt_nl.pt ani2xt)" --output "$OUT/screen_ani2xt$1"
}
torchsim_ani2xt() {
  t 420 torchsim_ani2xt$1 env PYTHONPATH="$OUT/site" python3 benches/torchsim_screen.py \
    --library $LIB --model models/ani2xt_nl.pt --device $DEV --out "$OUT/torchsim_ani2xt$1.json"
}
if part engine_ani2xt; then
  engine_ani2xt ""
fi
if part engine_ani2xt_jit; then
  t 300 engine_ani2xt_jit env MLFF_MD_SCREEN_JIT_OPTIMIZE=1 $S $LIB --config "$(config models/ani2xt_nl.pt ani2xt_jit)" --output "$OUT/screen_ani2xt_jit"
fi
if part engine_ani1x_400k; then
  t 300 engine_ani1x_400k $S $LIB --config "$(config models/ani1x.pt ani1x_400k max_atoms = 400000)" --output "$OUT/screen_ani1x_400k"
fi
if part engine_ani1x; then
  t 300 engine_ani1x $S $LIB --config "$(config models/ani1x.pt ani1x)" --output "$OUT/screen_ani1x"
fi
if part single_ani2xt; then
  t 200 single_ani2xt $S "$OUT/first.sdf" --config "$(config models/ani2xt_nl.pt single2 max_molecules = 1)" --output "$OUT/single_ani2xt"
fi
if part single_ani1x; then
  t 200 single_ani1x $S "$OUT/first.sdf" --config "$(config models/ani1x.pt single1 max_molecules = 1)" --output "$OUT/single_ani1x"
fi
if part torchsim_ani1x || part torchsim_ani2xt || part pairs_ani2xt; then
  t 30 torchsim_install python3 -m pip install --no-index --no-deps --find-links .device/wheels \
    --target "$OUT/site" $(ls .device/wheels/*.whl)
fi
if part torchsim_ani1x; then
  t 300 torchsim_ani1x env PYTHONPATH="$OUT/site" python3 benches/torchsim_screen.py \
    --library $LIB --model models/ani1x.pt --device $DEV --out "$OUT/torchsim_ani1x.json"
fi
if part torchsim_ani2xt; then
  torchsim_ani2xt ""
fi
if part pairs_ani2xt; then
  for r in $(seq "${ROUNDS:-2}"); do
    engine_ani2xt _r$r
    torchsim_ani2xt _r$r
  done
fi
# Conformer sampling (issue 15 item 3) against plain minimisation on the same
# first SINGLE_N records (run with SINGLE_N=2000 PARTS=plain_first,conformers_ani2xt):
# [conformers] members CONF_MEMBERS (4), steps CONF_STEPS (200), frames CONF_FRAMES (2),
# temperature CONF_TEMPERATURE (300 K).
if part plain_first; then
  t 200 plain_first $S "$OUT/first.sdf" --config "$(config models/ani2xt_nl.pt plain_first)" --output "$OUT/plain_first"
fi
if part conformers_ani2xt; then
  printf '[model]\npath = "%s"\ndevice = "%s"\n[conformers]\nmembers = %s\nsteps = %s\nframes = %s\ntemperature = %s\n' \
    "$ROOT/models/ani2xt_nl.pt" "$DEV" "${CONF_MEMBERS:-4}" "${CONF_STEPS:-200}" "${CONF_FRAMES:-2}" "${CONF_TEMPERATURE:-300.0}" > "$OUT/conformers.toml"
  t 400 conformers_ani2xt $S "$OUT/first.sdf" --config "$OUT/conformers.toml" --output "$OUT/conformers_ani2xt"
fi
if part models; then
  for m in ani2xt_nl aimnet2_wb97m; do
    [ -f models/$m.pt ] || continue
    t 150 models_$m $BIN bench md --device cuda --model models/$m.pt --replicas 1,64,1024 --steps 50 \
      --structures systems/peptides/alanine_dipeptide.pdb,systems/peptides/chignolin_extended.pdb --out "$OUT/models_$m"
  done
fi
rm -rf "$OUT/site"
# The final structures and ledgers of 12,000 molecules are too large to
# bring back: keep the tables (gzipped) and summaries.
rm -f "$OUT"/*/minimized.sdf "$OUT"/*/ledger.jsonl
gzip -f "$OUT"/*/results.csv 2>/dev/null

PYTHONPATH=benches python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, sys
import screen_summary
out = sys.argv[1]
for f in sorted(glob.glob(os.path.join(out, "*", "summary.json"))):
    s = json.load(open(f))
    if "molecules_per_second" in s:
        print(f"{os.path.basename(os.path.dirname(f)):16s} {s['screened']:6d} molecules  {s['wall_seconds']:8.1f} s  "
              f"{s['molecules_per_second']:9.2f} molecules/s  {s['converged']} converged  {s['skipped']} skipped  "
              f"batch {s['batch_atoms']} atoms  {s['force_calls']} force calls")
        line = screen_summary.phase_line(s, 16)
        if line:
            print(line)
for f in sorted(glob.glob(os.path.join(out, "torchsim_*.json"))):
    s = json.load(open(f))
    print(f"{os.path.basename(f):16s} {s.get('molecules')} molecules  {s.get('wall_seconds')} s  "
          f"{s.get('molecules_per_second')} molecules/s (TorchSim, {s.get('model_interface')}, "
          f"{s.get('force_calls')} force calls, largest rows {s.get('max_row_capacity')})")
# pairs_ani2xt: engine / TorchSim molecules/s of each round: the loops alone,
# and with what comes before them that the user waits for too (mlff-md's
# set-up: library, model, memory probe; TorchSim's memory estimate)
for r in range(1, 100):
    e = os.path.join(out, f"screen_ani2xt_r{r}", "summary.json")
    ts = os.path.join(out, f"torchsim_ani2xt_r{r}.json")
    if not (os.path.exists(e) and os.path.exists(ts)):
        break
    m = json.load(open(e))
    s = json.load(open(ts))
    with_setup = m["screened"] / (m["wall_seconds"] + m.get("setup_seconds", 0.0))
    print(f"pair {r}: mlff-md / TorchSim {m['molecules_per_second'] / s['molecules_per_second']:.2f}x "
          f"({with_setup / s['molecules_per_second_including_estimate']:.2f}x with set-up and estimate)")
for f in sorted(glob.glob(os.path.join(out, "models_*", "*.json"))):
    for r in json.load(open(f)).get("rows", []):
        print(f"{os.path.basename(os.path.dirname(f)):16s} {os.path.basename(r.get('structure', '')):28s} "
              f"R={r['replicas']:5d}  {r['ms_per_step']:9.3f} ms/step  graph {r.get('cuda_graph')}")
PY
pack
