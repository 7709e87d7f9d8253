//! Sharp checks of the constants and of what the Langevin thermostat
//! samples. Expected values use constants written here from their SI
//! definitions (CODATA 2018), never the crate's, so an error in a constant
//! cannot cancel; the standard errors are small enough (≤ 0.15 %) that a 1 %
//! error in k_B, a 1 % error in the thermostat's noise amplitude (2 % in
//! temperature) or a friction that enters the noise and the damping
//! inconsistently fails at 6 standard errors. Fixed seeds; standard errors
//! from independent members.

mod common;

use common::*;
use mlff_md::force::{update_forces, Harmonic};
use mlff_md::integrate::{Integrator, Langevin};
use mlff_md::rng::CounterRng;
use mlff_md::state::BatchState;
use mlff_md::system::Molecule;
use tch::{Device, Kind, Tensor};

#[test]
fn constants_are_codata_2018() {
    use mlff_md::units::*;
    let close = |a: f64, b: f64| ((a - b) / b).abs() < 1e-12;
    assert!(
        close(KB_EV_PER_K, kb_ev()),
        "k_B = {KB_EV_PER_K}, expected {}",
        kb_ev()
    );
    assert!(
        close(AMU_A2_PER_FS2_IN_EV, amu_a2_fs2_ev()),
        "{AMU_A2_PER_FS2_IN_EV}"
    );
    assert!(close(EV_PER_A_AMU_TO_A_PER_FS2, 1.0 / amu_a2_fs2_ev()));
    assert!(
        close(HARTREE_EV, HARTREE_J / ELEMENTARY_CHARGE_C),
        "{HARTREE_EV}"
    );
    // 1 eV per molecule = 23.060 547 830 618 kcal/mol (CODATA 2018: the
    // Faraday constant 96 485.332 12 C/mol over 4184 J/kcal).
    assert!(
        close(EV_IN_KCAL_PER_MOL, 96_485.332_123_310_0 / 4184.0),
        "{EV_IN_KCAL_PER_MOL}"
    );
    assert!(close(kt(300.0), 300.0 * kb_ev()));
    assert!(close(per_ps_to_per_fs(2.0), 0.002));
}

/// A big batch of harmonic wells: chignolin's 138 atoms (H, C, N, O
/// masses) × 32 members, every atom tied to its start by k (eV/Å²).
fn harmonic_batch(k: f64, seed: u64, temp: f64) -> (BatchState, Harmonic) {
    let molecule = Molecule::load(&[root().join("systems/peptides/chignolin_extended.pdb")])
        .expect("chignolin loads");
    let mut state = BatchState::new(&molecule, 32, Device::Cpu, Kind::Double);
    let provider = Harmonic::at_current_positions(&state, k);
    update_forces(&mut state, &provider).unwrap();
    state.set_maxwell_boltzmann(temp, &mut CounterRng::new(seed));
    (state, provider)
}

/// (mean, standard error) over members of per-member averages.
fn over_members(sums: &Tensor, samples: usize) -> (f64, f64) {
    let per_member = host(&(sums / samples as f64));
    (mean(&per_member), standard_error(&per_member))
}

