#!/usr/bin/env python3
"""TorchSim baseline for `mlff-md screen`: batched FIRE over a molecule library
with TorchSim's in-flight autobatching, on the same TorchScript model file.

Needs torch-sim-atomistic 0.6.2 (Python >= 3.12; the script refuses < 0.6,
whose optimize counted steps globally, see below). GPU machine (Python 3.12,
torch 2.11.0+cu130, numpy, tqdm and packaging already installed, no network);
from the repository root, with the git-ignored .device/wheels/ carried there
(carry: [".device/wheels"], one wheel, 0.25 MB):

    python3 -m pip install -q --no-index --no-deps --no-compile --find-links .device/wheels \
        torch-sim-atomistic==0.6.2
    python3 benches/torchsim_screen.py --library systems/screen/library.sdf.gz \
        --model models/ani2xt_nl.pt --device cuda --out $OUT/torchsim_screen.json

If python3's site-packages is not writable there:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
        .device/wheels/*.whl && export PYTHONPATH=/tmp/site

(`import torch_sim` 0.6.2 needs only torch, numpy and tqdm, plus PyTables,
which torch_sim.trajectory imports at import time but uses only for trajectory
files; this script never writes one, so when `tables` is missing
benches/peers/_common.py's stub_tables() puts a stand-in module in its place
(JSON "tables_stubbed"). vesin and nvalchemi-toolkit-ops (neighbour lists)
are optional, imported in try/except; without them TorchSim's neighbour list
is its pure-PyTorch torch_nl_linked_cell (JSON "neighbor_list"); h5py, a
Requires-Dist, is never imported. Hence --no-deps and this one wheel. `import torch_sim` creates an empty ~/.torchsim/.)

What runs (torch-sim-atomistic 0.6.2, read from its source):

* Library: benches/sdf_records.py reads the V2000 records (no RDKit); records
  with an element the model does not support (its `supported_elements()`)
  or a net formal charge are skipped and counted; --limit N keeps the first N
  usable ones. Every molecule is an isolated system: SimState with
  pbc=False and a cubic --box cell (TorchSim's SimState needs a [S, 3, 3]
  cell even without periodicity; models never see it), unit masses
  (ASE-style FIRE does not use them; mlff-md's FIRE uses unit masses too).
* Model: the TorchScript file wrapped as a torch_sim ModelInterface; forces
  = -dE/dpositions by one autograd backward for the whole batch; returns
  {"energy", "forces"} (compute_stress False: no cell optimisation, so no
  "stress"). Contract v1 (models/README.md): energies = model(z int64,
  positions float32 Å, batch int64) -> [S] eV. Contract v2 (the file exports
  cutoffs(), e.g. the screen's default models/ani2xt_nl.pt): on every call
  TorchSim's own neighbour list (torch_sim.neighbors.torchsim_nl, pbc off,
  cutoffs()[0]; checked on the CPU against a brute-force list for the first
  200 library records: the same 158,144 pairs), vectors x_j - x_i from the
  state's positions rounded to float32, rows padded to this call's longest
  (benches/peers/pair_rows.py, as the MD peer), prepare(z, batch) once per
  batch composition, then forward_pairs_prepared. CPU check (first 20 usable
  records of systems/screen/sample.sdf, ani2xt_nl.pt, all in one batch):
  14 of 20 final energies within 1e-3 eV of `mlff-md screen`'s, 17 within
  1e-2 (largest 0.017 eV), as for v1 below (FIRE difference (2)).
* Optimiser: torch_sim.optimize(optimizer=torch_sim.Optimizer.fire), i.e.
  torch_sim.optimizers.fire_init / fire_step, with fire_flavor="ase_fire"
  and ASE's parameters, as mlff-md: init_kwargs dt_start 0.1, alpha_start
  0.1; step kwargs dt_max 1.0, n_min 5, f_inc 1.1, f_dec 0.5, alpha_start
  0.1, f_alpha 0.99, max_step 0.2 Å (the norm of a whole molecule's
  displacement). ts.optimize first runs fire_init (one force call) over the
  whole library in BinningAutoBatcher chunks of max_memory_scaler, then the
  in-flight loop. The other flavour, "vv_fire" (velocity Verlet, as the FIRE
  paper; uses masses), is --fire-flavor vv_fire.
* Convergence: torch_sim.generate_force_convergence_fn(force_tol=fmax,
  include_cell_forces=False) (largest atomic force norm < fmax), checked
  every --steps-between-swaps (10, as mlff-md's check every 10 iterations)
  FIRE steps of the batch; at every check converged molecules leave the batch
  and the next ones of the library enter (InFlightAutoBatcher.next_batch).
* Autobatcher: torch_sim.InFlightAutoBatcher with memory_scales_with
  "n_atoms" (the molecules sit in an invented vacuum box, so TorchSim's
  default "n_atoms_x_density" would measure our box size; 0.6.2's "n_edges"
  would need TorchSim's neighbour list and is not offered here).
  max_memory_scaler (atoms per batch) is --max-memory-scaler if given, else on
  CUDA estimated once, timed separately, by TorchSim's own procedure (the
  InFlightAutoBatcher.load_states probe: determine_max_batch_size, i.e.
  forward+backward calls on growing copies (x --memory-scaling-factor) of
  the library's first molecule until CUDA runs out of memory (a preliminary
  limit, 0.8 x, that fills the first batch), then again for the smallest and
  the largest molecule of that first batch; the smaller atom total, times
  --memory-padding, 0.9 as torch_sim.optimize uses). On the CPU TorchSim
  cannot measure memory, so every molecule goes into one batch.
* Per-molecule iteration cap: torch_sim.optimize 0.6.2 counts steps per
  molecule (a step tensor indexed by library position; a molecule past
  max_steps is treated as converged at the next check) and sets the
  autobatcher's max_iterations = max_steps // steps_between_swaps (checks per
  molecule), so ts.optimize(max_steps=N) with a plain InFlightAutoBatcher
  gives each molecule at most N FIRE steps. The script passes
  max_steps = ceil(--max-steps / --steps-between-swaps) x
  --steps-between-swaps (as the 0.3.0 version of this script; 2000 stays
  2000); --plain-optimize passes --max-steps unchanged (then a cap of
  floor(--max-steps / k) x k steps, at least k). Steps per molecule are
  InFlightAutoBatcher.iteration_count x steps_between_swaps.
  Dropped 0.3.0 workarounds: 0.3.0 counted max_steps globally (one counter
  for the whole run), so the 0.3.0 script passed a huge max_steps and an
  InFlightAutoBatcher subclass whose per-state cap ts.optimize could not
  overwrite; and it filtered 0.3.0's per-step "Optimize has reached max
  steps" warnings. 0.6.2 issues "All systems have reached the maximum number
  of steps" once, when every molecule hit the cap; "global_max_steps_warnings"
  counts it.
* TorchSim 0.6.2 ase_fire vs mlff-md's FIRE (ASE's algorithm), same
  parameters (from the sources; checked on the CPU with ani1x.pt):
  (1) First iteration. ASE and mlff-md change nothing on a molecule's first
  iteration (zero velocity, no power to judge). TorchSim marks fresh
  molecules by NaN velocities: when the whole batch is fresh (the first
  batch) it skips the power check and mixing for everyone, as ASE; a
  molecule that enters a running batch gets its NaN velocities zeroed, its
  power 0 counts as uphill, so on its first step dt is halved (0.1 -> 0.05),
  alpha reset and n_pos zeroed, unlike ASE. (0.3.0 instead let one NaN atom
  make the whole batch skip the power check, mixing and dt / alpha update;
  0.6.2 handles it per molecule, so a molecule's path no longer depends on
  who else enters, only on whether it was in the first batch.)
  (2) TorchSim updates dt / alpha / n_pos first and then mixes the velocity
  with the NEW alpha (alpha x 0.99 on accelerating steps); ASE and mlff-md
  mix with the old one. (3) TorchSim's first convergence check is after 10
  steps; mlff-md also checks a molecule as it enters.
  CPU check (first 20 usable records of systems/screen/library.sdf.gz, all in
  one batch, ani1x.pt, mlff-md 92d6817): 9 of 20 final energies within 1e-3
  eV of `mlff-md screen`'s, 16 within 1e-2 (largest 0.033 eV: different
  nearby minima), mean 158.5 vs 160.0 iterations. With (2) patched out of
  TorchSim (mixing with the old alpha), 19 of 20 within 1e-3 eV (18 within
  2e-5) and 19 of 20 equal iteration counts, so (2) is the difference.
* Timing: one warm-up (ts.optimize on the first --warmup molecules, at most
  --warmup-steps steps each), then the memory estimate (CUDA, unless given),
  then the timed ts.optimize over all molecules (fire_init included),
  torch.cuda.synchronize() before each clock read. Building the SimState from
  the SDF is not timed (mlff-md's wall does not include reading the library
  either).

    python3 benches/torchsim_screen.py --library systems/screen/sample.sdf \
        --limit 20 --device cpu --out /tmp/ts_screen.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import warnings

import torch

from peers._common import clock, sha256, stub_tables
from peers.pair_rows import pair_energies
from sdf_records import SYMBOL, read_records

TS_VERSION = importlib.metadata.version("torch-sim-atomistic")
if tuple(int(x) for x in TS_VERSION.split(".")[:2]) < (0, 6):
    raise SystemExit(f"torch-sim-atomistic {TS_VERSION}: this script needs >= 0.6 (0.6.2 "
                     "tested; earlier optimize counts max_steps globally)")
# torch_sim.trajectory imports PyTables at import time (trajectory files only).
TABLES_STUBBED = stub_tables()

import torch_sim as ts  # noqa: E402
from torch_sim.autobatching import InFlightAutoBatcher  # noqa: E402
from torch_sim.models.interface import ModelInterface  # noqa: E402
import torch_sim.neighbors as tsnl  # noqa: E402
from torch_sim.neighbors import torchsim_nl  # noqa: E402
from torch_sim.optimizers import Optimizer  # noqa: E402
from torch_sim.quantities import system_wise_max_force  # noqa: E402
from torch_sim.runners import generate_force_convergence_fn  # noqa: E402

# ASE's FIRE parameters, as mlff-md (src/minimize.rs): fire_init takes dt_start and
# alpha_start, fire_step the rest (and alpha_start again, for resets).
FIRE_INIT = dict(dt_start=0.1, alpha_start=0.1)
FIRE_STEP = dict(dt_max=1.0, n_min=5, f_inc=1.1, f_dec=0.5, alpha_start=0.1, f_alpha=0.99)
ALL_CAPPED = "All systems have reached the maximum number of steps"
# the implementation torchsim_nl picks (its order: alchemiops > vesin > pure PyTorch)
NL_IMPL = ("alchemiops_nl_n2" if tsnl.ALCHEMIOPS_AVAILABLE else
           "vesin_nl_ts" if tsnl.VESIN_TORCHSCRIPT_AVAILABLE else
           "vesin_nl" if tsnl.VESIN_AVAILABLE else "torch_nl_linked_cell")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="TorchSim batched FIRE with in-flight autobatching over an SDF library",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--library", required=True, help="V2000 SDF, plain or gzip (.sdf, .sdf.gz)")
    p.add_argument("--model", default="models/ani2xt_nl.pt",
                   help="TorchScript model, contract v1 or v2 (neighbour list)")
    p.add_argument("--limit", type=int, default=None, help="first N usable records only")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--fmax", type=float, default=0.05, help="eV/Å, largest atomic force norm")
    p.add_argument("--max-steps", type=int, default=2000, help="FIRE steps per molecule at most")
    p.add_argument("--out", default="results.json", help="result JSON")
    p.add_argument("--max-step", type=float, default=0.2,
                   help="Å, largest displacement of a molecule per step (norm over its atoms)")
    p.add_argument("--fire-flavor", choices=["ase_fire", "vv_fire"], default="ase_fire")
    p.add_argument("--steps-between-swaps", type=int, default=10,
                   help="FIRE steps between convergence checks / swaps")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="SimState / FIRE dtype (the model always gets float32 positions)")
    p.add_argument("--box", type=float, default=1000.0, help="Å, edge of the (unused) cubic cell")
    p.add_argument("--max-memory-scaler", type=float, default=None,
                   help="atoms per batch; skips TorchSim's memory estimate")
    p.add_argument("--memory-scales-with", choices=["n_atoms", "n_atoms_x_density"],
                   default="n_atoms")
    p.add_argument("--max-atoms-to-try", type=int, default=500_000,
                   help="InFlightAutoBatcher max_atoms_to_try (TorchSim compares it with the "
                        "number of copies in its probe)")
    p.add_argument("--memory-scaling-factor", type=float, default=1.6,
                   help="InFlightAutoBatcher memory_scaling_factor (growth of the probe)")
    p.add_argument("--memory-padding", type=float, default=0.9,
                   help="InFlightAutoBatcher max_memory_padding (ts.optimize's own default)")
    p.add_argument("--warmup", type=int, default=8, help="molecules in the untimed warm-up")
    p.add_argument("--warmup-steps", type=int, default=20, help="FIRE steps per warm-up molecule")
    p.add_argument("--plain-optimize", action="store_true",
                   help="pass --max-steps to ts.optimize unchanged (cap floor(max_steps / "
                        "steps_between_swaps) x steps_between_swaps per molecule) instead of "
                        "rounding it up to a multiple of --steps-between-swaps")
    a = p.parse_args()
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be >= 1")
    if a.max_steps < 1 or a.steps_between_swaps < 1 or a.fmax <= 0 or a.warmup < 0:
        p.error("need --max-steps >= 1, --steps-between-swaps >= 1, --fmax > 0, --warmup >= 0")
    return a


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    return torch.device(name)


class TorchScriptModel(ModelInterface):
    """torch_sim ModelInterface around a mlff-md model file, contract v1 or v2.

    forward(state) -> {"energy": [S] (float64, as the model returns it),
    "forces": [N, 3] (state dtype)}: one model call and one backward for the
    whole batch. v1: model(z, positions float32, batch). v2 (the file exports
    cutoffs(); models/README.md, "Interface v2"): what a TorchSim user writes
    around it, as benches/peers/torchsim_md.py does: TorchSim's own neighbour
    list (torch_sim.neighbors.torchsim_nl, pbc off) at cutoffs()[0] every
    call, vectors x_j - x_i from the state's positions (autograd on) rounded
    to float32, padded rows (peers/pair_rows.py), prepare(z, batch) once per
    batch composition. Counts calls and atoms (Python ints only) and, for v2,
    the largest row capacities seen.
    """

    def __init__(self, path: str, device: torch.device, dtype: torch.dtype):
        super().__init__()
        model = torch.jit.load(path, map_location=device)
        model.eval()
        for prm in model.parameters():
            prm.requires_grad_(False)
        if hasattr(model, "takes_charge") and bool(model.takes_charge()):
            raise SystemExit(f"{path}: takes a charge argument; this script passes none")
        if not hasattr(model, "supported_elements"):
            raise SystemExit(f"{path}: exports no supported_elements()")
        self.model = model
        self.supported = sorted(int(z) for z in model.supported_elements())
        self.cutoffs = ([float(c) for c in model.cutoffs()] if hasattr(model, "cutoffs")
                        else None)
        self.has_prepare = hasattr(model, "prepare")
        self._device = device
        self._dtype = dtype
        self._compute_stress = False
        self._compute_forces = True
        self._memory_scales_with = "n_atoms"
        self._z_src = self._b_src = None
        self._z = self._b = None
        self.reset_counters()

    def reset_counters(self) -> None:
        self.calls = 0
        self.atoms_evaluated = 0
        self.max_atoms = 0
        self.max_systems = 0
        self.max_capacity: list[int] = []
        self.prepares = 0

    def _energy(self, state, composition_changed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(energies [S], positions the gradient is taken for)."""
        if self.cutoffs is None:
            pos = state.positions.detach().to(torch.float32).requires_grad_(True)
            return self.model(self._z, pos, self._b), pos
        if composition_changed and self.has_prepare:
            self.model.prepare(self._z, self._b)
            self.prepares += 1
        pos = state.positions.detach().requires_grad_(True)
        pbc = torch.zeros(state.cell.shape[0], 3, dtype=torch.bool, device=pos.device)
        mapping, _, _ = torchsim_nl(positions=pos.detach(), cell=state.row_vector_cell,
                                    pbc=pbc, cutoff=self.cutoffs[0], system_idx=self._b)
        vec = (pos[mapping[1]] - pos[mapping[0]]).to(torch.float32)  # pbc off: no shifts
        energy, capacity = pair_energies(self.model, self._z, self._b, self.has_prepare,
                                         mapping[0], mapping[1], vec, self.cutoffs)
        self.max_capacity = [max(a, b) for a, b in zip(capacity, self.max_capacity)] \
            if self.max_capacity else capacity
        return energy, pos

    def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
        z, b, cell = state.atomic_numbers, state.system_idx, state.cell
        # SimState holds atomic numbers as int32 (SimState.to(dtype=...)); the model
        # wants int64. Convert once per batch composition: the tensors are
        # replaced (not modified) when molecules are swapped, and holding the
        # source keeps its address from being reused.
        changed = z is not self._z_src or b is not self._b_src
        if z is not self._z_src:
            self._z_src, self._z = z, z.to(torch.int64)
        if b is not self._b_src:
            self._b_src, self._b = b, b.to(torch.int64)
        with torch.enable_grad():
            try:
                energy, pos = self._energy(state, changed)
                (grad,) = torch.autograd.grad(energy.sum(), pos)
            except RuntimeError as e:
                # TorchSim's memory probe recognises only "CUDA out of memory".
                msg = str(e)
                if "out of memory" in msg.lower() and "CUDA out of memory" not in msg:
                    raise RuntimeError(f"CUDA out of memory (in the model): {msg}") from e
                raise
        n_systems = cell.shape[0]  # no sync (state.n_systems calls torch.unique)
        if energy.shape != (n_systems,):
            raise RuntimeError(f"model returned energies of shape {tuple(energy.shape)}, "
                               f"expected ({n_systems},)")
        self.calls += 1
        self.atoms_evaluated += pos.shape[0]
        self.max_atoms = max(self.max_atoms, pos.shape[0])
        self.max_systems = max(self.max_systems, n_systems)
        return {"energy": energy.detach().to(torch.float64),
                "forces": (-grad).detach().to(self._dtype)}


