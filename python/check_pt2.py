"""The engine with an AOTInductor package (.pt2) against the TorchScript model
it was compiled from (issue 14, item 5); run by `make test`.

    python python/check_pt2.py target/release/mlff-md

1. python/export_pt2.py compiles models/ani1x_static.pt for alanine dipeptide
   x 2 members on the CPU into a temporary .pt2 (about 30 s; the script
   itself checks the package against the model in Python).
2. The engine runs the same 40-step Langevin run (seed 7, float32 model,
   float64 state) with the package and with models/ani1x_static.pt: the
   potential energies recorded every 10 steps must agree to 1e-6 relative
   and the final positions to 1e-4 A (the package's forces differ from the
   TorchScript ones by ~1e-5 eV/A, float32 rounding of another kernel order).
3. `mlff-md run` with the package on 3 members (it was compiled for 2) exits 2
   naming the member counts and the exporter.
"""
import os
import subprocess
import sys
import tempfile

from deps import require

import export_pt2

h5py = require("h5py", "check_pt2")
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN = """[system]
structure = "{root}/systems/peptides/alanine_dipeptide.pdb"
[model]
path = "{model}"
device = "cpu"
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


def run(binary, tmp, name, model, members):
    out = os.path.join(tmp, name)
    cfg = os.path.join(tmp, name + ".toml")
    with open(cfg, "w") as f:
        f.write(RUN.format(root=ROOT, model=model, members=members, out=out))
    return subprocess.run([binary, "run", cfg, "--quiet"], capture_output=True, text=True), out


def final_positions(out):
    """The last frame of member 0's XYZ trajectory, [n, 3]."""
    path = [f for f in sorted(os.listdir(out)) if f.endswith(".xyz")][0]
    lines = open(os.path.join(out, path)).read().splitlines()
    n = int(lines[0])
    frame = lines[-n:]
    return np.array([[float(v) for v in l.split()[1:4]] for l in frame])


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        pkg = os.path.join(tmp, "ala2_x2.pt2")
        static = os.path.join(ROOT, "models", "ani1x_static.pt")
        code = export_pt2.main(["--model", static, "--structure",
                                os.path.join(ROOT, "systems", "peptides", "alanine_dipeptide.pdb"),
                                "--replicas", "2", "--device", "cpu", "--out", pkg])
        if code != 0:
            raise SystemExit("check_pt2: FAIL: the exporter's own check failed")
        results = {}
        for name, model in (("pt2", pkg), ("torchscript", static)):
            done, out = run(binary, tmp, name, model, 2)
            if done.returncode != 0:
                raise SystemExit(f"check_pt2: FAIL: the {name} run exited {done.returncode}: {done.stderr}")
            with h5py.File(os.path.join(out, "observables.h5"), "r") as h5:
                steps = h5["observables/potential_energy/step"][()]
                energy = h5["observables/potential_energy/value"][()]
            if steps[-1] != 40:
                raise SystemExit(f"check_pt2: FAIL: the {name} run ended at step {steps[-1]}")
            results[name] = (energy, final_positions(out))
        (e_pkg, x_pkg), (e_ts, x_ts) = results["pt2"], results["torchscript"]
        de = float(np.max(np.abs(e_pkg - e_ts) / np.abs(e_ts)))
        dx = float(np.max(np.abs(x_pkg - x_ts)))
        print(f"check_pt2: 40 steps, package vs TorchScript: energies {de:.2e} relative, "
              f"final positions {dx:.2e} A")
        if not (de <= 1e-6 and dx <= 1e-4):
            raise SystemExit("check_pt2: FAIL: the package's run differs from the TorchScript run")
        done, _ = run(binary, tmp, "wrong_members", pkg, 3)
        want = ["compiled for 2 member(s)", "3 member(s)", "export_pt2.py"]
        if done.returncode != 2 or not all(w in done.stderr for w in want):
            raise SystemExit(f"check_pt2: FAIL: 3 members on a 2-member package: exit {done.returncode}, "
                             f"stderr {done.stderr!r} (expected exit 2 naming {want})")
    print("check_pt2: ok")


if __name__ == "__main__":
    main()
