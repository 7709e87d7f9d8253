//! Physics of the integrators and the batched state, on CPU libtorch.
//! Tolerances come from analytic results or from standard errors of
//! independent samples (members are independent), with fixed seeds.

mod common;

use common::*;
use mlff_md::force::{update_forces, ForceProvider, Harmonic, TorchScriptModel};
use mlff_md::integrate::{Integrator, Langevin, VelocityVerlet};
use mlff_md::rng::CounterRng;
use mlff_md::state::BatchState;
use mlff_md::units::EV_PER_A_AMU_TO_A_PER_FS2;
use tch::{Device, Kind, Tensor};

fn total_energy(state: &BatchState) -> Vec<f64> {
    let e = host(&state.energies);
    let k = host(&state.kinetic_energy());
    e.iter().zip(&k).map(|(a, b)| a + b).collect()
}

/// Harmonic wells, NVE: positions and velocities follow the exact solution
/// x(t) = x₀ + A cos ωt (each atom its own ω = sqrt(k/m)), as in OpenMM's
/// single-bond test, and total energy is conserved.
#[test]
fn harmonic_nve_matches_analytic_solution() {
    let molecule = ethanol();
    let mut state = BatchState::new(&molecule, 2, Device::Cpu, Kind::Double);
    let k = 1.0;
    let provider = Harmonic::at_current_positions(&state, k);
    // Displace every atom by a fixed vector; start at rest.
    let amp = Tensor::from_slice(&[0.10, -0.05, 0.08]).view([1, 3]);
    state.positions = &state.positions + &amp;
    update_forces(&mut state, &provider).unwrap();
    let dt = 0.1;
    let mut integrator = VelocityVerlet::new(&state, dt);
    let e0 = total_energy(&state);
    let mut max_rel = 0.0f64;
    for _ in 0..1000 {
        integrator.step(&mut state, &provider).unwrap();
        for (e, e0) in total_energy(&state).iter().zip(&e0) {
            max_rel = max_rel.max(((e - e0) / e0).abs());
        }
    }
    // Each step counts once (the step number drives records and resumes).
    assert_eq!(state.step, 1000);
    let t = 1000.0 * dt;
    let omega = (state.masses.reciprocal() * (k * EV_PER_A_AMU_TO_A_PER_FS2)).sqrt();
    let x_exact = &provider.reference + &amp * (&omega * t).cos();
    let v_exact = -(&amp * &omega) * (&omega * t).sin();
    let dx = max_abs_diff(&state.positions, &x_exact);
    // Velocities compared in Å (v/ω), like OpenMM's scaled comparison.
    let dv = ((&state.velocities - &v_exact) / &omega)
        .abs()
        .max()
        .double_value(&[]);
    assert!(dx < 0.02, "position error {dx} Å");
    assert!(dv < 0.02, "velocity error {dv} (Å units)");
    assert!(max_rel < 1e-4, "relative energy fluctuation {max_rel}");
}

/// The wells' energy is ½ k Σ |x − x₀|² per member and the force
/// −k (x − x₀), at a k other than 1 (where a factor k or 1/k too many
/// would go unseen, as in the NVE test above).
#[test]
fn harmonic_wells_give_half_k_d_squared() {
    let mut state = BatchState::new(&ethanol(), 2, Device::Cpu, Kind::Double);
    let k = 2.5;
    let provider = Harmonic::at_current_positions(&state, k);
    let amp = [0.10, -0.05, 0.08];
    state.positions = &state.positions + Tensor::from_slice(&amp).view([1, 3]);
    let out = provider.compute(&state).unwrap();
    let d2: f64 = amp.iter().map(|a| a * a).sum();
    for e in host(&out.energies) {
        assert!((e - 0.5 * k * d2 * 9.0).abs() < 1e-12, "energy {e}");
    }
    for (i, f) in host(&out.forces).iter().enumerate() {
        assert!((f + k * amp[i % 3]).abs() < 1e-12, "force {i}: {f}");
    }
}

