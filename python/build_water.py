"""Build the periodic water boxes under systems/water/ (offline, deterministic).

    .venv/bin/python python/build_water.py        # from the repository root

Needs OpenMM (PyPI `openmm`, no torch dependency). For each box:

1. OpenMM's Modeller.addSolvent(numAdded=N) cuts exactly N TIP3P waters out
   of OpenMM's pre-equilibrated water box (it tiles the box over a larger
   cube and keeps the N waters farthest from that cube's faces).
2. The cubic cell edge is set from the density of liquid water at 300 K,
   L = (N m_H2O / rho)^(1/3) with rho = 0.99651 g/cm^3, and the waters are
   centred in it.
3. TIP3P (OpenMM's tip3p.xml, rigid water), PME with a 0.9 nm cut-off, on
   OpenMM's CPU platform with one thread and DeterministicForces: energy
   minimisation (L-BFGS, tolerance 10 kJ/mol/nm), then
   NVT Langevin (LangevinMiddleIntegrator, 300 K, 1/ps, 2 fs) for
   EQUIL_STEPS steps from Maxwell-Boltzmann velocities, all seeded with SEED.
   The cell does not change (no barostat), so the density stays the one set.
4. Each water is shifted by whole cell vectors so that its oxygen lies in
   [0, L): molecules are whole (unwrapped), hydrogens may stick out of the
   cell by up to one O-H bond.

Written per box: water_<n>.pdb with CRYST1 (Angstrom, 90 deg, P 1), HETATM
records (residue HOH, atoms O, H1, H2, element column), CONECT records for
the two O-H bonds of every water (no H-H), END. systems/water/index.json
records what was done. Running the script twice gives byte-identical files
(same OpenMM version and platform).
"""

import json
import os
import sys

import numpy as np
import openmm
from openmm import app, unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "systems", "water")

SEED = 20261126
DENSITY_G_CM3 = 0.99651  # liquid water at 300 K, 1 atm
AVOGADRO = 6.02214076e23
M_WATER = 2 * 1.00794 + 15.9994  # g/mol, OpenMM's element masses
EQUIL_STEPS = 2500  # 5 ps at 2 fs
BOXES = {"water_1k": 333, "water_3k": 1000}


def cell_edge(n_waters: int) -> float:
    """Cubic edge in Angstrom for n_waters at DENSITY_G_CM3."""
    volume_cm3 = n_waters * M_WATER / AVOGADRO / DENSITY_G_CM3
    return (volume_cm3 * 1e24) ** (1.0 / 3.0)


def build(n_waters: int) -> tuple[app.Topology, np.ndarray, float, dict]:
    ff = app.ForceField("tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, model="tip3p", numAdded=n_waters)
    top = modeller.topology
    residues = list(top.residues())
    if len(residues) != n_waters or any(r.name != "HOH" for r in residues):
        raise RuntimeError(f"addSolvent gave {len(residues)} residues, wanted {n_waters} HOH")

    L = round(cell_edge(n_waters), 3)  # Angstrom, as written in CRYST1
    pos = np.array(modeller.positions.value_in_unit(unit.angstrom))
    pos += L / 2 - 0.5 * (pos.max(axis=0) + pos.min(axis=0))
    top.setPeriodicBoxVectors(np.eye(3) * L * 0.1 * unit.nanometer)

    system = ff.createSystem(
        top, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
        constraints=app.HBonds, rigidWater=True,
    )
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1.0 / unit.picosecond, 2.0 * unit.femtosecond
    )
    integrator.setRandomNumberSeed(SEED)
    platform = openmm.Platform.getPlatformByName("CPU")
    sim = app.Simulation(top, system, integrator, platform, {"Threads": "1", "DeterministicForces": "true"})
    sim.context.setPositions(pos * 0.1 * unit.nanometer)
    e0 = sim.context.getState(getEnergy=True).getPotentialEnergy()
    sim.minimizeEnergy(tolerance=10 * unit.kilojoule_per_mole / unit.nanometer, maxIterations=2000)
    e1 = sim.context.getState(getEnergy=True).getPotentialEnergy()
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, SEED)
    sim.step(EQUIL_STEPS)
    state = sim.context.getState(getPositions=True, getEnergy=True)
    pos = np.array(state.getPositions().value_in_unit(unit.angstrom))
    ekin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    # 6 degrees of freedom per rigid water, less 3 for the CMMotionRemover
    # that createSystem adds.
    dof = 6 * n_waters - 3
    t_kin = 2 * ekin / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin))

    # Whole molecules, oxygen in [0, L).
    for r in residues:
        idx = [a.index for a in r.atoms()]
        shift = np.floor(pos[idx[0]] / L) * L
        pos[idx] -= shift
    info = {
        "energy_start_kj_mol": e0.value_in_unit(unit.kilojoule_per_mole),
        "energy_minimised_kj_mol": e1.value_in_unit(unit.kilojoule_per_mole),
        "energy_final_kj_mol": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
        "kinetic_temperature_final_k": t_kin,
    }
    return top, pos, L, info


