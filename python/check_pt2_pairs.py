"""Packages of contract pt2-v2 (a neighbour-list model compiled with its
backward pass, src/force/aoti.rs) in the engine, against the TorchScript
file they are compiled from (issue 12); run by `make test`, on the CPU.

    python python/check_pt2_pairs.py target/release/mlff-md

1. `mlff-md compile` of models/ani1x_nl.pt for alanine dipeptide x 2 (an
   isolated molecule: whole rows of a dense list) and for a periodic box of
   333 waters x 1 (a cell grid), each about 30-40 s; the exporter checks
   each package against the file in Python.
2. The same 40-step Langevin runs (seed 7, float32 model, float64 state)
   with [model] compiled = "auto" (the package, whose SHA-256 the run
   records) and "off" (the file): potential energies every 10 steps equal
   to 1e-6 relative, final positions to the XYZ files' printed precision.
3. `mlff-md compile --room 1.1`: the cached water package has too little
   room, so it compiles one with rows (and inner rows) 1.1 times as long,
   which a plain `compile` then finds serves; the run gives its list the
   package's capacities and uses the package (same tolerances).
4. A package run stopped at step 20 and resumed equals the 40-step run
   bit for bit; `bench md --compiled` times the row the cache holds a
   package for with it and the other row with the file.
5. With the test switch MLFF_MD_TEST_NEIGHBOR_ROOM = 4 the water run's list
   starts too small, overflows and grows: while its shape differs from the
   package's, the file evaluates (the warning says so once; without the
   fallback the package would refuse the shapes), so recorded energies of
   those steps are bit for bit the file's run with the same switch (the
   package evaluates again once the grown list has its shape); all within
   1e-6 relative.
6. `mlff-md compile --resume` compiles for the list the grown run's
   checkpoint holds; continued with --allow-model-change, the run evaluates
   that package (no fallback warning) within 1e-6 of the file's run
   continued alike.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

from check_pt2 import RUN as CONFIG  # the same run, another structure and model
from deps import require

h5py = require("h5py", "check_pt2_pairs")
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "ani1x_nl.pt")


# Å: one unit in the last digit the XYZ files print (chemfiles writes up to
# six significant digits: 4 decimals from 10 Å on), and a half more for
# the decimal rounding of the difference.
POSITION_TOLERANCE = 1.5e-4

SYSTEMS = {
    "dipeptide": ("peptides/alanine_dipeptide.pdb", "false", 2),
    "water": ("water/water_1k.pdb", "true", 1),
}


def config(tmp, system, name, compiled):
    structure, periodic, members = SYSTEMS[system]
    out = os.path.join(tmp, name)
    path = os.path.join(tmp, name + ".toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(root=ROOT, structure=structure, periodic=periodic, model=MODEL,
                              compiled=compiled, members=members, out=out))
    return path, out


def run(binary, tmp, cache, system, name, compiled="auto", room=None, args=("--overwrite",)):
    """A finished run (`args` after `run CONFIG --quiet`): (energies every
    10 steps, final positions, package SHA-256 recorded, stderr)."""
    cfg, out = config(tmp, system, name, compiled)
    env = dict(os.environ, MLFF_MD_CACHE=cache)
    if room is not None:
        env["MLFF_MD_TEST_NEIGHBOR_ROOM"] = str(room)
    done = subprocess.run([binary, "run", cfg, "--quiet", *args], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"check_pt2_pairs: FAIL: the {name} run exited {done.returncode}: {done.stderr}")
    with h5py.File(os.path.join(out, "observables.h5"), "r") as h5:
        energy = h5["observables/potential_energy/value"][()]
        package = h5["parameters"].attrs.get("package_sha256", "")
    xyz = [f for f in sorted(os.listdir(out)) if f.endswith(".xyz")][0]
    lines = open(os.path.join(out, xyz)).read().splitlines()
    n = int(lines[0])
    final = np.array([[float(v) for v in l.split()[1:4]] for l in lines[-n:]])
    return energy, final, package, done.stderr


def compile_cli(binary, cache, cfg, *args):
    """`mlff-md compile CFG ARGS...` into `cache`: (stdout, stderr); exit
    status 0 required."""
    env = dict(os.environ, MLFF_MD_CACHE=cache, MLFF_MD_PYTHON=sys.executable)
    done = subprocess.run([binary, "compile", cfg, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"check_pt2_pairs: FAIL: mlff-md compile {cfg} {' '.join(args)} exited "
                         f"{done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout, done.stderr


def list_rows(text, said=r"list rows of (\d+) \(inner"):
    """(row capacity, [inner capacities]) that `text` names after `said`
    (a regular expression; default: the exporter's line), or None."""
    m = re.search(said + r" \[([\d, ]*)\]\)", text)
    return m and (int(m[1]), [int(k) for k in m[2].split(",")])


def compile_package(binary, tmp, cache, system):
    """The package `mlff-md compile` makes for the system's config."""
    cfg, _ = config(tmp, system, system + "_compile", "auto")
    out, _ = compile_cli(binary, cache, cfg)
    rows = list_rows(out)
    if "compiled in" not in out or not rows:
        raise SystemExit(f"check_pt2_pairs: FAIL: mlff-md compile ({system}) compiled no package "
                         f"with a list shape: {out}")
    last = out.strip().splitlines()[-1]
    print(f"check_pt2_pairs: {system}: {last} (rows of {rows[0]}, inner {rows[1]})")
    return last.split(": ", 1)[1], rows[0], rows[1]


def compile_roomier(binary, tmp, cache, system, capacity, inner):
    """`mlff-md compile --room 1.1` for the system's config: the cached
    package (rows of `capacity`, inner `inner`) has too little room, so it
    compiles one with rows 1.1 times as long; a plain `compile` then finds
    that package serves the run (its list takes the longer rows). Returns
    the new row and inner capacities."""
    cfg, _ = config(tmp, system, system + "_compile", "auto")
    said = [compile_cli(binary, cache, cfg, *args)[0] for args in (["--room", "1.1"], [])]
    want = (-(-capacity * 11 // 10), [-(-k * 11 // 10) for k in inner])
    if not ("compiled in" in said[0] and "already compiled" in said[1] and list_rows(said[0]) == want):
        raise SystemExit(f"check_pt2_pairs: FAIL: compile --room 1.1 (want {want}): {said}")
    return want


def describe(tmp, name):
    """The force provider a run recorded."""
    with h5py.File(os.path.join(tmp, name, "observables.h5"), "r") as h5:
        return str(h5["parameters"].attrs.get("model", ""))


def compare(label, package_run, file_run):
    (e_p, x_p, sha, _), (e_f, x_f, sha_f, _) = package_run, file_run
    if not sha or sha_f:
        raise SystemExit(f"check_pt2_pairs: FAIL: {label}: package recorded {sha!r} with the package "
                         f"and {sha_f!r} without")
    de = float(np.max(np.abs(e_p - e_f) / np.abs(e_f)))
    dx = float(np.max(np.abs(x_p - x_f)))
    print(f"check_pt2_pairs: {label}: 40 steps, package vs file: energies {de:.2e} relative, "
          f"final positions {dx:.2e} A")
    if not (de <= 1e-6 and dx <= POSITION_TOLERANCE):
        raise SystemExit(f"check_pt2_pairs: FAIL: {label}: the package's run differs from the file's")


def check_bench(binary, tmp, cache, package):
    """bench md --compiled times the dipeptide x 2 row with its package and
    the x 3 row (no package) with the file, and says which."""
    out = os.path.join(tmp, "bench")
    done = subprocess.run(
        [binary, "bench", "md", "--model", MODEL, "--structures",
         os.path.join(ROOT, "systems", SYSTEMS["dipeptide"][0]), "--replicas", "2,3", "--steps", "5",
         "--warmup", "2", "--device", "cpu", "--compiled", "--out", out],
        capture_output=True, text=True, env=dict(os.environ, MLFF_MD_CACHE=cache))
    if done.returncode != 0:
        raise SystemExit(f"check_pt2_pairs: FAIL: bench md --compiled exited {done.returncode}: {done.stderr}")
    report = [f for f in os.listdir(out) if f.endswith(".json")][0]
    with open(os.path.join(out, report)) as f:
        rows = {r["replicas"]: r["package"] for r in json.load(f)["rows"]}
    if rows != {2: os.path.basename(package), 3: None}:
        raise SystemExit(f"check_pt2_pairs: FAIL: bench md --compiled used {rows}")
    print("check_pt2_pairs: bench md --compiled times the package where the cache holds one")


def check_recompiled(binary, tmp, cache, old_sha):
    """`mlff-md compile --resume` on the grown water run: a package for the
    list its checkpoint holds (a second call finds it in the cache), and the
    run continued with --allow-model-change evaluates it (no fallback) to
    1e-6 relative of the file's run continued alike."""
    cfg, _ = config(tmp, "water", "water_small_pt2", "auto")
    said = ["".join(compile_cli(binary, cache, cfg, "--resume")) for _ in range(2)]
    grown = list_rows(said[0], said=r"its neighbour list \(rows of (\d+), inner")
    if not (grown and "compiled in" in said[0] and "already compiled" in said[1]):
        raise SystemExit(f"check_pt2_pairs: FAIL: compile --resume said {said}")
    e_p, _, sha, err = run(binary, tmp, cache, "water", "water_small_pt2",
                           args=("--resume", "--allow-model-change", "--steps", "60"))
    e_f, _, _, _ = run(binary, tmp, cache, "water", "water_small_file", compiled="off",
                       args=("--resume", "--steps", "60"))
    used = describe(tmp, "water_small_pt2")
    if (not sha or sha == old_sha or "evaluates while" in err or "continuing on another force path" not in err
            or f"list rows of {grown[0]} entries" not in used):
        raise SystemExit(f"check_pt2_pairs: FAIL: the continued run on the recompiled package: package "
                         f"{sha!r} (was {old_sha!r}), model {used!r}, stderr {err!r}")
    de = float(np.max(np.abs(e_p[-2:] - e_f[-2:]) / np.abs(e_f[-2:])))
    if not (e_p.size == e_f.size == 7 and de <= 1e-6):
        raise SystemExit(f"check_pt2_pairs: FAIL: the continued run on the recompiled package: {e_p.size} "
                         f"energies, {de:.2e} relative from the file's")
    print(f"check_pt2_pairs: compile --resume made a package for the grown list (rows of {grown[0]}, "
          f"inner {grown[1]}); the continued run evaluates it, energies within {de:.1e} relative")


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        packages = {s: compile_package(binary, tmp, cache, s) for s in SYSTEMS}
        for system in SYSTEMS:
            compare(system, run(binary, tmp, cache, system, system + "_pt2"),
                    run(binary, tmp, cache, system, system + "_file", compiled="off"))

        # Stopped and resumed on the package: the uninterrupted run, bit for bit.
        whole = run(binary, tmp, cache, "dipeptide", "dipeptide_pt2")
        run(binary, tmp, cache, "dipeptide", "dipeptide_resumed", args=("--steps", "20"))
        resumed = run(binary, tmp, cache, "dipeptide", "dipeptide_resumed",
                      args=("--resume", "--steps", "40"))
        if not (resumed[2] == whole[2] and np.array_equal(resumed[0], whole[0])
                and np.array_equal(resumed[1], whole[1])):
            raise SystemExit("check_pt2_pairs: FAIL: package 20 + resume 20 differs from 40 steps")
        print("check_pt2_pairs: a run resumed on its package equals the uninterrupted run bit for bit")
        check_bench(binary, tmp, cache, packages["dipeptide"][0])

        # A package with more room per row than the list needs: the run's
        # list takes its capacities.
        _, capacity, inner = packages["water"]
        longer, _ = compile_roomier(binary, tmp, cache, "water", capacity, inner)
        roomy = run(binary, tmp, cache, "water", "water_room")
        if f"list rows of {longer} entries" not in roomy[3] + describe(tmp, "water_room"):
            raise SystemExit("check_pt2_pairs: FAIL: the run did not use the package with more room")
        compare("water, package with more room", roomy,
                run(binary, tmp, cache, "water", "water_file", compiled="off"))

        # A list that starts too small and grows: the file evaluates while
        # its shape is not the package's.
        e_p, x_p, sha, err = run(binary, tmp, cache, "water", "water_small_pt2", room=4)
        e_f, x_f, _, _ = run(binary, tmp, cache, "water", "water_small_file", compiled="off", room=4)
        warned = err.count("the TorchScript file evaluates while the list has other shapes")
        if warned != 1 or not sha:
            raise SystemExit(f"check_pt2_pairs: FAIL: a list outgrowing the package: {warned} warnings, "
                             f"package {sha!r}; stderr {err!r}")
        same = int(np.sum(e_p == e_f))
        de = float(np.max(np.abs(e_p - e_f) / np.abs(e_f)))
        if not (de <= 1e-6 and same >= 1):
            raise SystemExit(f"check_pt2_pairs: FAIL: a list outgrowing its package: energies "
                             f"{de:.2e} relative from the file's run, {same} of them bit for bit")
        print(f"check_pt2_pairs: a list outgrowing its package: the file evaluates the other shapes "
              f"({same} of {e_p.size} recorded energies bit for bit the file's run, all within "
              f"{de:.1e} relative)")
        check_recompiled(binary, tmp, cache, sha)
    print("check_pt2_pairs: ok")


if __name__ == "__main__":
    main()