/// Energy error of velocity Verlet with the TorchScript test model: bounded,
/// and shrinking as dt² (ratio ≈ 4 when dt halves).
#[test]
fn nve_energy_error_scales_as_dt_squared() {
    let root = root();
    let molecule = ethanol();
    let model = TorchScriptModel::load(
        &root.join("models/morse_test.pt"),
        Device::Cpu,
        Kind::Double,
    )
    .unwrap();
    let deviation = |dt: f64| -> f64 {
        let mut state = BatchState::new(&molecule, 4, Device::Cpu, Kind::Double);
        state.set_maxwell_boltzmann(300.0, &mut CounterRng::new(11));
        update_forces(&mut state, &model).unwrap();
        let mut integrator = VelocityVerlet::new(&state, dt);
        let e0 = total_energy(&state);
        let steps = (200.0 / dt) as usize;
        let mut worst = vec![0.0f64; 4];
        for _ in 0..steps {
            integrator.step(&mut state, &model).unwrap();
            for (w, (e, e0)) in worst.iter_mut().zip(total_energy(&state).iter().zip(&e0)) {
                *w = w.max((e - e0).abs());
            }
        }
        mean(&worst)
    };
    let coarse = deviation(0.2);
    let fine = deviation(0.1);
    let ratio = coarse / fine;
    // Kinetic energy of 4 × 9 atoms at 300 K is ~0.35 eV per member; the
    // fluctuation must be a small fraction of it.
    assert!(
        coarse < 0.01,
        "energy fluctuation {coarse} eV at dt = 0.2 fs"
    );
    // Leading-order Verlet error is (ω dt)²: halving dt divides it by 4.
    assert!(
        (3.5..4.5).contains(&ratio),
        "dt² scaling: ratio {ratio} ({coarse} / {fine})"
    );
}

/// BAOAB Langevin on harmonic wells samples the canonical ensemble: mean
/// kinetic temperature T and position variance kT/k per coordinate.
#[test]
fn langevin_harmonic_samples_canonical_ensemble() {
    let molecule = ethanol();
    let r = 64;
    let temp = 300.0;
    let k = 1.0;
    let mut state = BatchState::new(&molecule, r, Device::Cpu, Kind::Double);
    let provider = Harmonic::at_current_positions(&state, k);
    update_forces(&mut state, &provider).unwrap();
    state.set_maxwell_boltzmann(temp, &mut CounterRng::new(3));
    let mut integrator = Langevin::new(&state, 0.5, 20.0, temp, 42);
    let n = state.n_atoms as f64;
    for _ in 0..400 {
        integrator.step(&mut state, &provider).unwrap();
    }
    // Per-member running sums of T and of mean squared displacement.
    let mut t_sum = Tensor::zeros([r as i64], (Kind::Double, Device::Cpu));
    let mut x2_sum = Tensor::zeros([r as i64], (Kind::Double, Device::Cpu));
    let samples = 400;
    for _ in 0..samples {
        for _ in 0..10 {
            integrator.step(&mut state, &provider).unwrap();
        }
        t_sum += state.temperature(3.0 * n);
        let d = &state.positions - &provider.reference;
        x2_sum += state.per_member_sum(&d.square()) / (3.0 * n);
    }
    let t_members = host(&(t_sum / samples as f64));
    let x2_members = host(&(x2_sum / samples as f64));
    let (t_mean, t_se) = (mean(&t_members), standard_error(&t_members));
    let (x2_mean, x2_se) = (mean(&x2_members), standard_error(&x2_members));
    let x2_exact = kb_ev() * temp / k;
    assert!(
        (t_mean - temp).abs() < 6.0 * t_se,
        "<T> = {t_mean} ± {t_se} K"
    );
    assert!(
        (x2_mean - x2_exact).abs() < 6.0 * x2_se,
        "<dx²> = {x2_mean} ± {x2_se}, exact {x2_exact}"
    );
    // The standard errors must be small enough for the test to mean something.
    assert!(
        t_se < 0.02 * temp && x2_se < 0.02 * x2_exact,
        "se {t_se} {x2_se}"
    );
}

