#!/usr/bin/env bash
# The GPU tests (the #[ignore]d tests of tests/cuda_graphs.rs: graph replay
# equals eager steps bit for bit, replaced storage is recaptured, graphed
# REMD resumes bit for bit and equals eager), with a record of the run:
# $OUT/gpu_tests.log (the test output), gpu_tests.json (each test's result,
# the commit, the GPU) and gpu.txt.
#
#   OUT=/tmp/res bash benches/gpu_tests.sh target/release/deps/cuda_graphs-HASH COMMIT
# (TEST_FILTER=NAME runs only the tests whose names contain NAME.)
# The test binary has the absolute path of the checkout it was built in
# compiled in (/work/main here); the script links that path to this copy.
set -uo pipefail
TESTBIN=$(realpath "${1:?the cuda_graphs test binary}")
COMMIT=${2:-unknown}
: "${OUT:?set OUT to a results directory}"
. "$(dirname "$0")/gpu_env.sh"
BUILT=${BUILT_ROOT:-/work/main}
[ -e "$BUILT" ] || { mkdir -p "$(dirname "$BUILT")" && ln -s "$ROOT" "$BUILT"; }
gpu_info "$OUT/gpu.txt"
timeout 500 "$TESTBIN" ${TEST_FILTER:+"$TEST_FILTER"} --ignored --test-threads=1 --nocapture 2>&1 | tee "$OUT/gpu_tests.log"
status=${PIPESTATUS[0]}
python3 - "$OUT" "$COMMIT" "$status" <<'PY'
import json, re, sys
out, commit, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = open(f"{out}/gpu_tests.log").read()
# With --nocapture a test's own output comes between "test NAME ..." and its
# result, so take each result as the first ok/FAILED line after the name.
tests = {}
for m in re.finditer(r"^test (\S+) \.\.\. ", log, re.M):
    rest = log[m.end():]
    r = re.search(r"(?:^|\s)(ok|FAILED)$", rest, re.M)
    tests[m.group(1)] = r.group(1) if r else "unknown"

notes = [l for l in log.splitlines() if re.search(r"eager-|whole-split|recapture:", l)]
json.dump({"commit": commit, "gpu": open(f"{out}/gpu.txt").read().strip(),
           "exit_status": status, "tests": tests, "measured": notes},
          open(f"{out}/gpu_tests.json", "w"), indent=2)
print(json.dumps(tests, indent=2))
PY
exit "$status"
