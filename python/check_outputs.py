"""Check that a run's outputs open in the Python tools users reach for (h5py),
with the H5MD-style layout the README documents.

    python python/check_outputs.py target/release/mlff-md
"""

import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
[system]
structure = "{root}/systems/ethanol.pdb"
[model]
path = "{root}/models/morse_test.pt"
device = "cpu"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
[ensemble]
members = 3
seed = 5
[run]
steps = 40
[output]
directory = "{out}"
trajectory_format = "pdb"
trajectory_interval = 10
observables_interval = 5
"""


def main() -> int:
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        cfg = os.path.join(tmp, "run.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(root=ROOT, out=out))
        subprocess.run([binary, "run", cfg, "--quiet"], check=True)
        with h5py.File(os.path.join(out, "observables.h5"), "r") as h5:
            assert list(h5["h5md"].attrs["version"]) == [1, 1]
            for name, unit in [("potential_energy", "eV"), ("kinetic_energy", "eV"),
                               ("total_energy", "eV"), ("temperature", "K")]:
                g = h5["observables"][name]
                value, step, time = g["value"][()], g["step"][()], g["time"][()]
                assert value.shape == (9, 3), (name, value.shape)
                assert list(step) == list(range(0, 41, 5)), step
                assert np.allclose(time, step * 0.5)
                assert g["value"].attrs["unit"] == unit
                assert np.all(np.isfinite(value))
            epot = h5["observables/potential_energy/value"][()]
            ekin = h5["observables/kinetic_energy/value"][()]
            etot = h5["observables/total_energy/value"][()]
            assert np.allclose(epot + ekin, etot)
            params = h5["parameters"].attrs
            assert "[integrator]" in params["config"]
            summary = json.loads(params["summary"])
            assert summary["steps"] == 40 and summary["members"] == 3
        frames = [f for f in os.listdir(out) if f.startswith("member_")]
        assert sorted(frames) == ["member_0000.pdb", "member_0001.pdb", "member_0002.pdb"], frames
        with open(os.path.join(out, "member_0001.pdb")) as f:
            assert f.read().count("ENDMDL") == 5
    print("check_outputs: 1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
