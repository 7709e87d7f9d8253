#!/usr/bin/env python3
"""Peer benchmark: TorchSim NVT (or NPT) Langevin, R replicas batched in ONE SimState.

The TorchScript model is wrapped as a torch_sim ModelInterface: one forward +
one backward over all R replicas per MD step (same call pattern as mlff-md).

v1 models (forward(z, positions, batch)) see isolated copies of the structure.
v2 neighbour-list models (cutoffs() present; models/README.md, "Interface v2")
get TorchSim's own neighbour list (torch_sim.neighbors.torchsim_nl: the best
available of alchemiops > vesin > torch_nl_linked_cell, or --neighbor-list)
at cutoffs()[0], turned into the contract's padded rows by the wrapper every
step; a PDB with CRYST1 runs periodic (v2 only).

Integrator: torch_sim.nvt_langevin_init / torch_sim.nvt_langevin_step (BAOAB),
called in a plain Python loop (what torch_sim.integrate does, minus reporters).
--ensemble npt (v2 models, periodic structures): torch_sim.npt_langevin_isotropic_init
/ npt_langevin_isotropic_step, TorchSim's isotropic Langevin barostat
(Gronbech-Jensen & Farago 2014 GJF integrator for the particles and for a
log-volume piston; a deterministic-plus-Langevin extended-system barostat,
not a Monte Carlo one), at --pressure bar. It needs the stress: the wrapper
gets it by autograd through a strain of positions and cell (PairListModel).

Units: torch-sim integrators work in internal "metal" units (eV, Å, amu;
time unit sqrt(amu Å^2 / eV) ≈ 10.18 fs). Like torch_sim.integrate we convert
  dt    = 0.0005 ps * MetalUnits.time           (ps -> internal)
  kT    = 300 K     * MetalUnits.temperature    (K  -> eV)
  gamma = 10 / ps   / MetalUnits.time           (1/ps -> 1/internal)
Friction 10 / ps = 0.01 / fs, the same as the ASE peer.
NPT: external_pressure = P bar * MetalUnits.pressure (bar -> eV/Å^3,
6.2415e-7 per bar); particle friction alpha = the same gamma number (TorchSim
labels it an inverse time, but its GJF formulas use alpha / m, so the damping
rate of an atom of mass m amu is 10 / ps / m); cell_alpha TorchSim's default
1 / (30 dt); b_tau TorchSim's default 300 dt = 0.15 ps unless --barostat-tau-ps.

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
    python3 benches/peers/torchsim_md.py --model models/ani1x_nl.pt \
        --structure systems/water/water_3k.pdb --ensemble npt --pressure 1.0 \
        --replicas 8 --steps 50 --warmup 5 --device cuda --out ts_npt.json
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _common as C  # noqa: E402
from pair_rows import pair_energies  # noqa: E402

# torch_sim imports PyTables at import time (only for trajectory files, which
# this benchmark never writes). If tables is not installed, a stub module takes
# its place so the wheel set for the GPU machine can stay small.
TABLES_STUBBED = C.stub_tables()

import ase  # noqa: E402
import ase.io  # noqa: E402
import torch_sim as ts  # noqa: E402
import torch_sim.neighbors as tsnl  # noqa: E402
from torch_sim.models.interface import ModelInterface  # noqa: E402
from torch_sim.transforms import compute_cell_shifts  # noqa: E402
from torch_sim.units import MetalUnits  # noqa: E402

if tsnl.ALCHEMIOPS_AVAILABLE:
    DEFAULT_NL = "alchemiops_nl_n2"
elif tsnl.VESIN_TORCHSCRIPT_AVAILABLE:
    DEFAULT_NL = "vesin_nl_ts"
elif tsnl.VESIN_AVAILABLE:
    DEFAULT_NL = "vesin_nl"
else:
    DEFAULT_NL = "torch_nl_linked_cell"
NEIGHBOR_LISTS = {
    "default": tsnl.torchsim_nl,  # what TorchSim's own pair models use
    "torch_nl_linked_cell": tsnl.torch_nl_linked_cell,
    "torch_nl_n2": tsnl.torch_nl_n2,
}


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


class PairListModel(TorchScriptModel):
    """torch_sim ModelInterface around a v2 (neighbour-list) TorchScript model.

    Every call: TorchSim's neighbour list at cutoffs()[0] (periodic images via
    the state's cell and pbc), vectors x_j - x_i + shift from the positions
    (float64, autograd on), rounded to float32, padded into [N, K] rows with
    inner slots; prepare() once per batch composition, then
    forward_pairs_prepared; forces = -dE/dpositions by one backward.

    compute_stress=True (NPT): positions and cell (row vectors) of system s
    are strained, x -> x (1 + e_s), cell -> cell (1 + e_s), e_s = (eps_s +
    eps_s^T) / 2 with eps a [S, 3, 3] zero tensor requiring grad, before the
    pair vectors are formed (so every pair vector is r (1 + e_s)); the same
    backward gives forces and stress_s = (1 / V_s) dE_s/deps_s (eV/Å^3;
    TorchSim's sign convention: pressure = -trace / 3 + kinetic part, as in
    its pair models' -(1 / V) sum r_ij (x) f_ij).
    """

    def __init__(self, path: str, device: torch.device, dtype: torch.dtype, nl: str,
                 compute_stress: bool = False):
        super().__init__(path, device, dtype)
        self._compute_stress = compute_stress
        self.cutoffs = [float(c) for c in self.model.cutoffs()]
        self.nl_fn = NEIGHBOR_LISTS[nl]
        self.has_prepare = hasattr(self.model, "prepare")
        self.last_capacity: list[int] = []

    def forward(self, state: ts.SimState, **kwargs) -> dict[str, torch.Tensor]:
        z, b = state.atomic_numbers, state.system_idx
        key = (z.data_ptr(), b.data_ptr(), z.shape[0])
        if key != self._cache_key:
            self._z = z.to(torch.int64)
            self._b = b.to(torch.int64)
            self._cache_key = key
            if self.has_prepare:
                self.model.prepare(self._z, self._b)
        pos = state.positions.detach().to(torch.float64).requires_grad_(True)
        cell = state.row_vector_cell.to(torch.float64)
        pbc = state.pbc  # as torch_sim.models.pair_potential does
        pbc = pbc.unsqueeze(0).expand(state.n_systems, -1) if pbc.ndim == 1 else pbc
        mapping, system_mapping, shifts_idx = self.nl_fn(
            positions=pos.detach(), cell=cell, pbc=pbc, cutoff=self.cutoffs[0],
            system_idx=self._b,
        )
        x, h = pos, cell
        if self._compute_stress:  # E(x (1 + e), cell (1 + e)), row vectors; same value at eps = 0
            eps = torch.zeros(state.n_systems, 3, 3, dtype=torch.float64, device=pos.device,
                              requires_grad=True)
            strain = 0.5 * (eps + eps.transpose(1, 2))
            x = pos + torch.einsum("na,nab->nb", pos, strain[self._b])
            h = cell + torch.bmm(cell, strain)
        shifts = compute_cell_shifts(h, shifts_idx.to(torch.float64), system_mapping)
        vec = x[mapping[1]] - x[mapping[0]] + shifts
        energy, self.last_capacity = pair_energies(
            self.model, self._z, self._b, self.has_prepare, mapping[0], mapping[1],
            vec.to(torch.float32), self.cutoffs)
        if not self._compute_stress:
            (grad,) = torch.autograd.grad(energy.sum(), pos)
            return {
                "energy": energy.detach().to(self._dtype),
                "forces": (-grad).detach().to(self._dtype),
            }
        grad, de_deps = torch.autograd.grad(energy.sum(), (pos, eps))
        volume = torch.linalg.det(cell).abs()
        return {
            "energy": energy.detach().to(self._dtype),
            "forces": (-grad).detach().to(self._dtype),
            "stress": (de_deps / volume.view(-1, 1, 1)).detach().to(self._dtype),
        }


def main() -> None:
    def extra(p):
        p.add_argument(
            "--state-dtype", choices=["float64", "float32"], default="float64",
            help="SimState dtype (torch-sim default float64); the model always gets float32",
        )
        p.add_argument(
            "--neighbor-list", choices=sorted(NEIGHBOR_LISTS), default="default",
            help=f"v2 models: TorchSim neighbour list (default: torchsim_nl = {DEFAULT_NL} here)",
        )
        p.add_argument(
            "--ensemble", choices=["nvt", "npt"], default="nvt",
            help="nvt: nvt_langevin_*; npt: npt_langevin_isotropic_* (v2 model, periodic structure)",
        )
        p.add_argument("--pressure", type=float, default=1.0, help="NPT external pressure, bar")
        p.add_argument(
            "--barostat-tau-ps", type=float, default=None,
            help="NPT barostat time constant b_tau in ps (default: TorchSim's 300 dt = 0.15 ps)",
        )

    args = C.parse_args("TorchSim NVT/NPT Langevin, replicas batched in one SimState", extra=extra)
    state_dtype = getattr(torch, args.state_dtype)
    device = torch.device(args.device)
    npt = args.ensemble == "npt"

    v2 = hasattr(torch.jit.load(args.model, map_location="cpu"), "cutoffs")
    template = ase.io.read(args.structure)
    periodic = bool(v2 and template.pbc.any() and template.cell.volume > 0)
    if npt and not periodic:
        sys.exit("--ensemble npt needs a v2 (neighbour-list) model and a periodic structure "
                 "(a PDB with CRYST1)")
    if v2:
        model = PairListModel(args.model, device, state_dtype, args.neighbor_list,
                              compute_stress=npt)
    else:
        model = TorchScriptModel(args.model, device, state_dtype)
    if not periodic:
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

    if npt:
        p_ext = args.pressure * MetalUnits.pressure  # bar -> eV/Å^3
        p_ext_t = torch.as_tensor(p_ext, device=device, dtype=state_dtype)
        b_tau = None if args.barostat_tau_ps is None else args.barostat_tau_ps * MetalUnits.time
        volume0 = torch.linalg.det(state.cell).abs().detach().cpu()
        # alpha: TorchSim's particle friction argument (GJF, used as alpha / mass)
        state = ts.npt_langevin_isotropic_init(state, model, kT=kT_t, dt=dt_t, alpha=gamma_t,
                                               b_tau=b_tau)

        def step(s):
            return ts.npt_langevin_isotropic_step(s, model, dt=dt_t, kT=kT_t,
                                                  external_pressure=p_ext_t)
    else:
        state = ts.nvt_langevin_init(state, model, kT=kT_t)

        def step(s):
            return ts.nvt_langevin_step(s, model, dt=dt_t, kT=kT_t, gamma=gamma_t)

    for _ in range(args.warmup):
        state = step(state)

    t0 = C.clock(device)
    for _ in range(args.steps):
        state = step(state)
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
        "integrator": (
            "torch_sim.npt_langevin_isotropic_init / npt_langevin_isotropic_step (GJF Langevin "
            "particles + Langevin log-volume piston), all replicas in one SimState" if npt else
            "torch_sim.nvt_langevin_init / nvt_langevin_step (BAOAB), all replicas in one SimState"
        ),
        "ensemble": args.ensemble,
        "pressure_bar": args.pressure if npt else None,
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
        "model_interface": "v2" if v2 else "v1",
        "periodic": periodic,
        "cell": template.cell.lengths().tolist() if periodic else None,
    }
    if v2:
        nl_name = DEFAULT_NL if args.neighbor_list == "default" else args.neighbor_list
        result["neighbor_list"] = f"torch_sim.neighbors.{nl_name}, cutoff {model.cutoffs[0]} A, rebuilt every step"
        result["cutoffs"] = model.cutoffs
        result["capacity_last_step"] = model.last_capacity
    if npt:
        vol = state.volume.detach().cpu()  # V0 exp(3 eps), Å^3, per replica
        mass_g = float(state.masses.detach().sum().cpu()) / args.replicas * 1.66053906660e-24
        # instantaneous pressure: (sum m v^2 - trace(stress) V) / (3 V), per replica
        mv2 = torch.zeros(state.n_systems, dtype=state.dtype, device=state.device).index_add(
            0, state.system_idx, (state.momenta * state.velocities).sum(1))
        stress_tr = torch.einsum("nii->n", state.stress)
        p_inst = (mv2.cpu() / (3 * vol) - stress_tr.detach().cpu() / 3) / MetalUnits.pressure
        result.update({
            "external_pressure_eV_per_A3": p_ext,
            "barostat": "torch_sim isotropic Langevin barostat (GJF, log-volume strain piston)",
            "barostat_params": {
                "b_tau_ps": float(state.b_tau[0]) / MetalUnits.time,
                "cell_alpha": float(state.cell_alpha[0]),
                "cell_mass": float(state.cell_masses[0]),
                "alpha": float(state.alpha[0]),
            },
            "stress": "wrapper: (1/V) dE/d(eps), eps a symmetric strain of positions and cell, by autograd",
            "initial_volume_A3": float(volume0.mean()),
            "mean_volume_A3": float(vol.mean()),
            "final_volumes_A3": vol.tolist() if args.replicas <= 64 else None,
            "mean_density_g_cm3": float((mass_g / (vol * 1e-24)).mean()),
            "mean_pressure_bar_last_step": float(p_inst.mean()),
            "final_cell_lengths_replica0_A": state.cell[0].norm(dim=0).detach().cpu().tolist(),
        })
    C.finish(result, args, t1 - t0, temps)


if __name__ == "__main__":
    main()
