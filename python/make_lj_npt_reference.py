"""Reference density of a Lennard-Jones fluid at constant pressure from
OpenMM, for tests/barostat_lj.rs (which runs the same system with
mlff-md's Langevin integrator and Monte Carlo barostat).

    python python/make_lj_npt_reference.py
    # writes tests/data/lj_npt_openmm_reference.json and tests/data/lj_npt_start.xyz

256 argon-like atoms (39.948 amu, sigma 3.4 Å, epsilon 0.0104 eV, cutoff
2.5 sigma = 8.5 Å) with the conventions of make_lj_reference.py:
NonbondedForce with CutoffPeriodic, no switching function, no dispersion
correction and zero charges, i.e. plain truncated LJ, which is what the
engine's periodic Lennard-Jones computes. Reduced temperature T* = 1.5 and
pressure P* = 1.0 (P = epsilon / sigma^3): a fluid at reduced density
about 0.61 (box about 25 Å, wider than two cutoffs).

LangevinMiddleIntegrator (BAOAB, like the engine's Langevin) and
MonteCarloBarostat, CPU platform with one thread. RUNS independent runs
(their own seeds for velocities, thermostat and barostat) start from an FCC
lattice at reduced density 0.6 (it melts within a few ps), are
equilibrated, then sampled; each run's time average is one sample, the
reference is the mean over runs and its standard error the spread of the
run means over sqrt(RUNS).

Choices that make the engine's side affordable (its test runs on a CPU):
* a 20 fs step (0.0093 in LJ time units; in NVE it conserves energy as
  well as 10 fs does, the truncation's energy jumps dominating both: both
  are recorded) and a volume move every 5 steps: the density's integrated
  autocorrelation time is then about 90 steps (600 with moves every 25);
* tests/data/lj_npt_start.xyz: STARTS equilibrated configurations for the
  engine, PER_RUN from each run's production, far apart in time, those
  whose volume is closest to the reference mean, scaled (by well under
  1 %) to the cell of the mean density, so that the engine's members need
  almost no equilibration.

Needs `pip install openmm` (not part of `make setup`: the reference is
committed). Takes about 5 minutes.
"""

import json
import math
import os
import time

import numpy as np
import openmm as mm
from openmm import unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "lj_npt_openmm_reference.json")
START = os.path.join(ROOT, "tests", "data", "lj_npt_start.xyz")
# 1 eV in kJ/mol: e · N_A / 1000 (both exact since 2019).
EV_KJ_MOL = 1.602176634e-19 * 6.02214076e23 / 1000.0
KB_EV_PER_K = 8.617333262e-5  # k_B / e, exact since 2019
EV_PER_A3_IN_BAR = 1.602176634e6  # 1.602176634e-19 J / 1e-30 m³ = 1.602e11 Pa
AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660
SIGMA, EPSILON, CUTOFF, MASS = 3.4, 0.0104, 8.5, 39.948
T_REDUCED, P_REDUCED, LATTICE_DENSITY_REDUCED = 1.5, 1.0, 0.6
TEMPERATURE = T_REDUCED * EPSILON / KB_EV_PER_K  # K
PRESSURE = P_REDUCED * EPSILON / SIGMA**3 * EV_PER_A3_IN_BAR  # bar
TIMESTEP_FS, FRICTION_PER_PS, BAROSTAT_INTERVAL = 20.0, 1.0, 5
RUNS, EQUILIBRATION, PRODUCTION, SAMPLE_INTERVAL = 8, 10_000, 60_000, 25
# Snapshots kept per run as candidate starts, and starts taken per run.
SNAPSHOT_INTERVAL, PER_RUN = 5_000, 2
NVE_STEPS = 2_000