def check(top: app.Topology, pos: np.ndarray, L: float) -> dict:
    """Geometry checks; raises on failure. Returns summary numbers."""
    o, h1, h2 = [], [], []
    for r in top.residues():
        names = [a.name for a in r.atoms()]
        if names != ["O", "H1", "H2"]:
            raise RuntimeError(f"residue {r.index}: atoms {names}")
        i = r.atoms().__next__().index
        o.append(i), h1.append(i + 1), h2.append(i + 2)
    o, h1, h2 = map(np.array, (o, h1, h2))
    d1 = np.linalg.norm(pos[h1] - pos[o], axis=1)
    d2 = np.linalg.norm(pos[h2] - pos[o], axis=1)
    dhh = np.linalg.norm(pos[h1] - pos[h2], axis=1)
    oh = np.concatenate([d1, d2])
    if not (np.all(oh > 0.9) and np.all(oh < 1.0)):
        raise RuntimeError(f"O-H bond lengths {oh.min():.4f}..{oh.max():.4f}")
    if not (np.all(pos[o] >= 0) and np.all(pos[o] < L)):
        raise RuntimeError("an oxygen lies outside [0, L)")
    # minimum-image O-O and intermolecular O-H distances
    d = pos[o][:, None, :] - pos[o][None, :, :]
    d -= L * np.round(d / L)
    roo = np.linalg.norm(d, axis=2)
    np.fill_diagonal(roo, np.inf)
    dh = pos[np.concatenate([h1, h2])][:, None, :] - pos[o][None, :, :]
    dh -= L * np.round(dh / L)
    roh = np.linalg.norm(dh, axis=2)
    n = len(o)
    own = np.concatenate([np.arange(n), np.arange(n)])
    roh[np.arange(2 * n), own] = np.inf
    if roo.min() < 2.3 or roh.min() < 1.4:
        raise RuntimeError(f"close contact: O-O {roo.min():.3f}, O...H {roh.min():.3f}")
    return {
        "oh_bond_min": float(oh.min()),
        "oh_bond_max": float(oh.max()),
        "hh_min": float(dhh.min()),
        "closest_oo": float(roo.min()),
        "closest_intermolecular_oh": float(roh.min()),
        "min_coordinate": float(pos.min()),
        "max_coordinate": float(pos.max()),
    }


def write_pdb(path: str, top: app.Topology, pos: np.ndarray, L: float, remarks: list[str]) -> None:
    lines = [f"REMARK   1 {r}" for r in remarks]
    lines.append(f"CRYST1{L:9.3f}{L:9.3f}{L:9.3f}{90.0:7.2f}{90.0:7.2f}{90.0:7.2f} P 1           1")
    for a in top.atoms():
        x, y, z = pos[a.index]
        name = a.name if len(a.name) == 4 else " " + a.name
        lines.append(
            f"HETATM{a.index + 1:5d} {name:<4s} HOH A{a.residue.index + 1:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {a.element.symbol:>2s}  "
        )
    for r in top.residues():
        i = next(r.atoms()).index + 1
        lines.append(f"CONECT{i:5d}{i + 1:5d}{i + 2:5d}")
        lines.append(f"CONECT{i + 1:5d}{i:5d}")
        lines.append(f"CONECT{i + 2:5d}{i:5d}")
    lines.append("END")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    index = {
        "openmm_version": openmm.__version__,
        "platform": "CPU (Threads 1, DeterministicForces true)",
        "water_model": "TIP3P (tip3p.xml), rigid",
        "seed": SEED,
        "density_g_cm3": DENSITY_G_CM3,
        "equilibration": f"minimise (tol 10 kJ/mol/nm), then {EQUIL_STEPS} steps NVT "
        "LangevinMiddleIntegrator 300 K, 1/ps, 2 fs; PME, cut-off 0.9 nm",
        "command": ".venv/bin/python python/build_water.py",
        "boxes": [],
    }
    for name, n in BOXES.items():
        top, pos, L, info = build(n)
        # the file holds 3-decimal coordinates: check those
        pos = np.round(pos, 3)
        summary = check(top, pos, L)
        density = n * M_WATER / AVOGADRO / (L * 1e-8) ** 3
        if top.getNumAtoms() != 3 * n:
            raise RuntimeError(f"{top.getNumAtoms()} atoms, expected {3 * n}")
        remarks = [
            f"generated by python/build_water.py with OpenMM {openmm.__version__} (CPU platform, 1 thread, deterministic forces)",
            f"{n} TIP3P waters from Modeller.addSolvent, cubic cell {L:.3f} A, {density:.4f} g/cm^3",
            f"minimised, then {EQUIL_STEPS} x 2 fs NVT Langevin 300 K (seed {SEED}); rigid TIP3P, PME 0.9 nm",
            "molecules whole: each oxygen in [0, L), hydrogens may lie just outside the cell",
        ]
        path = os.path.join(OUT, f"{name}.pdb")
        write_pdb(path, top, pos, L, remarks)
        entry = {
            "file": f"{name}.pdb",
            "waters": n,
            "atoms": top.getNumAtoms(),
            "cell_angstrom": round(L, 3),
            "density_g_cm3": round(density, 5),
            **{k: round(v, 4) for k, v in summary.items()},
            **{k: round(v, 3) for k, v in info.items()},
        }
        index["boxes"].append(entry)
        print(json.dumps(entry), flush=True)
    with open(os.path.join(OUT, "index.json"), "w") as f:
        f.write(json.dumps(index, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
