//! Temperature replica exchange: the exchanges must not bias the ensembles,
//! the acceptance must match the analytic expectation, swaps must rescale
//! velocities, and the history must be reproducible. CPU, fixed seeds,
//! tolerances from standard errors across independent ladders.

mod common;

use std::path::Path;

use common::*;
use mlff_md::config::{Config, ExchangeScheme};
use mlff_md::rng::CounterRng;
use mlff_md::sampling::ReplicaExchange;
use mlff_md::simulation::Simulation;
use mlff_md::units::kt;
use tch::{Device, Kind, Tensor};

/// A replica-exchange config of harmonic wells (k = 1 eV/Å²) on ethanol atoms.
fn harmonic_rex(ladder: &str, ladders: usize, interval: u64, scheme: &str, seed: u64) -> Config {
    let text = format!(
        r#"[system]
structure = "{}"
[model]
kind = "harmonic"
k = 1.0
device = "cpu"
[integrator]
kind = "langevin"
timestep = 0.5
friction = 20.0
[replica_exchange]
{ladder}
exchange_interval = {interval}
scheme = "{scheme}"
members_per_temperature = {ladders}
[ensemble]
seed = {seed}
[run]
steps = 1
"#,
        root().join("systems/ethanol.xyz").display()
    );
    Config::from_toml(&text, Path::new("/tmp/rex.toml")).expect("valid config")
}

/// Step the simulation `steps` times, exchanging every `interval` steps and
/// calling `after_exchange` after each exchange.
fn drive(
    sim: &mut Simulation,
    steps: u64,
    interval: u64,
    mut after_exchange: impl FnMut(&Simulation),
) {
    for _ in 0..steps {
        sim.integrator
            .step(&mut sim.state, sim.force.as_ref())
            .unwrap();
        if sim.state.step % interval == 0 {
            sim.exchange().unwrap();
            after_exchange(sim);
        }
    }
}

/// Harmonic replicas, 6 temperatures 300–600 K, 16 independent ladders: at
/// every temperature ⟨E_pot⟩ = (3N/2) k T within 6 standard errors, and every
/// neighbour pair exchanged at least once.
#[test]
fn exchanges_do_not_bias_the_ensembles() {
    let config = harmonic_rex(
        "t_min = 300.0\nt_max = 600.0\nn_replicas = 6",
        16,
        20,
        "neighbor",
        1,
    );
    let mut sim = Simulation::from_config(&config).unwrap();
    let rex0 = sim.replica_exchange().unwrap().clone();
    let (k, ladders) = (rex0.n_states(), rex0.n_ladders);
    drive(&mut sim, 400, 20, |_| {});
    // Per ladder and temperature: sum of E_pot over samples.
    let mut sums = vec![0.0; ladders * k];
    let mut samples = 0usize;
    drive(&mut sim, 4000, 20, |sim| {
        let e = host(&sim.state.energies);
        let rex = sim.replica_exchange().unwrap();
        for l in 0..ladders {
            for s in 0..k {
                sums[l * k + s] += e[rex.replica_at(l, s)];
            }
        }
        samples += 1;
    });
    let rex = sim.replica_exchange().unwrap();
    let dof = 3.0 * sim.state.n_atoms as f64;
    for s in 0..k {
        let per_ladder: Vec<f64> = (0..ladders)
            .map(|l| sums[l * k + s] / samples as f64)
            .collect();
        let (m, se) = (mean(&per_ladder), standard_error(&per_ladder));
        let exact = 0.5 * dof * kb_ev() * rex.temperatures[s];
        assert!(
            (m - exact).abs() < 6.0 * se,
            "T = {}: <E> = {m} ± {se}, exact {exact}",
            rex.temperatures[s]
        );
        assert!(
            se < 0.03 * exact,
            "standard error {se} too large to test anything"
        );
    }
    for a in 0..k - 1 {
        assert!(
            rex.accepts[a * k + a + 1] > 0,
            "no accepted swap between {a} and {}",
            a + 1
        );
    }
}

/// Analytic acceptance of swapping two d-dimensional harmonic replicas:
/// E_i = (kT_i / 2) χ²_d, p = E[min(1, exp((β1 − β2)(E1 − E2)))], by Monte
/// Carlo with 400 000 pairs (its own error ≈ 0.001).
fn analytic_acceptance(t1: f64, t2: f64, dof: i64) -> f64 {
    let n = 400_000;
    let idx = Tensor::arange(n * dof, (Kind::Int64, Device::Cpu));
    let chi2 = |seed| {
        CounterRng::new(seed)
            .normal(&idx)
            .square()
            .view([n, dof])
            .sum_dim_intlist(1, false, Kind::Double)
    };
    let e1 = chi2(101) * (0.5 * kt(t1));
    let e2 = chi2(202) * (0.5 * kt(t2));
    let log_p = (e1 - e2) * (1.0 / kt(t1) - 1.0 / kt(t2));
    log_p
        .exp()
        .clamp_max(1.0)
        .mean(Kind::Double)
        .double_value(&[])
}