fn langevin_positions(seed: u64) -> Tensor {
    let molecule = ethanol();
    let mut state = BatchState::new(&molecule, 3, Device::Cpu, Kind::Double);
    let provider = Harmonic::at_current_positions(&state, 2.0);
    update_forces(&mut state, &provider).unwrap();
    let mut integrator = Langevin::new(&state, 1.0, 5.0, 300.0, seed);
    for _ in 0..50 {
        integrator.step(&mut state, &provider).unwrap();
    }
    state.positions
}

#[test]
fn langevin_is_reproducible_by_seed() {
    let a = langevin_positions(9);
    assert!(
        a.equal(&langevin_positions(9)),
        "same seed must give the same trajectory"
    );
    assert!(
        max_abs_diff(&a, &langevin_positions(10)) > 1e-3,
        "different seeds must differ"
    );
}

/// R members evaluated in one batch follow exactly the trajectories they
/// follow when run one at a time (same model, same random streams).
#[test]
fn batching_changes_no_physics() {
    let root = root();
    let molecule = mlff_md::system::Molecule::load(&[root.join("systems/ethanol.pdb")]).unwrap();
    let model =
        TorchScriptModel::load(&root.join("models/morse_test.pt"), Device::Cpu, Kind::Float)
            .unwrap();
    let run = |ids: &[usize]| -> BatchState {
        let mut state = BatchState::with_members(&molecule, ids, Device::Cpu, Kind::Double);
        state.set_maxwell_boltzmann(300.0, &mut CounterRng::new(5));
        update_forces(&mut state, &model).unwrap();
        let mut integrator = Langevin::new(&state, 0.5, 1.0, 300.0, 77);
        for _ in 0..100 {
            integrator.step(&mut state, &model).unwrap();
        }
        state
    };
    let ids: Vec<usize> = (0..8).collect();
    let batched = run(&ids);
    let n = molecule.n_atoms() as i64;
    for &m in &ids {
        let alone = run(&[m]);
        let rows = batched.positions.narrow(0, m as i64 * n, n);
        let d = max_abs_diff(&rows, &alone.positions);
        assert!(d < 1e-4, "member {m}: batched and alone differ by {d} Å");
        let de = (host(&batched.energies)[m] - host(&alone.energies)[0]).abs();
        assert!(de < 1e-4, "member {m}: energy differs by {de} eV");
    }
    // Members started from different models of the multi-model PDB differ.
    assert!(
        max_abs_diff(
            &batched.positions.narrow(0, 0, n),
            &batched.positions.narrow(0, n, n)
        ) > 0.1
    );
}

/// Maxwell-Boltzmann initial velocities: zero net momentum per member and the
/// right mean kinetic energy (3N−3 degrees of freedom remain).
#[test]
fn maxwell_boltzmann_velocities() {
    let molecule = ethanol();
    let r = 256;
    let mut state = BatchState::new(&molecule, r, Device::Cpu, Kind::Double);
    state.set_maxwell_boltzmann(500.0, &mut CounterRng::new(1));
    let p = (&state.masses * &state.velocities)
        .view([r as i64, -1, 3])
        .sum_dim_intlist(1, false, Kind::Double);
    assert!(p.abs().max().double_value(&[]) < 1e-12);
    let n = state.n_atoms as f64;
    let temps = host(&state.temperature(3.0 * n - 3.0));
    let (m, se) = (mean(&temps), standard_error(&temps));
    assert!((m - 500.0).abs() < 6.0 * se, "<T> = {m} ± {se}");
    // Kinetic energy uses the amu·Å²/fs² → eV factor.
    let ke = host(&state.kinetic_energy());
    let manual: f64 = host(&(&state.masses * state.velocities.square()).sum(Kind::Double))[0]
        * 0.5
        * amu_a2_fs2_ev();
    assert!((ke.iter().sum::<f64>() - manual).abs() < 1e-9 * manual);
}

