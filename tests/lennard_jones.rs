//! Periodic Lennard-Jones over the device neighbour list against OpenMM
//! (tests/data/lj_openmm_reference.json, made by python/make_lj_reference.py:
//! NonbondedForce, CutoffPeriodic, no switching, no dispersion correction,
//! Reference platform in double precision), in a cubic and a triclinic box
//! with atoms outside the box; and the symmetries a periodic energy has.

mod common;

use common::root;
use mlff_md::force::{ForceProvider, PeriodicLennardJones};
use mlff_md::state::BatchState;
use mlff_md::system::Molecule;
use tch::{Device, Kind, Tensor};

struct Reference {
    epsilon: f64,
    sigma: f64,
    cutoff: f64,
    cells: Vec<f64>,
    positions: Vec<Vec<[f64; 3]>>,
    energies: Vec<f64>,
    forces: Vec<f64>,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(root().join("tests/data/lj_openmm_reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f = |x: &serde_json::Value| x.as_f64().unwrap();
    let members = v["members"].as_array().unwrap();
    let rows = |x: &serde_json::Value| -> Vec<[f64; 3]> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|r| [f(&r[0]), f(&r[1]), f(&r[2])])
            .collect()
    };
    Reference {
        epsilon: f(&v["epsilon_ev"]),
        sigma: f(&v["sigma_a"]),
        cutoff: f(&v["cutoff_a"]),
        cells: members
            .iter()
            .flat_map(|m| rows(&m["cell"]).concat())
            .collect(),
        positions: members.iter().map(|m| rows(&m["positions"])).collect(),
        energies: members.iter().map(|m| f(&m["energy_ev"])).collect(),
        forces: members
            .iter()
            .flat_map(|m| rows(&m["forces_ev_per_a"]).concat())
            .collect(),
    }
}

/// A batch with member r at `structures[r]`.
fn batch(structures: &[Vec<[f64; 3]>]) -> BatchState {
    let n = structures[0].len();
    let mut m = Molecule::from_symbols(&vec!["Ar"; n], &structures[0]).unwrap();
    m.structures = structures.to_vec();
    BatchState::new(&m, structures.len(), Device::Cpu, Kind::Double)
}

fn energies(r: &Reference, structures: &[Vec<[f64; 3]>]) -> (Vec<f64>, Vec<f64>) {
    let cells = Tensor::from_slice(&r.cells).view([structures.len() as i64, 3, 3]);
    let lj = PeriodicLennardJones::new(r.epsilon, r.sigma, r.cutoff, cells).unwrap();
    let out = lj.compute(&batch(structures)).unwrap();
    (
        Vec::<f64>::try_from(out.energies).unwrap(),
        Vec::<f64>::try_from(out.forces.reshape([-1])).unwrap(),
    )
}

#[test]
fn periodic_lennard_jones_equals_openmm() {
    let r = reference();
    let (e, f) = energies(&r, &r.positions);
    for (m, (got, want)) in e.iter().zip(&r.energies).enumerate() {
        assert!(
            (got - want).abs() < 1e-9 * want.abs(),
            "member {m}: {got} eV, OpenMM {want} eV"
        );
    }
    let scale = r.forces.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    let worst = f
        .iter()
        .zip(&r.forces)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    eprintln!(
        "energies {e:?} vs OpenMM {:?}; largest force difference {worst:e} eV/Å of {scale} eV/Å",
        r.energies
    );
    assert!(
        worst < 1e-9 * scale,
        "forces differ by {worst} eV/Å (largest {scale})"
    );
}

#[test]
fn periodic_energy_is_invariant_under_lattice_moves_and_translation() {
    let r = reference();
    let (e0, _) = energies(&r, &r.positions);
    let mut moved = r.positions.clone();
    // Atom 5 of member 0 by −a + 2c; atom 100 of member 1 by b.
    let (a0, c0, b1) = (&r.cells[0..3], &r.cells[6..9], &r.cells[12..15]);
    for (k, x) in moved[0][5].iter_mut().enumerate() {
        *x += -a0[k] + 2.0 * c0[k];
    }
    for (k, x) in moved[1][100].iter_mut().enumerate() {
        *x += b1[k];
    }
    // Member 1 rigidly translated by an arbitrary vector.
    for p in &mut moved[1] {
        for (k, t) in [3.3, -1.7, 0.4].iter().enumerate() {
            p[k] += t;
        }
    }
    let (e1, _) = energies(&r, &moved);
    for (a, b) in e0.iter().zip(&e1) {
        assert!((a - b).abs() < 1e-10 * a.abs(), "{a} vs {b}");
    }
}

#[test]
fn cells_narrower_than_twice_the_cutoff_are_refused() {
    let cells =
        Tensor::from_slice(&[16.0, 0.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, 20.0]).view([1, 3, 3]);
    let e = PeriodicLennardJones::new(0.01, 3.4, 8.5, cells)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("along a is 16.000 Å, less than twice the cutoff (8.5 Å)"),
        "{e}"
    );
}