def fcc_lattice():
    """4×4×4 FCC cells (256 sites) at the lattice density; positions, box (Å)."""
    a = (4.0 / LATTICE_DENSITY_REDUCED) ** (1.0 / 3.0) * SIGMA
    basis = [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    positions = [[(i + b[0]) * a, (j + b[1]) * a, (k + b[2]) * a]
                 for i in range(4) for j in range(4) for k in range(4) for b in basis]
    return positions, 4 * a


def make_system(n, box, barostat_seed=None):
    system = mm.System()
    system.setDefaultPeriodicBoxVectors(mm.Vec3(box / 10, 0, 0), mm.Vec3(0, box / 10, 0),
                                        mm.Vec3(0, 0, box / 10))
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(CUTOFF / 10)
    nb.setUseSwitchingFunction(False)
    nb.setUseDispersionCorrection(False)
    for _ in range(n):
        system.addParticle(MASS)
        nb.addParticle(0.0, SIGMA / 10, EPSILON * EV_KJ_MOL)
    system.addForce(nb)
    if barostat_seed is not None:
        barostat = mm.MonteCarloBarostat(PRESSURE * unit.bar, TEMPERATURE * unit.kelvin,
                                         BAROSTAT_INTERVAL)
        barostat.setRandomNumberSeed(barostat_seed)
        system.addForce(barostat)
    return system


def platform():
    return mm.Platform.getPlatformByName("CPU"), {"Threads": "1"}


def box_length(state):
    return state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)[0][0]


