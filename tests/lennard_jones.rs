//! Lennard-Jones through the engine's neighbour list and the pair-model
//! path (contract v2: pair vectors in, forces assembled from dE/dvectors by
//! the list's reverse entries) against OpenMM
//! (tests/data/lj_openmm_reference.json, made by python/make_lj_reference.py:
//! NonbondedForce, CutoffPeriodic, no switching, no dispersion correction,
//! Reference platform in double precision), in a cubic and a triclinic box
//! with atoms outside the box; the symmetries a periodic energy has; a cell
//! between one and two cutoffs wide (several images of a neighbour) against
//! its 2×2×2 supercell; isolated molecules against all pairs.

mod common;

use common::root;
use mlff_md::force::{ForceProvider, LennardJones, LennardJonesPairs, PairForces};
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

fn lj(r: &Reference) -> LennardJonesPairs {
    LennardJonesPairs {
        epsilon: r.epsilon,
        sigma: r.sigma,
        cutoff: r.cutoff,
        shifted: false,
    }
}

/// Energies and flat forces of `state` with `model` through the pair path.
fn evaluate(model: LennardJonesPairs, state: &BatchState) -> (Vec<f64>, Vec<f64>) {
    let provider = PairForces::new(Box::new(model), state).unwrap();
    let out = provider.compute(state).unwrap();
    assert_eq!(provider.overflow(), None);
    (
        Vec::<f64>::try_from(out.energies).unwrap(),
        Vec::<f64>::try_from(out.forces.reshape([-1])).unwrap(),
    )
}

fn energies(r: &Reference, structures: &[Vec<[f64; 3]>]) -> (Vec<f64>, Vec<f64>) {
    let cells = Tensor::from_slice(&r.cells).view([structures.len() as i64, 3, 3]);
    let mut state = batch(structures);
    state.set_cells(&cells);
    evaluate(lj(r), &state)
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

/// A cubic cell 1.6 cutoffs wide, where atoms see several images of a
/// neighbour, has 1/8 of the energy of its 2×2×2 supercell (whose width is
/// over twice the cutoff), and the same forces on the original atoms.
#[test]
fn a_cell_narrower_than_twice_the_cutoff_equals_its_supercell() {
    let r = reference();
    let cutoff = 5.0;
    let l = 8.0;
    let mut rng = mlff_md::rng::HostRng::new(21);
    // 20 atoms on a jittered grid of the small cell (no overlaps).
    let mut small = Vec::new();
    for i in 0..27 {
        if small.len() == 20 {
            break;
        }
        let g = [i / 9, (i / 3) % 3, i % 3];
        small.push(g.map(|q| (q as f64 + 0.5 + 0.3 * (rng.uniform() - 0.5)) * l / 3.0));
    }
    let mut big = Vec::new();
    for image in 0..8 {
        let t = [image / 4, (image / 2) % 2, image % 2].map(|q| q as f64 * l);
        big.extend(
            small
                .iter()
                .map(|p| [p[0] + t[0], p[1] + t[1], p[2] + t[2]]),
        );
    }
    let model = || LennardJonesPairs {
        epsilon: r.epsilon,
        sigma: r.sigma,
        cutoff,
        shifted: false,
    };
    let cell =
        |a: f64| Tensor::from_slice(&[a, 0.0, 0.0, 0.0, a, 0.0, 0.0, 0.0, a]).view([1, 3, 3]);
    let mut s1 = batch(&[small.clone()]);
    s1.set_cells(&cell(l));
    let mut s8 = batch(&[big]);
    s8.set_cells(&cell(2.0 * l));
    let (e1, f1) = evaluate(model(), &s1);
    let (e8, f8) = evaluate(model(), &s8);
    assert!(e1[0].abs() > 1e-3, "a real energy: {e1:?}");
    assert!(
        (8.0 * e1[0] - e8[0]).abs() < 1e-10 * e8[0].abs(),
        "{} vs {}",
        8.0 * e1[0],
        e8[0]
    );
    let worst = f1
        .iter()
        .zip(&f8)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    assert!(worst < 1e-10, "forces differ by {worst}");
}

/// Isolated molecules (dense and cell grids) with a cutoff beyond every
/// pair distance give the all-pairs Lennard-Jones energies and forces.
#[test]
fn isolated_molecules_through_the_list_equal_all_pairs() {
    let r = reference();
    // Two members: the first 40 atoms of each reference structure, a
    // cluster spread over up to ~90 Å (atoms outside the cell); a 200 Å
    // cutoff covers every pair.
    let structures: Vec<Vec<[f64; 3]>> = r.positions.iter().map(|p| p[..40].to_vec()).collect();
    let state = batch(&structures);
    let all = LennardJones {
        epsilon: r.epsilon,
        sigma: r.sigma,
    }
    .compute(&state)
    .unwrap();
    let want_e = Vec::<f64>::try_from(all.energies).unwrap();
    let want_f = Vec::<f64>::try_from(all.forces.reshape([-1])).unwrap();
    let (e, f) = evaluate(
        LennardJonesPairs {
            epsilon: r.epsilon,
            sigma: r.sigma,
            cutoff: 200.0,
            shifted: false,
        },
        &state,
    );
    for (a, b) in e.iter().zip(&want_e) {
        assert!((a - b).abs() < 1e-12 * b.abs(), "{a} vs {b}");
    }
    let scale = want_f.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    let worst = f
        .iter()
        .zip(&want_f)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    assert!(worst < 1e-12 * scale, "forces differ by {worst} of {scale}");
}

#[test]
fn cells_narrower_than_the_cutoff_are_refused() {
    let mut state = batch(&[vec![[0.0; 3], [1.0, 1.0, 1.0]]]);
    state.set_cells(
        &Tensor::from_slice(&[16.0, 0.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, 8.0]).view([1, 3, 3]),
    );
    let model = LennardJonesPairs {
        epsilon: 0.01,
        sigma: 3.4,
        cutoff: 8.5,
        shifted: false,
    };
    let e = PairForces::new(Box::new(model), &state)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("along c is 8.000 Å, less than the cutoff (8.5 Å)"),
        "{e}"
    );
}