def load_library(path: str, supported: list[int], limit: int | None):
    keep, skipped, read = [], {"unsupported_elements": 0, "charged": 0}, 0
    allowed = set(supported)
    for rec in read_records(path):
        read += 1
        if not rec.elements() <= allowed:
            skipped["unsupported_elements"] += 1
            continue
        if rec.charge != 0:
            skipped["charged"] += 1
            continue
        keep.append(rec)
        if limit is not None and len(keep) >= limit:
            break
    if not keep:
        raise SystemExit(f"{path}: no usable record (elements {supported}, neutral)")
    return keep, skipped, read


def build_state(records, device: torch.device, dtype: torch.dtype, box: float) -> ts.SimState:
    n = [r.n_atoms for r in records]
    positions = torch.tensor([xyz for r in records for xyz in r.positions], dtype=dtype)
    numbers = torch.tensor([z for r in records for z in r.numbers], dtype=torch.int64)
    system_idx = torch.repeat_interleave(torch.arange(len(records)), torch.tensor(n))
    cell = (torch.eye(3, dtype=dtype) * box).expand(len(records), 3, 3).contiguous()
    return ts.SimState(positions=positions.to(device), masses=torch.ones(sum(n), dtype=dtype, device=device),
                       cell=cell.to(device), pbc=False, atomic_numbers=numbers.to(device),
                       system_idx=system_idx.to(device))