def one_run(seed, positions, box):
    """Equilibrate, then sample N/V every SAMPLE_INTERVAL steps. The number
    densities (Å⁻³), the smallest box length seen, snapshots (box length,
    wrapped positions in Å) every SNAPSHOT_INTERVAL steps and the final
    state."""
    system = make_system(len(positions), box, barostat_seed=seed)
    integrator = mm.LangevinMiddleIntegrator(TEMPERATURE * unit.kelvin,
                                             FRICTION_PER_PS / unit.picosecond,
                                             TIMESTEP_FS * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    plat, props = platform()
    context = mm.Context(system, integrator, plat, props)
    context.setPositions(np.array(positions) / 10)
    context.setVelocitiesToTemperature(TEMPERATURE * unit.kelvin, seed)
    integrator.step(EQUILIBRATION)
    densities, snapshots, smallest = [], [], math.inf
    for k in range(1, PRODUCTION // SAMPLE_INTERVAL + 1):
        integrator.step(SAMPLE_INTERVAL)
        state = context.getState()
        smallest = min(smallest, box_length(state))  # cubic, scaled isotropically
        volume = state.getPeriodicBoxVolume().value_in_unit(unit.angstrom**3)
        densities.append(len(positions) / volume)
        if k * SAMPLE_INTERVAL % SNAPSHOT_INTERVAL == 0:
            s = context.getState(getPositions=True, enforcePeriodicBox=True)
            snapshots.append((box_length(s),
                              s.getPositions(asNumpy=True).value_in_unit(unit.angstrom)))
    final = context.getState(getPositions=True, getVelocities=True)
    return np.array(densities), smallest, snapshots, final


def nve_energy_fluctuation(state, n, dt_fs):
    """RMS deviation and drift of the total energy (eV) over
    NVE_STEPS · TIMESTEP_FS fs of velocity Verlet at `dt_fs` from an
    equilibrated state (no barostat)."""
    system = make_system(n, box_length(state))
    integrator = mm.VerletIntegrator(dt_fs * unit.femtosecond)
    plat, props = platform()
    context = mm.Context(system, integrator, plat, props)
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    steps = int(round(NVE_STEPS * TIMESTEP_FS / dt_fs))
    energies = []
    for _ in range(50):
        integrator.step(steps // 50)
        s = context.getState(getEnergy=True)
        energies.append((s.getPotentialEnergy() + s.getKineticEnergy())
                        .value_in_unit(unit.kilojoule_per_mole) / EV_KJ_MOL)
    kinetic = s.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_KJ_MOL
    e = np.array(energies)
    return {"timestep_fs": dt_fs, "steps": steps, "rms_ev": float(e.std()),
            "drift_ev": float(e[-1] - e[0]), "kinetic_energy_ev": kinetic}


def pick_starts(snapshots, box):
    """PER_RUN snapshots of one run, at least two snapshot intervals apart,
    closest in box length to `box`, scaled to it; their scale factors."""
    order = sorted(range(len(snapshots)), key=lambda i: abs(snapshots[i][0] - box))
    chosen = []
    for i in order:
        if all(abs(i - j) >= 2 for j in chosen):
            chosen.append(i)
        if len(chosen) == PER_RUN:
            break
    return [(box / snapshots[i][0], snapshots[i][1] * box / snapshots[i][0]) for i in chosen]


def write_starts(starts, box):
    n = len(starts[0])
    with open(START, "w") as out:
        for k, positions in enumerate(starts):
            out.write(f"{n}\nstart {k} of {len(starts)}: {n} argon-like atoms equilibrated by "
                      f"make_lj_npt_reference.py, in a {box:.6f} Å cubic cell\n")
            for p in positions:
                out.write("Ar {:.6f} {:.6f} {:.6f}\n".format(*p))


def main():
    t0 = time.time()
    positions, box = fcc_lattice()
    n = len(positions)
    run_means, run_ses, smallest, snapshots, final = [], [], math.inf, [], None
    for k in range(RUNS):
        seed = 1001 + k
        rho, low, snaps, final = one_run(seed, positions, box)
        smallest = min(smallest, low)
        snapshots.append(snaps)
        # Standard error within the run from 10 blocks (a check only).
        blocks = rho[: len(rho) // 10 * 10].reshape(10, -1).mean(axis=1)
        run_means.append(float(rho.mean()))
        run_ses.append(float(blocks.std(ddof=1) / math.sqrt(10)))
        print(f"run {k} (seed {seed}): rho = {rho.mean():.6f} ± {run_ses[-1]:.6f} Å⁻³ "
              f"(rho* {rho.mean() * SIGMA**3:.4f}), smallest box {low:.2f} Å, "
              f"{time.time() - t0:.0f} s", flush=True)
    assert smallest > 2 * CUTOFF, f"the box shrank to {smallest} Å, under two cutoffs"
    means = np.array(run_means)
    mean, se = float(means.mean()), float(means.std(ddof=1) / math.sqrt(RUNS))
    start_box = (n / mean) ** (1.0 / 3.0)
    picked = [s for run in snapshots for s in pick_starts(run, start_box)]
    write_starts([p for _, p in picked], start_box)
    nve = [nve_energy_fluctuation(final, n, dt) for dt in (TIMESTEP_FS, TIMESTEP_FS / 2)]
    wall = time.time() - t0
    result = {
        "openmm_version": mm.__version__,
        "platform": "CPU (1 thread, single precision)",
        "n_atoms": n, "sigma_a": SIGMA, "epsilon_ev": EPSILON, "cutoff_a": CUTOFF,
        "mass_amu": MASS,
        "potential": "truncated LJ: no shift, no switching, no long-range correction",
        "reduced_temperature": T_REDUCED, "reduced_pressure": P_REDUCED,
        "temperature_k": TEMPERATURE, "pressure_bar": PRESSURE,
        "lattice_box_a": box, "lattice_reduced_density": LATTICE_DENSITY_REDUCED,
        "integrator": "LangevinMiddleIntegrator", "timestep_fs": TIMESTEP_FS,
        "friction_per_ps": FRICTION_PER_PS, "barostat": "MonteCarloBarostat",
        "barostat_interval": BAROSTAT_INTERVAL, "runs": RUNS,
        "seeds": [1001 + k for k in range(RUNS)],
        "equilibration_steps": EQUILIBRATION, "production_steps": PRODUCTION,
        "sample_interval": SAMPLE_INTERVAL, "smallest_box_a": smallest,
        "run_number_density_a3": run_means, "run_number_density_block_se_a3": run_ses,
        "run_density_g_cm3": [m * MASS * AMU_PER_A3_IN_G_PER_CM3 for m in run_means],
        "number_density_a3": mean, "number_density_se_a3": se,
        "reduced_density": mean * SIGMA**3, "reduced_density_se": se * SIGMA**3,
        "density_g_cm3": mean * MASS * AMU_PER_A3_IN_G_PER_CM3,
        "density_se_g_cm3": se * MASS * AMU_PER_A3_IN_G_PER_CM3,
        "starts": os.path.relpath(START, ROOT), "starts_box_a": start_box,
        "starts_scale_factors": [f for f, _ in picked],
        "nve_check": nve, "wall_time_s": wall,
    }
    with open(OUT, "w") as out:
        json.dump(result, out, indent=1)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: density {result['density_g_cm3']:.5f} ± "
          f"{result['density_se_g_cm3']:.5f} g/cm³ (rho* {mean * SIGMA**3:.4f}, relative SE "
          f"{se / mean:.2%}); {len(picked)} starts in {start_box:.4f} Å, scaled by "
          f"{min(f for f, _ in picked):.4f} to {max(f for f, _ in picked):.4f}; NVE total-energy "
          f"RMS at {TIMESTEP_FS:g} and {TIMESTEP_FS / 2:g} fs: {nve[0]['rms_ev']:.4f}, "
          f"{nve[1]['rms_ev']:.4f} eV; {wall:.0f} s")


if __name__ == "__main__":
    main()