/// NVE with the shifted-force Lennard-Jones (energy and force continuous at
/// the cutoff): velocity Verlet's total-energy error scales as dt². (With an
/// energy shift alone, the force's jump at the cutoff puts a floor under the
/// error at small dt: measured 2.5e-6 eV at 1 fs for member 0 here.) Two members (cubic and
/// triclinic boxes of the OpenMM reference, 256 atoms each) run 240 fs at
/// dt = 4, 2 and 1 fs from the same start; the RMS deviation of each
/// member's total energy from its mean must fall by 4 (within 3 to 5) for
/// every halving of dt, and stay far below the kinetic energy.
#[test]
fn nve_energy_error_of_shifted_force_lennard_jones_scales_as_dt_squared() {
    use mlff_md::force::update_forces;
    use mlff_md::integrate::{Integrator, VelocityVerlet};
    use mlff_md::rng::CounterRng;

    let r = reference();
    let mut errors = Vec::new();
    let mut ekin0 = Vec::new();
    for dt in [4.0, 2.0, 1.0] {
        let mut state = batch(&r.positions);
        state.set_cells(&Tensor::from_slice(&r.cells).view([2, 3, 3]));
        let model = LennardJonesPairs {
            epsilon: r.epsilon,
            sigma: r.sigma,
            cutoff: r.cutoff,
            shifted: true,
        };
        let provider = PairForces::new(Box::new(model), &state).unwrap();
        state.set_maxwell_boltzmann(120.0, &mut CounterRng::new(9));
        update_forces(&mut state, &provider).unwrap();
        let mut verlet = VelocityVerlet::new(&state, dt);
        let steps = (240.0 / dt) as usize;
        let mut series = [Vec::new(), Vec::new()];
        for _ in 0..=steps {
            let e = Vec::<f64>::try_from(&state.energies + state.kinetic_energy()).unwrap();
            for (m, s) in series.iter_mut().enumerate() {
                s.push(e[m]);
            }
            verlet.step(&mut state, &provider).unwrap();
        }
        assert_eq!(provider.overflow(), None);
        if ekin0.is_empty() {
            ekin0 = Vec::<f64>::try_from(state.kinetic_energy()).unwrap();
        }
        let rms: Vec<f64> = series
            .iter()
            .map(|s| {
                let mean = s.iter().sum::<f64>() / s.len() as f64;
                (s.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
            })
            .collect();
        errors.push(rms);
    }
    eprintln!("RMS total-energy error (eV) at dt 4, 2, 1 fs: {errors:?}; E_kin {ekin0:?}");
    for m in 0..2 {
        assert!(errors[0][m] < 1e-3 * ekin0[m], "member {m}: {errors:?}");
        for w in errors.windows(2) {
            let ratio = w[0][m] / w[1][m];
            assert!(
                (3.0..5.0).contains(&ratio),
                "member {m}: error ratio {ratio} for a halved time step ({errors:?})"
            );
        }
    }
}

/// A TorchScript model of interface v2 (tests/data/lj_pairs_v2.pt: the same
/// truncated Lennard-Jones, close pairs summed from the inner slot list)
/// gets the engine's pairs through both its general and its prepared
/// (static-shape) path and gives OpenMM's energies and forces.
#[test]
fn a_torchscript_model_of_interface_v2_gets_the_engines_pairs() {
    use mlff_md::force::TorchScriptModel;
    let r = reference();
    let mut state = batch(&r.positions);
    state.set_cells(&Tensor::from_slice(&r.cells).view([2, 3, 3]));
    let path = root().join("tests/data/lj_pairs_v2.pt");
    let model = TorchScriptModel::load(&path, Device::Cpu, Kind::Double).unwrap();
    assert!(model.takes_pairs());
    let provider = PairForces::new(Box::new(model), &state).unwrap();
    let general = provider.compute(&state).unwrap();
    provider.prepare_static(&state).unwrap();
    let prepared = provider.compute(&state).unwrap();
    assert!(provider.describe().contains("interface v2"));
    let scale = r.forces.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    for out in [general, prepared] {
        let e = Vec::<f64>::try_from(out.energies).unwrap();
        let f = Vec::<f64>::try_from(out.forces.reshape([-1])).unwrap();
        for (got, want) in e.iter().zip(&r.energies) {
            assert!(
                (got - want).abs() < 1e-9 * want.abs(),
                "{got} vs OpenMM {want}"
            );
        }
        let worst = f
            .iter()
            .zip(&r.forces)
            .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
        assert!(worst < 1e-9 * scale, "forces differ by {worst} of {scale}");
    }
}