/// BAOAB on harmonic wells: positions sample the Boltzmann distribution
/// exactly at any time step (⟨k x²⟩ = k_B T per coordinate), and on-step
/// velocities the kinetic temperature times (1 − (ω dt / 2)²) per atom
/// (Leimkuhler & Matthews 2013; ω = sqrt(k/m)). Both within 6 SE, with
/// SE ≤ 0.15 %, at two frictions.
#[test]
fn langevin_samples_the_boltzmann_distribution_sharply() {
    let (temp, k, dt) = (310.0, 1.0, 0.5);
    for (friction, seed) in [(50.0, 11u64), (10.0, 12)] {
        let (mut state, provider) = harmonic_batch(k, seed, temp);
        let mut integrator = Langevin::new(&state, dt, friction, temp, seed + 100);
        let n = state.n_atoms as f64;
        for _ in 0..2000 {
            integrator.step(&mut state, &provider).unwrap();
        }
        let r = state.n_members as i64;
        let zeros = || Tensor::zeros([r], (Kind::Double, Device::Cpu));
        let (mut pot, mut kin) = (zeros(), zeros());
        let samples = 2000;
        for _ in 0..samples {
            for _ in 0..10 {
                integrator.step(&mut state, &provider).unwrap();
            }
            let d = &state.positions - &provider.reference;
            // k x² per coordinate, in eV.
            pot += state.per_member_sum(&d.square()) * (k / (3.0 * n));
            // m v² per coordinate, in eV (independent conversion).
            let mv2 = &state.masses * state.velocities.square();
            kin += state.per_member_sum(&mv2) * (amu_a2_fs2_ev() / (3.0 * n));
        }
        let kt = kb_ev() * temp;
        let (p, p_se) = over_members(&pot, samples);
        assert!(
            p_se < 0.0015 * kt,
            "friction {friction}: SE {p_se} too large to test 1 %"
        );
        assert!(
            (p - kt).abs() < 6.0 * p_se,
            "friction {friction}: <k x²> = {p} ± {p_se} eV, k_B T = {kt} eV ({:+.3} %)",
            100.0 * (p / kt - 1.0)
        );
        // The on-step kinetic bias of BAOAB, averaged over the atoms.
        let masses = host(&state.masses.narrow(0, 0, state.n_atoms as i64));
        let factor = mean(
            &masses
                .iter()
                .map(|m| {
                    let omega = (k / (m * amu_a2_fs2_ev())).sqrt();
                    1.0 - (omega * dt / 2.0).powi(2)
                })
                .collect::<Vec<_>>(),
        );
        let (kv, kv_se) = over_members(&kin, samples);
        assert!(
            kv_se < 0.0015 * kt,
            "friction {friction}: SE {kv_se} too large"
        );
        assert!(
            (kv - kt * factor).abs() < 6.0 * kv_se,
            "friction {friction}: <m v²> = {kv} ± {kv_se} eV, expected {} ({:+.3} %)",
            kt * factor,
            100.0 * (kv / (kt * factor) - 1.0)
        );
    }
}

/// Free particles: the O step alone acts on the velocities, so their
/// autocorrelation after n steps is exp(−γ n dt) exactly; this pins the
/// friction itself (a 1 % error in γ moves it by 1 % at γ t = 1).
#[test]
fn langevin_friction_sets_the_velocity_decorrelation() {
    let (temp, dt, friction) = (300.0, 0.5, 20.0);
    let (mut state, provider) = harmonic_batch(0.0, 5, temp);
    let mut integrator = Langevin::new(&state, dt, friction, temp, 77);
    let gamma = friction * 1e-3;
    let lag = (1.0 / (gamma * dt)).round() as usize; // γ t = 1
    let r = state.n_members as i64;
    let mut num = Tensor::zeros([r], (Kind::Double, Device::Cpu));
    let mut den = Tensor::zeros([r], (Kind::Double, Device::Cpu));
    let origins = 300;
    for _ in 0..origins {
        let v0 = state.velocities.copy();
        for _ in 0..lag {
            integrator.step(&mut state, &provider).unwrap();
        }
        let mw = &state.masses;
        num += state.per_member_sum(&(mw * &v0 * &state.velocities));
        den += state.per_member_sum(&(mw * &v0 * &v0));
    }
    let ratio = host(&(num / den));
    let (c, se) = (mean(&ratio), standard_error(&ratio));
    let expected = (-gamma * dt * lag as f64).exp();
    assert!(se < 0.0015 * expected, "SE {se} too large to test 1 %");
    assert!(
        (c - expected).abs() < 6.0 * se,
        "C({lag} steps) = {c} ± {se}, exp(-γt) = {expected}"
    );
}