#[test]
fn acceptance_matches_analytic_expectation() {
    let (t1, t2) = (300.0, 360.0);
    let config = harmonic_rex(
        &format!("temperatures = [{t1}, {t2}]"),
        64,
        10,
        "neighbor",
        2,
    );
    let mut sim = Simulation::from_config(&config).unwrap();
    drive(&mut sim, 200, 10, |_| {});
    // Count per ladder from here on.
    let ladders = 64;
    let mut attempted = vec![0u64; ladders];
    let mut accepted = vec![0u64; ladders];
    let mut before: Vec<usize> = sim.replica_exchange().unwrap().state_of.clone();
    drive(&mut sim, 3000, 10, |sim| {
        let rex = sim.replica_exchange().unwrap();
        // With K = 2 the pair is attempted on every other exchange.
        if rex.n_exchanges % 2 == 1 {
            for l in 0..ladders {
                attempted[l] += 1;
                accepted[l] += (rex.state_of[2 * l] != before[2 * l]) as u64;
            }
        }
        before = rex.state_of.clone();
    });
    let rates: Vec<f64> = accepted
        .iter()
        .zip(&attempted)
        .map(|(&a, &n)| a as f64 / n as f64)
        .collect();
    let (m, se) = (mean(&rates), standard_error(&rates));
    let expected = analytic_acceptance(t1, t2, 3 * sim.state.n_atoms as i64);
    assert!(
        (m - expected).abs() < 6.0 * se + 0.003,
        "acceptance {m} ± {se}, analytic {expected}"
    );
    assert!(se < 0.02, "standard error {se}");
}

/// Chi-square critical values at p = 0.001.
const CHI2_999_DF5: f64 = 20.515;
const CHI2_999_DF15: f64 = 37.697;

/// With equal energies every attempted swap is accepted; all-pairs mixing
/// gives a symmetric state-transition matrix and uniform visitation.
#[test]
fn zero_energy_states_mix_uniformly() {
    let temps = vec![300.0, 320.0, 350.0, 390.0, 440.0, 500.0];
    let k = temps.len();
    let zeros = vec![0.0; k];

    let mut neighbour = ReplicaExchange::new(temps.clone(), 1, ExchangeScheme::Neighbor, None, 9);
    for step in 0..100 {
        neighbour.exchange(&zeros, step);
    }
    assert_eq!(neighbour.attempts, neighbour.accepts);
    assert!(neighbour.attempts.iter().sum::<u64>() > 0);

    let mut rex = ReplicaExchange::new(temps, 1, ExchangeScheme::AllPairs, None, 9);
    let mut transitions = vec![0u64; k * k];
    let n = 20_000;
    for step in 0..n {
        let before = rex.state_of.clone();
        rex.exchange(&zeros, step);
        for (b, a) in before.iter().zip(&rex.state_of) {
            transitions[b * k + a] += 1;
        }
    }
    assert_eq!(rex.attempts, rex.accepts);
    // Bowker's symmetry test: sum over a<b of (n_ab − n_ba)² / (n_ab + n_ba) ~ χ²(15).
    let mut bowker = 0.0;
    for a in 0..k {
        for b in a + 1..k {
            let (x, y) = (transitions[a * k + b] as f64, transitions[b * k + a] as f64);
            if x + y > 0.0 {
                bowker += (x - y).powi(2) / (x + y);
            }
        }
    }
    assert!(
        bowker < CHI2_999_DF15,
        "transition matrix not symmetric: χ² = {bowker}"
    );
    // Replica 0 visits every temperature equally often: χ²(5).
    let expected = n as f64 / k as f64;
    let chi2: f64 = (0..k)
        .map(|s| (rex.occupancy[s] as f64 - expected).powi(2) / expected)
        .sum();
    assert!(
        chi2 < CHI2_999_DF5,
        "visitation not uniform: χ² = {chi2}, {:?}",
        &rex.occupancy[..k]
    );
}

/// Right after a swap, a replica's kinetic temperature matches its *new*
/// thermostat temperature in expectation (velocities rescaled by sqrt(T_new/T_old)).
#[test]
fn swaps_rescale_velocities() {
    // Wide spacing: without rescaling the ratio would be 2/3 or 3/2.
    let config = harmonic_rex("temperatures = [300.0, 450.0]", 64, 10, "neighbor", 3);
    let mut sim = Simulation::from_config(&config).unwrap();
    drive(&mut sim, 300, 10, |_| {});
    let dof = 3.0 * sim.state.n_atoms as f64;
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); 128];
    let mut before = sim.replica_exchange().unwrap().state_of.clone();
    drive(&mut sim, 6000, 10, |sim| {
        let rex = sim.replica_exchange().unwrap();
        let t_kin = host(&sim.state.temperature(dof));
        let t_new = rex.replica_temperatures();
        for r in 0..rex.n_replicas() {
            if rex.state_of[r] != before[r] {
                ratios[r].push(t_kin[r] / t_new[r]);
            }
        }
        before = rex.state_of.clone();
    });
    // Replicas are independent: one mean ratio per replica.
    let per_replica: Vec<f64> = ratios
        .iter()
        .filter(|v| v.len() >= 5)
        .map(|v| mean(v))
        .collect();
    assert!(
        per_replica.len() > 100,
        "too few swapped replicas: {}",
        per_replica.len()
    );
    let (m, se) = (mean(&per_replica), standard_error(&per_replica));
    assert!((m - 1.0).abs() < 6.0 * se, "T_kin / T_new = {m} ± {se}");
    assert!(se < 0.02, "standard error {se}");
}

fn history(seed: u64) -> Vec<Vec<usize>> {
    let config = harmonic_rex(
        "t_min = 300.0\nt_max = 500.0\nn_replicas = 4",
        2,
        5,
        "all-pairs",
        seed,
    );
    let mut sim = Simulation::from_config(&config).unwrap();
    let mut h = Vec::new();
    drive(&mut sim, 200, 5, |sim| {
        h.push(sim.replica_exchange().unwrap().state_of.clone())
    });
    h
}

#[test]
fn same_seed_same_exchange_history() {
    let a = history(4);
    assert_eq!(a, history(4));
    assert_ne!(a, history(5));
}
