#!/usr/bin/env bash
# Two exports of one model (A: before, B: after a change of export) on one
# GPU, side by side in one device session: a model result, not an engine
# result (the same engine binary and the same reference script run both).
#   md        bench md with A and B alternated (A, B, A, B; ROUNDS pairs,
#             default 2): alanine dipeptide R = ALA_R (default 1,64,1024,4096)
#             and chignolin x 32
#   reference benches/reference_md.py with A, then B (the same systems)
#   profile   the reference's step with B under --profile (kernels per part)
#   screen    mlff-md screen of LIB (default the library) with SCREEN_A,
#             SCREEN_B and, if set, SCREEN_C (ANI-2xt files) in turn,
#             SCREEN_ROUNDS rounds (default 1), FIRE to 0.05 eV/A as
#             gpu_screen.sh
#
#   OUT=/tmp/res A=.cache/old/ani1x_nl.pt B=models/ani1x_nl.pt PARTS=md,reference,profile \
#       bash benches/gpu_model_ab.sh target/release/mlff-md - COMMIT
# Carry the binary, both files (an ignored path for A, e.g. .cache/) and, for
# screen, systems/screen/library.sdf.gz. Results: $OUT/results.tgz.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh"
parts md,reference,profile "$@"
gpu_info "$OUT/gpu.txt"
echo "$COMMIT" > "$OUT/commit.txt"
: "${A:?A: the first model file}" "${B:?B: the second model file}"
sha256sum "$A" "$B" ${SCREEN_A:-} ${SCREEN_B:-} ${SCREEN_C:-} > "$OUT/models.sha256"
ALA=systems/peptides/alanine_dipeptide.pdb
CHIG=systems/peptides/chignolin_extended.pdb

if part md; then
  for round in $(seq "${ROUNDS:-2}"); do
    for v in A B; do
      m=${!v}
      t 90 md${round}_${v}_ala2 $BIN bench md --device cuda --warmup 10 --model "$m" --structures $ALA \
        --replicas "${ALA_R:-1,64,1024,4096}" --cuda-graphs on --steps 200 --out "$OUT/md${round}_${v}_ala2"
      t 40 md${round}_${v}_chignolin $BIN bench md --device cuda --warmup 10 --model "$m" --structures $CHIG \
        --replicas 32 --cuda-graphs on --steps 200 --out "$OUT/md${round}_${v}_chignolin"
    done
  done
fi

if part reference; then
  for v in A B; do
    m=${!v}
    R="python3 benches/reference_md.py --device cuda --graph on --steps 200 --warmup 10 --model $m"
    t 90 ref_${v}_ala2 $R --structure $ALA --replicas "${ALA_R:-1,64,1024,4096}" --out "$OUT/ref_${v}_ala2.json"
    t 45 ref_${v}_chignolin $R --structure $CHIG --replicas 32 --out "$OUT/ref_${v}_chignolin.json"
  done
fi

if part profile; then
  P="python3 benches/reference_md.py --device cuda --graph on --steps 100 --warmup 10 --profile 5 --model $B"
  t 90 prof_B_ala2 $P --structure $ALA --replicas 1,4096 --out "$OUT/prof_B_ala2.json"
  t 60 prof_B_chignolin $P --structure $CHIG --replicas 32 --out "$OUT/prof_B_chignolin.json"
fi

if part screen; then
  : "${SCREEN_A:?SCREEN_A: the first ANI-2xt file}" "${SCREEN_B:?SCREEN_B: the second}"
  LIB=${LIB:-systems/screen/library.sdf.gz}
  sha256sum "$LIB" > "$OUT/inputs.sha256"
  # SCREEN_ROUNDS rounds of A, B (and C), each run named after its file
  # variable, with _rN after it when there is more than one round.
  for round in $(seq "${SCREEN_ROUNDS:-1}"); do
    for v in SCREEN_A SCREEN_B ${SCREEN_C:+SCREEN_C}; do
      name=$v; [ "${SCREEN_ROUNDS:-1}" -gt 1 ] && name=${v}_r$round
      printf '[model]\npath = "%s"\ndevice = "cuda"\n' "$ROOT/${!v}" > "$OUT/$name.toml"
      t 250 $name "$BIN" screen --quiet --overwrite "$LIB" --config "$OUT/$name.toml" --output "$OUT/$name"
      rm -f "$OUT/$name/minimized.sdf" "$OUT/$name/ledger.jsonl"
      gzip -f "$OUT/$name/results.csv" 2>/dev/null
    done
  done
fi

PYTHONPATH=benches python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, sys
import screen_summary
out = sys.argv[1]
for f in sorted(glob.glob(os.path.join(out, "md*", "*.json"))):
    for r in json.load(open(f)).get("rows", []):
        print(f"{os.path.basename(os.path.dirname(f)):20s} R={r['replicas']:5d}  {r['ms_per_step']:9.3f} ms/step")
for f in sorted(glob.glob(os.path.join(out, "ref_*.json")) + glob.glob(os.path.join(out, "prof_*.json"))):
    for r in json.load(open(f)).get("runs", []):
        if "error" in r:
            print(f"{os.path.basename(f):20s} R={r['replicas']:5d}  {r['error']}")
            continue
        print(f"{os.path.basename(f):20s} R={r['replicas']:5d}  {r['ms_per_step']:9.3f} ms/step")
        p = r.get("profile")
        if p:
            print(f"{'':20s}   kernels {p['summed_kernel_ms_per_step']:.3f} ms: "
                  + ", ".join(f"{q['name']} {q['kernel_ms']:.3f}" for q in p["parts"]))
for f in sorted(glob.glob(os.path.join(out, "SCREEN_*", "summary.json"))):
    s = json.load(open(f))
    print(f"{os.path.basename(os.path.dirname(f)):20s} {s['screened']} molecules  {s['wall_seconds']:.1f} s  "
          f"{s['molecules_per_second']:.2f} molecules/s  {s['force_calls']} force calls")
    line = screen_summary.phase_line(s, 20)
    if line:
        print(line)
PY
pack
