"""The engine with an AOTInductor package (.pt2) against the TorchScript model
it was compiled from (issue 14, item 5), and `mlff-md compile` with the
package cache that makes packages the default; run by `make test`.

    python python/check_pt2.py target/release/mlff-md

1. `mlff-md compile` compiles models/ani1x_static.pt for alanine dipeptide x
   2 members on the CPU into a temporary package cache (about 30-60 s; the
   exporter it carries checks the package against the model in Python).
   A second call finds it in the cache and compiles nothing.
2. The engine runs the same 40-step Langevin run (seed 7, float32 model,
   float64 state) with [model] compiled = "auto" (it must pick the package
   and record its SHA-256) and "off" (the TorchScript file): the potential
   energies recorded every 10 steps must agree to 1e-6 relative and the
   final positions to 1e-4 A (the package's forces differ from the
   TorchScript ones by ~1e-5 eV/A, float32 rounding of another kernel order).
3. Resuming keeps the force path the run started with: 20 steps + resume to
   40 with the package equals the 40-step package run bit for bit; a run
   started before the package existed resumes on the TorchScript file and
   equals the TorchScript run bit for bit; a run whose package went missing
   refuses to resume (exit 2, naming the package).
4. `mlff-md run` with the package named directly on 3 members (it was
   compiled for 2) exits 2 naming the member counts and the exporter; with
   compiled = "auto", 3 members find no package and run the TorchScript file.
"""
import os
import subprocess
import sys
import shutil
import tempfile

from deps import require

h5py = require("h5py", "check_pt2")
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN = """[system]
structure = "{root}/systems/{structure}"
periodic = {periodic}
[model]
path = "{model}"
device = "cpu"
compiled = "{compiled}"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
friction = 1.0
[ensemble]
members = {members}
seed = 7
[run]
steps = 40
[output]
directory = "{out}"
observables_interval = 10
trajectory_interval = 40
trajectory_format = "xyz"
"""

DIPEPTIDE = {"structure": "peptides/alanine_dipeptide.pdb", "periodic": "false"}


def run(binary, tmp, name, model, members, compiled="auto", cache=None, steps=None, resume=False):
    """`mlff-md run` (or `run --resume`) of the check's config in tmp/name;
    returns (CompletedProcess, output directory)."""
    out = os.path.join(tmp, name)
    cfg = os.path.join(tmp, name + ".toml")
    with open(cfg, "w") as f:
        f.write(RUN.format(root=ROOT, model=model, members=members, out=out, compiled=compiled,
                           **DIPEPTIDE))
    args = [binary, "run", cfg, "--quiet"] + (["--resume"] if resume else [])
    if steps is not None:
        args += ["--steps", str(steps)]
    env = dict(os.environ, MLFF_MD_CACHE=cache or os.path.join(tmp, "empty_cache"))
    return subprocess.run(args, capture_output=True, text=True, env=env), out


def finished(done, name, out):
    """(energies every 10 steps, package SHA-256 recorded) of a finished run."""
    if done.returncode != 0:
        raise SystemExit(f"check_pt2: FAIL: the {name} run exited {done.returncode}: {done.stderr}")
    with h5py.File(os.path.join(out, "observables.h5"), "r") as h5:
        steps = h5["observables/potential_energy/step"][()]
        energy = h5["observables/potential_energy/value"][()]
        package = h5["parameters"].attrs.get("package_sha256", "")
    if steps[-1] != 40:
        raise SystemExit(f"check_pt2: FAIL: the {name} run ended at step {steps[-1]}")
    return energy, package


def compile_package(binary, cfg_dir, cache):
    """The package `mlff-md compile` puts in `cache` for the 2-member config,
    after checking that a second call finds it there."""
    cfg = os.path.join(cfg_dir, "compile.toml")
    with open(cfg, "w") as f:
        f.write(RUN.format(root=ROOT, model=os.path.join(ROOT, "models", "ani1x_static.pt"),
                           members=2, out=os.path.join(cfg_dir, "unused"), compiled="auto",
                           **DIPEPTIDE))
    env = dict(os.environ, MLFF_MD_CACHE=cache, MLFF_MD_PYTHON=sys.executable)
    first = subprocess.run([binary, "compile", cfg], capture_output=True, text=True, env=env)
    if first.returncode != 0 or "compiled in" not in first.stdout:
        raise SystemExit(f"check_pt2: FAIL: mlff-md compile exited {first.returncode}: "
                         f"{first.stdout}{first.stderr}")
    again = subprocess.run([binary, "compile", cfg, "--quiet"], capture_output=True, text=True, env=env)
    path = again.stdout.strip()
    if again.returncode != 0 or not os.path.isfile(path) or os.path.dirname(path) != cache:
        raise SystemExit(f"check_pt2: FAIL: a second compile: exit {again.returncode}, {again.stdout!r}")
    if "already compiled" in first.stdout or "compiling" in again.stderr:
        raise SystemExit("check_pt2: FAIL: the cache was not used on the second call")
    print(first.stdout.strip())
    return path


