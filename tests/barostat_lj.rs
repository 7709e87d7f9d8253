//! The Monte Carlo barostat on an interacting system: a Lennard-Jones fluid
//! at constant pressure has OpenMM's density
//! (tests/data/lj_npt_openmm_reference.json and the starting structures
//! tests/data/lj_npt_start.xyz, made by python/make_lj_npt_reference.py).

mod common;

use std::path::{Path, PathBuf};

use common::runs::*;
use common::*;

/// Members, one per starting structure.
const MEMBERS: usize = 16;
/// Steps per member, and the first of them left out of the averages.
const STEPS: u64 = 300;
const EQUILIBRATION: u64 = 50;

/// OpenMM's numbers and the parameters they were made with.
struct Reference(serde_json::Value);

impl Reference {
    fn load() -> Reference {
        let path = root().join("tests/data/lj_npt_openmm_reference.json");
        Reference(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
    }

    fn f(&self, key: &str) -> f64 {
        self.0[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in the reference"))
    }

    fn u(&self, key: &str) -> u64 {
        self.0[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in the reference"))
    }
}

/// The reference's system, integrator and barostat as an mlff-md config;
/// a record at every volume move.
fn config(dir: &Path, r: &Reference, out: &Path) -> PathBuf {
    let a = r.f("starts_box_a");
    let interval = r.u("barostat_interval");
    let text = format!(
        r#"[system]
structure = "{structure}"
cell = [{a}, {a}, {a}]
[model]
kind = "lennard-jones"
epsilon = {epsilon}
sigma = {sigma}
cutoff = {cutoff}
device = "cpu"
[integrator]
kind = "langevin"
timestep = {timestep}
temperature = {temperature}
friction = {friction}
[ensemble]
members = {MEMBERS}
seed = 13
[barostat]
pressure = {pressure}
interval = {interval}
[run]
steps = {STEPS}
[output]
directory = "{out}"
trajectory_interval = 0
observables_interval = {interval}
checkpoint_interval = 0
"#,
        structure = root().join(r.0["starts"].as_str().unwrap()).display(),
        epsilon = r.f("epsilon_ev"),
        sigma = r.f("sigma_a"),
        cutoff = r.f("cutoff_a"),
        timestep = r.f("timestep_fs"),
        temperature = r.f("temperature_k"),
        friction = r.f("friction_per_ps"),
        pressure = r.f("pressure_bar"),
        out = out.display(),
    );
    let p = dir.join("lj_npt.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// 256 argon-like atoms (truncated Lennard-Jones, cutoff 2.5 σ, no
/// long-range correction) at T* = 1.5 and P* = 1.0 under the engine's
/// Langevin integrator and Monte Carlo barostat, with the time step,
/// friction and barostat interval of the reference: OpenMM's
/// LangevinMiddleIntegrator and MonteCarloBarostat, 8 runs of 1.2 ns from
/// an FCC lattice (reduced density 0.6070, standard error 0.06 %).
///
/// The engine is slow on a CPU (a few ms per member and step: about
/// 80 s here on 2 cores), so its members start from 16 of OpenMM's
/// equilibrated configurations, scaled to the cell of the mean density, and
/// run 6 ps each (the density's correlation time is about 90 steps,
/// 1.8 ps). Each member's mean number density after the first 50 steps is
/// one sample; the standard error comes from their spread, as the
/// reference's does from its runs'. The means must agree within 6 combined
/// standard errors (with 15 degrees of freedom a false alarm about once in
/// 40,000 seeds), and the combined standard error must be below 1 % of the
/// density, so that an error worth a few per cent fails: shifted instead of
/// truncated Lennard-Jones (`shift = true`) gives a density 4.6 % lower
/// here, 8.8 standard errors; so would a wrong kT or pressure conversion
/// or a missing N kT ln(V'/V) term. Members start at OpenMM's density and
/// relax toward the engine's within a couple of correlation times, so a
/// wrong density shows in their means (about 80 % of it).
#[test]
fn a_lennard_jones_fluid_has_openmms_density_at_constant_pressure() {
    let r = Reference::load();
    assert_eq!(r.u("n_atoms"), 256);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = config(tmp.path(), &r, &out);
    let started = std::time::Instant::now();
    ok(bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let wall = started.elapsed().as_secs_f64();

    let h5 = common::h5_open(out.join("observables.h5"));
    let volume = read_f64(&h5, "observables/volume/value");
    let steps = read_i64(&h5, "observables/volume/step");
    assert_eq!(volume.len(), steps.len() * MEMBERS);
    let n = r.u("n_atoms") as f64;
    let mut sums = [0.0; MEMBERS];
    let mut samples = 0.0;
    let mut smallest = f64::INFINITY;
    // A row per record, a column per member.
    for (row, &step) in volume.chunks(MEMBERS).zip(&steps) {
        smallest = row.iter().fold(smallest, |a, &v| a.min(v));
        if step as u64 > EQUILIBRATION {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += n / v;
            }
            samples += 1.0;
        }
    }
    let means: Vec<f64> = sums.iter().map(|s| s / samples).collect();
    let (m, se) = (mean(&means), standard_error(&means));
    let (want, want_se) = (r.f("number_density_a3"), r.f("number_density_se_a3"));
    let combined = se.hypot(want_se);
    let reduced = r.f("sigma_a").powi(3);
    // Å⁻³ to g/cm³: the mass in g over 1e-24 cm³.
    let g_cm3 = r.f("mass_amu") * ATOMIC_MASS_UNIT_KG * 1.0e3 / 1.0e-24;
    eprintln!(
        "LJ NPT, {MEMBERS} members × {STEPS} steps in {wall:.1} s: ρ* = {:.4} ± {:.4} \
         ({:.5} ± {:.5} g/cm³); OpenMM ρ* = {:.4} ± {:.4} ({:.5} ± {:.5} g/cm³); \
         difference {:.2} combined standard errors; narrowest cell {:.2} Å",
        m * reduced,
        se * reduced,
        m * g_cm3,
        se * g_cm3,
        want * reduced,
        want_se * reduced,
        want * g_cm3,
        want_se * g_cm3,
        (m - want) / combined,
        smallest.cbrt(),
    );
    // The engine, unlike OpenMM, allows cells narrower than two cutoffs;
    // the reference never had one.
    assert!(smallest.cbrt() > 2.0 * r.f("cutoff_a"));
    assert!(
        combined < 0.01 * want,
        "combined standard error {combined} Å⁻³ too wide to see a difference of a few per cent"
    );
    assert!(
        (m - want).abs() < 6.0 * combined,
        "number density {m} ± {se} Å⁻³, OpenMM {want} ± {want_se} Å⁻³"
    );
}