/// The TorchScript provider evaluates a batch of R with one call and its
/// forces are minus the gradient (central finite differences).
#[test]
fn torchscript_forces_match_finite_differences() {
    let root = root();
    let molecule = ethanol();
    let model = TorchScriptModel::load(
        &root.join("models/morse_test.pt"),
        Device::Cpu,
        Kind::Double,
    )
    .unwrap();
    let state = BatchState::new(&molecule, 2, Device::Cpu, Kind::Double);
    let out = model.compute(&state).unwrap();
    assert_eq!(out.energies.size(), vec![2]);
    let h = 1e-5;
    for (row, xyz) in [(0i64, 0i64), (4, 2), (12, 1)] {
        let energy_at = |delta: f64| {
            let mut s = BatchState::new(&molecule, 2, Device::Cpu, Kind::Double);
            let bump = Tensor::zeros_like(&s.positions);
            let _ = bump.get(row).get(xyz).fill_(delta);
            s.positions = &s.positions + bump;
            host(&model.compute(&s).unwrap().energies)
        };
        let member = (row / molecule.n_atoms() as i64) as usize;
        let fd = -(energy_at(h)[member] - energy_at(-h)[member]) / (2.0 * h);
        let f = out.forces.get(row).get(xyz).double_value(&[]);
        assert!(
            (fd - f).abs() < 1e-6 * fd.abs().max(1.0),
            "row {row}: fd {fd} vs {f}"
        );
    }
    assert_eq!(
        model.supported_elements().map(|v| v.contains(&6)),
        Some(true)
    );
}

/// Degrees of freedom of the kinetic temperature: 3N − 3 under velocity
/// Verlet (total momentum is conserved), 3N under Langevin, and 3 for a
/// lone atom either way (nothing to subtract: its momentum is the motion).
#[test]
fn degrees_of_freedom_per_integrator() {
    use mlff_md::integrate::degrees_of_freedom;
    let molecule = ethanol();
    let state = BatchState::new(&molecule, 1, Device::Cpu, Kind::Double);
    let verlet = VelocityVerlet::new(&state, 0.5);
    let langevin = Langevin::new(&state, 0.5, 1.0, 300.0, 1);
    assert_eq!(degrees_of_freedom(9, &verlet), 24.0);
    assert_eq!(degrees_of_freedom(9, &langevin), 27.0);
    assert_eq!(degrees_of_freedom(1, &verlet), 3.0);
    assert_eq!(degrees_of_freedom(2, &verlet), 3.0);
    assert_eq!(degrees_of_freedom(1, &langevin), 3.0);
    assert_eq!(verlet.timestep(), 0.5);
    assert_eq!(langevin.timestep(), 0.5);
    // What the log and /parameters say about the integrator.
    assert_eq!(verlet.describe(), "velocity Verlet (NVE), dt = 0.5 fs");
    assert_eq!(
        langevin.describe(),
        "BAOAB Langevin (NVT), dt = 0.5 fs, friction = 1 1/ps"
    );
}

/// What velocity Verlet inherits from the Integrator trait's defaults,
/// which cargo-mutants found no test holding (docs/mutants.md): it has no
/// thermostat to set (so replica exchange must refuse it rather than swap
/// temperatures it cannot impose), no random stream for a checkpoint to
/// record, and a CUDA-graph replay of its step counts exactly one step.
#[test]
fn verlet_has_no_thermostat_and_a_replay_counts_one_step() {
    let molecule = ethanol();
    let mut state = BatchState::new(&molecule, 2, Device::Cpu, Kind::Double);
    let mut verlet = VelocityVerlet::new(&state, 0.5);
    let temperatures = Tensor::from_slice(&[300.0, 400.0]);
    assert!(!verlet.set_temperatures(&state, &temperatures));
    assert_eq!(verlet.rng_counter(), None);
    state.step = 41;
    verlet.replayed(&mut state);
    assert_eq!(state.step, 42);
}