def final_positions(out):
    """The last frame of member 0's XYZ trajectory, [n, 3]."""
    path = [f for f in sorted(os.listdir(out)) if f.endswith(".xyz")][0]
    lines = open(os.path.join(out, path)).read().splitlines()
    n = int(lines[0])
    frame = lines[-n:]
    return np.array([[float(v) for v in l.split()[1:4]] for l in frame])


def main():
    binary = os.path.abspath(sys.argv[1])
    static = os.path.join(ROOT, "models", "ani1x_static.pt")
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        pkg = compile_package(binary, tmp, cache)
        results = {}
        for name, compiled in (("pt2", "auto"), ("torchscript", "off")):
            done, out = run(binary, tmp, name, static, 2, compiled=compiled, cache=cache)
            energy, package = finished(done, name, out)
            if bool(package) != (compiled == "auto"):
                raise SystemExit(f"check_pt2: FAIL: compiled = {compiled!r} recorded package {package!r}")
            results[name] = (energy, final_positions(out))
        (e_pkg, x_pkg), (e_ts, x_ts) = results["pt2"], results["torchscript"]
        de = float(np.max(np.abs(e_pkg - e_ts) / np.abs(e_ts)))
        dx = float(np.max(np.abs(x_pkg - x_ts)))
        print(f"check_pt2: 40 steps, package vs TorchScript: energies {de:.2e} relative, "
              f"final positions {dx:.2e} A")
        if not (de <= 1e-6 and dx <= 1e-4):
            raise SystemExit("check_pt2: FAIL: the package's run differs from the TorchScript run")

        # Resuming keeps the path the run started with, bit for bit.
        done, out = run(binary, tmp, "pt2_resumed", static, 2, cache=cache, steps=20)
        done, out = run(binary, tmp, "pt2_resumed", static, 2, cache=cache, steps=40, resume=True)
        same = finished(done, "resumed package", out)[0]
        if not (np.array_equal(same, e_pkg) and np.array_equal(final_positions(out), x_pkg)):
            raise SystemExit("check_pt2: FAIL: package 20 + resume 20 differs from 40 steps")
        done, out = run(binary, tmp, "ts_resumed", static, 2, steps=20)  # no package yet
        done, out = run(binary, tmp, "ts_resumed", static, 2, cache=cache, steps=40, resume=True)
        same, package = finished(done, "resumed TorchScript", out)
        if package or not (np.array_equal(same, e_ts) and np.array_equal(final_positions(out), x_ts)):
            raise SystemExit("check_pt2: FAIL: a run started without the package did not resume "
                             "on the TorchScript file bit for bit")
        done, out = run(binary, tmp, "lost_package", static, 2, cache=cache, steps=20)
        shutil.move(pkg, pkg + ".away")
        done, _ = run(binary, tmp, "lost_package", static, 2, cache=cache, steps=40, resume=True)
        shutil.move(pkg + ".away", pkg)
        want = [os.path.basename(pkg), "is missing", "put the package back"]
        if done.returncode != 2 or not all(w in done.stderr for w in want):
            raise SystemExit(f"check_pt2: FAIL: resume without its package: exit {done.returncode}, "
                             f"stderr {done.stderr!r} (expected exit 2 naming {want})")
        print("check_pt2: resumes keep their force path (package or file) bit for bit")

        done, _ = run(binary, tmp, "wrong_members", pkg, 3)
        want = ["compiled for 2 member(s)", "3 member(s)", "export_pt2.py"]
        if done.returncode != 2 or not all(w in done.stderr for w in want):
            raise SystemExit(f"check_pt2: FAIL: 3 members on a 2-member package: exit {done.returncode}, "
                             f"stderr {done.stderr!r} (expected exit 2 naming {want})")
        done, out = run(binary, tmp, "three_members", static, 3, cache=cache, steps=10)
        if done.returncode != 0:
            raise SystemExit(f"check_pt2: FAIL: 3 members with compiled = auto: {done.stderr}")
        with h5py.File(os.path.join(out, "observables.h5"), "r") as h5:
            if h5["parameters"].attrs.get("package_sha256", ""):
                raise SystemExit("check_pt2: FAIL: 3 members used the 2-member package")
    print("check_pt2: ok")


if __name__ == "__main__":
    main()
