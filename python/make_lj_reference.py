"""Reference energies and forces of a periodic Lennard-Jones fluid from
OpenMM, for tests/lennard_jones.rs (which checks mlff-md's neighbour list
and periodic LJ against them).

    python python/make_lj_reference.py   # writes tests/data/lj_openmm_reference.json

Two members of 256 argon-like atoms (sigma 3.4 Å, epsilon 0.0104 eV, cutoff
2.5 sigma = 8.5 Å): an FCC lattice with random displacements, in a cubic box
and in a triclinic box (OpenMM's reduced form); some atoms are moved by
lattice vectors so they lie outside the box. OpenMM's NonbondedForce with
CutoffPeriodic, no switching function, no dispersion correction, zero
charges, Reference platform in double precision: the potential is plain
truncated LJ. Needs `pip install openmm` (not part of `make setup`: the
reference is committed).
"""

import json
import os
import random

import openmm as mm
from openmm import unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "lj_openmm_reference.json")
# 1 eV in kJ/mol: e · N_A / 1000 (both exact since 2019).
EV_KJ_MOL = 1.602176634e-19 * 6.02214076e23 / 1000.0
SIGMA, EPSILON, CUTOFF = 3.4, 0.0104, 8.5


def lattice(rng, cell):
    """256 FCC sites in fractional coordinates, displaced and some unwrapped."""
    basis = [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    frac = []
    for i in range(4):
        for j in range(4):
            for k in range(4):
                for b in basis:
                    f = [(i + b[0]) / 4, (j + b[1]) / 4, (k + b[2]) / 4]
                    f = [x + rng.uniform(-0.015, 0.015) for x in f]
                    if rng.random() < 0.2:
                        f = [x + rng.choice([-1, 1, 2]) for x in f]
                    frac.append(f)
    return [[sum(f[m] * cell[m][c] for m in range(3)) for c in range(3)] for f in frac]


def openmm_energy_forces(cell, positions):
    system = mm.System()
    system.setDefaultPeriodicBoxVectors(*[mm.Vec3(*[x / 10 for x in v]) for v in cell])
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(CUTOFF / 10)
    nb.setUseSwitchingFunction(False)
    nb.setUseDispersionCorrection(False)
    for _ in positions:
        system.addParticle(39.948)
        nb.addParticle(0.0, SIGMA / 10, EPSILON * EV_KJ_MOL)
    system.addForce(nb)
    integrator = mm.VerletIntegrator(0.001)
    platform = mm.Platform.getPlatformByName("Reference")
    context = mm.Context(system, integrator, platform)
    context.setPositions([mm.Vec3(*[x / 10 for x in p]) for p in positions])
    state = context.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_KJ_MOL
    f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return e, [[x / EV_KJ_MOL / 10 for x in row] for row in f.tolist()]


def main():
    rng = random.Random(20261202)
    a = 23.2
    cells = [
        [[a, 0, 0], [0, a, 0], [0, 0, a]],
        # Reduced triclinic form: |b_x| <= a_x / 2, |c_x| <= a_x / 2, |c_y| <= b_y / 2.
        [[a, 0, 0], [4.0, 22.6, 0], [-3.0, 5.0, 22.0]],
    ]
    members = []
    for cell in cells:
        positions = lattice(rng, cell)
        e, f = openmm_energy_forces(cell, positions)
        members.append({"cell": cell, "positions": positions, "energy_ev": e, "forces_ev_per_a": f})
    with open(OUT, "w") as out:
        json.dump({"openmm_version": mm.__version__, "platform": "Reference (double)",
                   "sigma_a": SIGMA, "epsilon_ev": EPSILON, "cutoff_a": CUTOFF,
                   "members": members}, out)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: energies {[m['energy_ev'] for m in members]}")


if __name__ == "__main__":
    main()
