# The preamble every benches/gpu_*.sh script sources: the repository root
# (ROOT, also the working directory), libtorch from the machine's torch
# wheel on the library path, unbuffered Python, and gpu_info FILE, which
# writes the GPU's name, driver and memory there (and says it), and
# t LIMIT NAME CMD..., which runs CMD for at most min(LIMIT, what is left
# until $DEADLINE) seconds, logs to $OUT/NAME.log, and skips it when less
# than 15 s are left (scripts that use t set OUT and DEADLINE).
#
# Scripts run in parts call `parts DEFAULT_PARTS "$@"` next (see there).
#
#   . "$(dirname "$0")/gpu_env.sh"
CALLER_DIR=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1

gpu_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$1" || true
  echo "GPU: $(cat "$1")"
}

t() {
  local limit=$1 name=$2; shift 2
  local left=$((DEADLINE - SECONDS))
  if [ $left -lt 15 ]; then echo "== SKIP $name (budget spent)" | tee -a "$OUT/skipped.txt"; return; fi
  [ $limit -gt $left ] && limit=$left
  echo "== $name (limit ${limit}s, $((DEADLINE - SECONDS))s of budget left)"
  local t0=$SECONDS
  timeout $limit "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc, $((SECONDS - t0)) s"; tail -n 5 "$OUT/$name.log" | cut -c1-220
  [ $rc -eq 124 ] && echo "$name: timed out after ${limit}s" >> "$OUT/skipped.txt"
}

# parts DEFAULT_PARTS [BIN [TESTBIN [COMMIT]]]: for a script whose work comes
# in parts (PARTS=a,b,... picks them, DEFAULT_PARTS when unset): BIN (the
# engine, default target/release/mlff-md, relative to where the script was
# started), TESTBIN, COMMIT; `part NAME` says whether a part was picked;
# DEADLINE is BUDGET_S seconds (default 560) from now; results go to a
# scratch OUT, and `pack` writes them to $FINAL/results.tgz (FINAL is the
# OUT the caller gave).
parts() {
  PARTS=",${PARTS:-$1},"
  BIN=$(cd "$CALLER_DIR" && realpath "${2:-target/release/mlff-md}" 2>/dev/null || echo "")
  TESTBIN=${3:-}
  COMMIT=${4:-unknown}
  FINAL=${OUT:?set OUT to a results directory}
  OUT=$(mktemp -d)
  DEADLINE=$((SECONDS + ${BUDGET_S:-560}))
}

part() { [[ $PARTS == *",$1,"* ]]; }

# gpu_tests_part: the GPU tests (benches/gpu_tests.sh) into $OUT/gpu_tests,
# when the part `tests` was picked and a test binary given.
gpu_tests_part() {
  part tests && [ -n "$TESTBIN" ] || return 0
  mkdir -p "$OUT/gpu_tests"
  t 300 gpu_tests env OUT="$OUT/gpu_tests" bash benches/gpu_tests.sh "$TESTBIN" "$COMMIT"
}

pack() {
  echo "total $SECONDS s"
  tar czf "$FINAL/results.tgz" -C "$OUT" .
}

# chunk_tree NAME MODEL STRUCTURE: start a device call's share of a chunked
# run (chunk_run below): DEADLINE from BUDGET_S (default 570), the GPU in
# $FINAL/gpu.txt, the commit and the model's SHA-256 in
# $FINAL/provenance.txt, and a fresh scratch tree W=/tmp/mlff_md_NAME with
# MODEL and STRUCTURE at their repository paths, out/ and an empty configs/
# for the caller's edited config (so its relative paths still resolve).
chunk_tree() {
  BUDGET_S=${BUDGET_S:-570}
  DEADLINE=$((SECONDS + BUDGET_S))
  gpu_info "$FINAL/gpu.txt"
  W=/tmp/mlff_md_$1
  rm -rf "$W" && mkdir -p "$W/configs" "$W/out" "$W/$(dirname "$2")" "$W/$(dirname "$3")"
  cp "$2" "$W/$2" && cp "$3" "$W/$3"
  { echo "$COMMIT"; sha256sum "$W/$2"; } > "$FINAL/provenance.txt"
}

# chunk_run NAME CONFIG RUN: one device call's share of a run too long for
# one call. CONFIG (in the scratch tree $W, whose out/ holds the run, so the
# paths stored in its checkpoint are the same in every call) is started, or
# resumed from RUN (the run directory the caller carried) when that holds a
# checkpoint; it steps until 25 s before DEADLINE, is stopped by SIGINT (the
# engine writes a checkpoint and exits 130) and comes back as $FINAL/NAME,
# to be carried into the next call: its trajectories and topology packed in
# NAME/trajectories.tgz (the device returns a limited number of files),
# unpacked again when carried back, and without checkpoint.prev.bin (the
# device returns files of limited size). The log is $FINAL/run_NAME.log.
chunk_run() {
  local name=$1 cfg=$2 run=$3 how=--overwrite
  if [ -e "$run/checkpoint.bin" ]; then
    cp -r "$run" "$W/out/$name" && chmod -R u+w "$W/out/$name"
    rm -f "$W/out/$name/.mlff-md.lock"
    if [ -e "$W/out/$name/trajectories.tgz" ]; then
      tar -C "$W/out/$name" -xzf "$W/out/$name/trajectories.tgz" && rm "$W/out/$name/trajectories.tgz"
    fi
    how=--resume
  fi
  local left=$((DEADLINE - SECONDS - 25))
  echo "== run $name $how for at most ${left}s"
  timeout -s INT "$left" "$BIN" run "$cfg" $how --output "$W/out/$name" > "$FINAL/run_$name.log" 2>&1
  echo "   rc $? (124: stopped at the time limit by SIGINT, checkpoint written), $SECONDS s"
  tail -n 5 "$FINAL/run_$name.log" | cut -c1-220
  rm -f "$W/out/$name/.mlff-md.lock"
  mkdir -p "$FINAL/$name"
  local f frames=()
  for f in "$W/out/$name"/*; do
    case "$f" in
      *.xtc | *.dcd | *.trr | *.nc | *.xyz | *.pdb) frames+=("$(basename "$f")") ;;
      */checkpoint.prev.bin) ;;
      *) cp -r "$f" "$FINAL/$name/" ;;
    esac
  done
  [ ${#frames[@]} -gt 0 ] && tar -C "$W/out/$name" -czf "$FINAL/$name/trajectories.tgz" "${frames[@]}"
  ls -la "$FINAL/$name"
}