def optimize_max_steps(max_steps: int, k: int, plain: bool) -> int:
    """max_steps handed to ts.optimize (see the module docstring)."""
    return max_steps if plain else math.ceil(max_steps / k) * k


def steps_cap(max_steps: int, k: int, plain: bool) -> int:
    """FIRE steps a molecule gets at most: ts.optimize 0.6.2's autobatcher forces a
    molecule out after max_steps // k checks (at least one)."""
    return max(1, optimize_max_steps(max_steps, k, plain) // k) * k


def run_optimize(state, model, args, max_memory_scaler: float, max_steps: int, plain: bool,
                 quiet: bool = False):
    """ts.optimize over `state`; returns (final state in input order, batcher, warnings)."""
    k = args.steps_between_swaps
    batcher = InFlightAutoBatcher(model, memory_scales_with=args.memory_scales_with,
                                  max_memory_scaler=max_memory_scaler,
                                  max_atoms_to_try=args.max_atoms_to_try,
                                  memory_scaling_factor=args.memory_scaling_factor,
                                  max_memory_padding=args.memory_padding)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        final = ts.optimize(
            system=state, model=model, optimizer=Optimizer.fire,
            convergence_fn=generate_force_convergence_fn(force_tol=args.fmax,
                                                         include_cell_forces=False),
            autobatcher=batcher, max_steps=optimize_max_steps(max_steps, k, plain),
            steps_between_swaps=k,
            init_kwargs=dict(fire_flavor=args.fire_flavor, **FIRE_INIT),
            fire_flavor=args.fire_flavor, max_step=args.max_step, **FIRE_STEP)
    for w in caught:  # pass them on (stderr), but keep count
        if not str(w.message).startswith(ALL_CAPPED):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    n_cap = sum(str(w.message).startswith(ALL_CAPPED) for w in caught)
    if n_cap and not quiet:
        print(f"warning: every molecule reached the step cap ({n_cap} warnings)",
              file=sys.stderr)
    return final, batcher, n_cap


def main() -> int:
    args = parse_args()
    device = pick_device(args.device)
    dtype = getattr(torch, args.dtype)
    model = TorchScriptModel(args.model, device, dtype)
    records, skipped, read = load_library(args.library, model.supported, args.limit)
    n_mol = len(records)
    n_atoms = sum(r.n_atoms for r in records)
    print(f"{args.library}: {read} records read, {n_mol} molecules ({n_atoms} atoms) kept, "
          f"skipped {skipped}; torch-sim {TS_VERSION}, {device}", flush=True)

    # Warm-up: the first few molecules through the same path (untimed).
    warm = records[: min(args.warmup, n_mol)]
    if warm:
        w_atoms = sum(r.n_atoms for r in warm)
        t0 = clock(device)
        run_optimize(build_state(warm, device, dtype, args.box), model, args,
                     max_memory_scaler=w_atoms + 1, max_steps=args.warmup_steps, plain=False,
                     quiet=True)
        warm_s = clock(device) - t0
    else:
        warm_s = 0.0

    # max_memory_scaler: given, TorchSim's estimate (CUDA), or everything (CPU).
    estimate_s = 0.0
    if args.max_memory_scaler is not None:
        scaler, source = float(args.max_memory_scaler), "--max-memory-scaler"
    elif device.type == "cuda":
        probe = InFlightAutoBatcher(model, memory_scales_with=args.memory_scales_with,
                                    max_memory_scaler=None,
                                    max_atoms_to_try=args.max_atoms_to_try,
                                    memory_scaling_factor=args.memory_scaling_factor,
                                    max_memory_padding=args.memory_padding)
        t0 = clock(device)
        scaler = float(probe.load_states(build_state(records, device, dtype, args.box)))
        estimate_s = clock(device) - t0
        del probe
        torch.cuda.empty_cache()
        source = ("TorchSim's estimate: InFlightAutoBatcher.load_states "
                  "(determine_max_batch_size on the first molecule, then on the smallest "
                  "and largest molecule of the first batch) x max_memory_padding")
        print(f"max_memory_scaler {scaler:.0f} ({args.memory_scales_with}) estimated in "
              f"{estimate_s:.1f} s", flush=True)
    else:
        scaler = float(n_atoms + 1)
        source = "CPU: every molecule in one batch (TorchSim cannot measure CPU memory)"

    state = build_state(records, device, dtype, args.box)
    model.reset_counters()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = clock(device)
    final, batcher, n_cap = run_optimize(state, model, args, scaler, args.max_steps,
                                         args.plain_optimize)
    wall = clock(device) - t0

    if final.n_systems != n_mol:
        raise RuntimeError(f"ts.optimize returned {final.n_systems} systems for {n_mol} molecules")
    energy = final.energy.detach().to("cpu", torch.float64).tolist()
    fmax = system_wise_max_force(final).detach().to("cpu", torch.float64).tolist()
    counts = final.n_atoms_per_system.detach().cpu().tolist()
    if counts != [r.n_atoms for r in records]:
        raise RuntimeError("final state's molecules are not in library order")
    steps = [a * args.steps_between_swaps for a in batcher.iteration_count]
    if len(steps) != n_mol:
        raise RuntimeError(f"{len(steps)} iteration counters for {n_mol} molecules")
    converged = [f < args.fmax for f in fmax]
    results = [
        {"index": r.index, "name": r.name, "atoms": r.n_atoms,
         "energy_ev": e, "max_force_ev_per_a": f, "converged": c, "steps": s}
        for r, e, f, c, s in zip(records, energy, fmax, converged, steps)
    ]
    n_conv = sum(converged)
    done_steps = [s for s in steps if s is not None]
    elements = sorted({z for r in records for z in r.numbers})
    out = {
        "engine": "torch-sim",
        "torch_sim_version": TS_VERSION,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda" else
                        f"cpu ({platform.machine()}, {torch.get_num_threads()} torch threads)"),
        "model": args.model,
        "model_sha256": sha256(args.model),
        "model_supported_elements": model.supported,
        "model_interface": "v1" if model.cutoffs is None else "v2",
        "neighbor_list": (None if model.cutoffs is None else
                          f"torch_sim.neighbors.torchsim_nl ({NL_IMPL}), cutoff "
                          f"{model.cutoffs[0]} A, pbc off, rebuilt every force call"),
        "max_row_capacity": model.max_capacity or None,
        "prepare_calls": model.prepares,
        "library": args.library,
        "library_sha256": sha256(args.library),
        "records_read": read,
        "records_skipped": skipped,
        "limit": args.limit,
        "molecules": n_mol,
        "atoms": n_atoms,
        "elements": [SYMBOL[z] for z in elements],
        "tables_stubbed": TABLES_STUBBED,
        "runner": (f"torch_sim.optimize (max_steps="
                   f"{optimize_max_steps(args.max_steps, args.steps_between_swaps, args.plain_optimize)}"
                   + (", --max-steps unchanged" if args.plain_optimize else
                      ", --max-steps rounded up to a multiple of steps_between_swaps")
                   + "; steps counted per molecule)"),
        "optimizer": {"function": "torch_sim.Optimizer.fire (fire_init, fire_step)",
                      "fire_flavor": args.fire_flavor, **FIRE_INIT, **FIRE_STEP,
                      "max_step": args.max_step,
                      "masses": "unit (not used by ase_fire)"},
        "convergence": {"function": "torch_sim.runners.generate_force_convergence_fn",
                        "force_tol_ev_per_a": args.fmax, "include_cell_forces": False,
                        "checked_every_steps": args.steps_between_swaps},
        "max_steps_per_molecule": steps_cap(args.max_steps, args.steps_between_swaps,
                                            args.plain_optimize),
        "global_max_steps_warnings": n_cap,
        "autobatcher": {
            "class": "torch_sim.autobatching.InFlightAutoBatcher",
            "memory_scales_with": args.memory_scales_with,
            "max_memory_scaler": scaler,
            "max_memory_scaler_source": source,
            "estimate_seconds": estimate_s,
            "max_atoms_to_try": args.max_atoms_to_try,
            "memory_scaling_factor": args.memory_scaling_factor,
            "max_memory_padding": args.memory_padding,
            "max_iterations": batcher.max_iterations,
            "steps_between_swaps": args.steps_between_swaps,
        },
        "state_dtype": args.dtype,
        "model_positions_dtype": "float32",
        "box_angstrom": args.box,
        "warmup": {"molecules": len(warm), "steps_per_molecule": args.warmup_steps,
                   "seconds": warm_s},
        "wall_seconds": wall,
        "molecules_per_second": n_mol / wall,
        "molecules_per_second_including_estimate": n_mol / (wall + estimate_s),
        "force_calls": model.calls,
        "atoms_evaluated": model.atoms_evaluated,
        "max_batch_atoms": model.max_atoms,
        "max_batch_molecules": model.max_systems,
        "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                            if device.type == "cuda" else None),
        "converged": n_conv,
        "not_converged": n_mol - n_conv,
        "steps_mean": statistics.fmean(done_steps) if done_steps else None,
        "steps_median": statistics.median(done_steps) if done_steps else None,
        "steps_max": max(done_steps) if done_steps else None,
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"torch-sim {TS_VERSION} {out['device_name']}: {n_mol} molecules ({n_atoms} atoms) in "
          f"{wall:.2f} s = {n_mol / wall:.2f} molecules/s; {n_conv} converged; "
          f"{model.calls} force calls, batches up to {model.max_systems} molecules / "
          f"{model.max_atoms} atoms; max_memory_scaler {scaler:.0f}"
          + (f" (estimate {estimate_s:.1f} s)" if estimate_s else "") + f" -> {args.out}",
          flush=True)
    bad = [r["name"] for r in results if not math.isfinite(r["energy_ev"])
           or not math.isfinite(r["max_force_ev_per_a"])]
    if bad:
        print(f"error: non-finite energy or force for {len(bad)} molecules: {bad[:5]}",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
