#!/usr/bin/env python3
"""Peer benchmark: TorchSim NVT Langevin, R replicas batched in ONE SimState.

The TorchScript model is wrapped as a torch_sim ModelInterface: one forward +
one backward over all R replicas per MD step (same call pattern as mlff-md).
Integrator: torch_sim.nvt_langevin_init / torch_sim.nvt_langevin_step (BAOAB),
called in a plain Python loop (what torch_sim.integrate does, minus reporters).

Units: torch-sim integrators work in internal "metal" units (eV, Å, amu;
time unit sqrt(amu Å^2 / eV) ≈ 10.18 fs). Like torch_sim.integrate we convert
  dt    = 0.0005 ps * MetalUnits.time           (ps -> internal)
  kT    = 300 K     * MetalUnits.temperature    (K  -> eV)
  gamma = 10 / ps   / MetalUnits.time           (1/ps -> 1/internal)
Friction 10 / ps = 0.01 / fs, the same as the ASE peer.

Precision: positions go to the model as float32 (like mlff-md); the SimState
keeps torch-sim's default dtype, float64 (ts.io.atoms_to_state with dtype=None
keeps numpy's float64; the built-in torch-sim models default to float64).
--state-dtype float32 is available for comparison.

Timing: --warmup batched steps untimed (after nvt_langevin_init, which does
the initial force call), then --steps batched steps timed, with
torch.cuda.synchronize before each clock read.

    python3 benches/peers/torchsim_md.py --model models/ani1x.pt \
        --structure systems/peptides/alanine_dipeptide.pdb \
        --replicas 1024 --steps 1000 --warmup 20 --device cuda --out ts.json
"""

from __future__ import annotations

import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _common as C  # noqa: E402

# torch_sim imports PyTables at import time (only for trajectory files, which
# this benchmark never writes). If tables is not installed, put a stub module
# in its place so the wheel set for the GPU machine can stay small.
TABLES_STUBBED = False
try:
    import tables  # noqa: F401
except ImportError:
    _stub = types.ModuleType("tables")

    def _placeholder(name: str) -> type:  # tables.Float32Atom() etc. at import time
        return type(name, (), {"__init__": lambda self, *a, **k: None})

    def _open_file(*a, **k):
        raise RuntimeError("PyTables is not installed (stubbed by torchsim_md.py)")

    _stub.open_file = _open_file
    _stub.__getattr__ = _placeholder  # module-level __getattr__ (PEP 562)
    sys.modules["tables"] = _stub
    TABLES_STUBBED = True

import ase  # noqa: E402
import ase.io  # noqa: E402
import torch_sim as ts  # noqa: E402
from torch_sim.models.interface import ModelInterface  # noqa: E402
from torch_sim.units import MetalUnits  # noqa: E402


class TorchScriptModel(ModelInterface):
    """torch_sim ModelInterface around a mlff-md TorchScript model.

    forward(state) -> {"energy": [n_systems], "forces": [n_atoms, 3]}, calling
    model(atomic_numbers int64, positions float32, system_idx int64) once for
    the whole batch and taking forces = -dE/dpositions with one backward.
    """

    def __init__(self, path: str, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.model = C.load_model(path, device)
        self._device = device
        self._dtype = dtype
        self._compute_stress = False
        self._compute_forces = True
        self._memory_scales_with = "n_atoms"
        self._cache_key = None
        self._z = None
        self._b = None

    def forward(self, state: ts.SimState, **kwargs) -> dict[str, torch.Tensor]:
        z, b = state.atomic_numbers, state.system_idx
        key = (z.data_ptr(), b.data_ptr(), z.shape[0])
        if key != self._cache_key:  # int32 -> int64 once, not every step
            self._z = z.to(torch.int64)
            self._b = b.to(torch.int64)
            self._cache_key = key
        pos = state.positions.detach().to(torch.float32).requires_grad_(True)
        energy = self.model(self._z, pos, self._b)
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        return {
            "energy": energy.detach().to(self._dtype),
            "forces": (-grad).detach().to(self._dtype),
        }


def main() -> None:
    args = C.parse_args(
        "TorchSim NVT Langevin, replicas batched in one SimState",
        extra=lambda p: p.add_argument(
            "--state-dtype", choices=["float64", "float32"], default="float64",
            help="SimState dtype (torch-sim default float64); the model always gets float32",
        ),
    )
    state_dtype = getattr(torch, args.state_dtype)
    device = torch.device(args.device)

    model = TorchScriptModel(args.model, device, state_dtype)
    template = ase.io.read(args.structure)
    template.pbc = False
    atoms_list = [template.copy() for _ in range(args.replicas)]
    state = ts.io.atoms_to_state(atoms_list, device=device, dtype=state_dtype)
    state.rng = args.seed

    dt = C.TIMESTEP_FS * 1e-3 * MetalUnits.time  # ps -> internal time
    kT = C.TEMPERATURE_K * MetalUnits.temperature  # K -> eV
    gamma = C.FRICTION_PER_PS / MetalUnits.time  # 1/ps -> 1/internal time
    dt_t = torch.as_tensor(dt, device=device, dtype=state_dtype)
    kT_t = torch.as_tensor(kT, device=device, dtype=state_dtype)
    gamma_t = torch.as_tensor(gamma, device=device, dtype=state_dtype)

    state = ts.nvt_langevin_init(state, model, kT=kT_t)
    for _ in range(args.warmup):
        state = ts.nvt_langevin_step(state, model, dt=dt_t, kT=kT_t, gamma=gamma_t)

    t0 = C.clock(device)
    for _ in range(args.steps):
        state = ts.nvt_langevin_step(state, model, dt=dt_t, kT=kT_t, gamma=gamma_t)
    t1 = C.clock(device)

    temps = state.calc_temperature().detach().cpu().tolist()
    result = {
        "engine": "torch-sim",
        "version": ts.__version__,
        "ase_version": ase.__version__,
        "device": str(device),
        "device_name": C.device_name(device),
        "model": os.path.basename(args.model),
        "structure": os.path.basename(args.structure),
        "atoms_per_replica": len(template),
        "integrator": "torch_sim.nvt_langevin_init / nvt_langevin_step (BAOAB), all replicas in one SimState",
        "model_positions_dtype": "float32",
        "state_dtype": str(state_dtype).replace("torch.", ""),
        "batching": "one model call (forward+backward) per step for all replicas",
        "internal_units": {
            "dt": dt,
            "kT_eV": kT,
            "gamma": gamma,
            "MetalUnits.time_per_ps": float(MetalUnits.time),
            "MetalUnits.temperature_eV_per_K": float(MetalUnits.temperature),
        },
        "tables_stubbed": TABLES_STUBBED,
    }
    C.finish(result, args, t1 - t0, temps)


if __name__ == "__main__":
    main()
