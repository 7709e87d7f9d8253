"""Check that a run's outputs open in the Python tools users reach for (h5py),
with the H5MD-style layout the README documents.

    python python/check_outputs.py target/release/mlff-md
"""

import json
import os
import subprocess
import sys
import tempfile

import checkpoint
from deps import require

h5py = require("h5py", "check_outputs")
np = require("numpy", "check_outputs")

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


# CODATA 2018, written here rather than taken from the engine.
KB_EV_PER_K = 1.380649e-23 / 1.602176634e-19
AMU_A2_PER_FS2_IN_EV = 1.66053906660e-27 * 1.0e10 / 1.602176634e-19
# Atomic masses (amu) and numbers as chemfiles' periodic table has them.
ELEMENTS = {"H": (1.008, 1), "C": (12.011, 6), "N": (14.007, 7), "O": (15.999, 8)}


def elements(topology: str) -> list:
    """Element symbols of the ATOM/HETATM records of a PDB file (columns 77-78)."""
    with open(topology) as f:
        return [line[76:78].strip() for line in f if line.startswith(("ATOM", "HETATM"))]


def check_last_record(out: str, epot, ekin, etot, temp) -> None:
    """The run's last observables record (step 40) against the end-of-run
    checkpoint, recomputed here: the kinetic energy and temperature from the
    velocities and masses (3N degrees of freedom under Langevin), the
    potential energy by evaluating the model file with torch on the
    checkpoint's positions (float32, as the config asks)."""
    torch = require("torch", "check_outputs")
    ck = checkpoint.read(os.path.join(out, "checkpoint.bin"))
    assert ck["header"]["step"] == 40, ck["header"]["step"]
    symbols = elements(os.path.join(out, "topology.pdb"))
    masses = np.array([ELEMENTS[s][0] for s in symbols])
    v = ck["velocities"]
    ke = 0.5 * AMU_A2_PER_FS2_IN_EV * np.einsum("n,rnk->r", masses, v * v)
    t = 2.0 * ke / (3 * len(masses) * KB_EV_PER_K)
    assert np.allclose(ekin, ke, rtol=1e-12, atol=0), (ekin, ke)
    assert np.allclose(temp, t, rtol=1e-12, atol=0), (temp, t)
    model = torch.jit.load(os.path.join(ROOT, "models", "morse_test.pt"))
    r, n = v.shape[:2]
    z = torch.tensor([ELEMENTS[s][1] for s in symbols] * r)
    batch = torch.arange(r).repeat_interleave(n)
    positions = torch.tensor(ck["positions"].reshape(-1, 3), dtype=torch.float32)
    e = model(z, positions, batch).double().numpy()
    assert np.allclose(epot, e, rtol=1e-6, atol=0), (epot, e)
    assert np.allclose(etot, e + ke, rtol=1e-6, atol=0), (etot, e + ke)


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit("check_outputs: FAIL: usage: check_outputs.py path/to/mlff-md")
    if not os.path.isfile(sys.argv[1]):
        raise SystemExit(f"check_outputs: FAIL: no binary at {sys.argv[1]} (`make build` builds it)")
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        cfg = os.path.join(tmp, "run.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(root=ROOT, out=out))
        subprocess.run([binary, "run", cfg, "--quiet"], check=True)
        with h5py.File(os.path.join(out, "observables.h5"), "r") as h5:
            assert list(h5["h5md"].attrs["version"]) == [1, 1]
            assert list(h5["h5md/modules/units"].attrs["version"]) == [1, 0]
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
            temp = h5["observables/temperature/value"][()]
            check_last_record(out, epot[-1], ekin[-1], etot[-1], temp[-1])
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
