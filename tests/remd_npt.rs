//! Temperature replica exchange under a barostat leaves each temperature's
//! ensemble alone: on a small Lennard-Jones gas at 200 bar, every rung's
//! mean volume and potential energy equal those of independent NPT runs at
//! that temperature ([ensemble] temperatures, no exchanges) within 6
//! combined standard errors. A gas makes the rungs' volumes differ a lot
//! (V ∝ T), so P·ΔV between neighbours is about kT and an exchange
//! criterion without it samples the wrong volumes: with the P·V term
//! removed from src/sampling/exchange_move.rs (by hand, 2026-12-03) the
//! 300 K rung's volume came out 8,115 ± 154 Å³ against 6,515 ± 152 without
//! exchanges, 7.4 SE, and the test failed.

mod common;

use std::path::Path;

use common::*;
use mlff_md::config::Config;
use mlff_md::simulation::Simulation;

const LADDER: [f64; 4] = [300.0, 360.0, 432.0, 518.4];
/// Ladders (REMD) and members per temperature (independent runs).
const PER_RUNG: usize = 16;
const FIRST_STEP: i64 = 400;

/// 32 argon-like atoms: every 8th of tests/data/lj_fluid.xyz (23.2 Å box)
/// mapped by fractional coordinates into a 19 Å box.
/// Observables of one in-process run ([records][members] per name).
struct Records {
    volume: Vec<Vec<f64>>,
    potential_energy: Vec<Vec<f64>>,
    thermostat_temperature: Vec<Vec<f64>>,
}

/// The gas at 200 bar under `sampling` (the replica-exchange or ensemble
/// lines), 1000 steps of 2 fs with a volume move every 5; records every 10
/// steps from FIRST_STEP on. Every member's barostat starts with a step of
/// 15 % of the volume (about the spread of V for 33 molecules) instead of
/// adapting from 1 % for hundreds of moves: the distribution sampled does
/// not depend on the step.
fn run(dir: &Path, sampling: &str) -> Records {
    let text = argon_npt_config(
        dir,
        sampling,
        1000,
        &format!(
            "directory = \"{}\"\npressure = false",
            dir.join("out").display()
        ),
    );
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut sim = Simulation::from_config(&Config::from_file(&cfg).unwrap()).unwrap();
    let barostat = sim.barostat_mut().unwrap();
    for s in barostat.max_change.iter_mut() {
        *s = [0.15 * 19.0f64.powi(3); 3];
    }
    let names = sim.observable_names();
    let at = |name: &str| names.iter().position(|(n, _)| *n == name).unwrap();
    let (v, e, t) = (
        at("volume"),
        at("potential_energy"),
        at("thermostat_temperature"),
    );
    let mut r = Records {
        volume: vec![],
        potential_energy: vec![],
        thermostat_temperature: vec![],
    };
    for step in 1..=1000i64 {
        sim.integrator
            .step(&mut sim.state, sim.force.as_ref())
            .unwrap();
        sim.attempt_moves(true).unwrap();
        if step % 10 == 0 && step >= FIRST_STEP {
            let obs = sim.observables().unwrap();
            r.volume.push(obs[v].clone());
            r.potential_energy.push(obs[e].clone());
            r.thermostat_temperature.push(obs[t].clone());
        }
    }
    r
}

/// Per rung, one sample per group of members (a ladder under REMD, a
/// member without exchanges): the mean of `values` over the records in
/// which a member of the group was at that rung.
fn rung_samples(
    values: &[Vec<f64>],
    at: &[Vec<f64>],
    group_of: impl Fn(usize) -> usize,
) -> Vec<Vec<f64>> {
    let members = LADDER.len() * PER_RUNG;
    let groups = (0..members).map(&group_of).max().unwrap() + 1;
    let mut sums = vec![vec![(0.0, 0usize); groups]; LADDER.len()];
    for (row, temps) in values.iter().zip(at) {
        for m in 0..members {
            let k = LADDER.iter().position(|t| *t == temps[m]).unwrap();
            let slot = &mut sums[k][group_of(m)];
            slot.0 += row[m];
            slot.1 += 1;
        }
    }
    sums.iter()
        .map(|g| {
            g.iter()
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| s / *n as f64)
                .collect()
        })
        .collect()
}

#[test]
fn exchanges_under_a_barostat_leave_each_rungs_volume_and_energy_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("remd"), tmp.path().join("independent"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let t = format!("{LADDER:?}");
    let remd = run(
        &a,
        &format!("[replica_exchange]\ntemperatures = {t}\nmembers_per_temperature = {PER_RUNG}\nexchange_interval = 10\n[ensemble]\nseed = 4"),
    );
    let alone = run(
        &b,
        &format!(
            "[ensemble]\ntemperatures = {t}\nmembers = {}\nseed = 4",
            LADDER.len() * PER_RUNG
        ),
    );
    // The replicas did move through the ladder.
    let visited: std::collections::BTreeSet<u64> = remd
        .thermostat_temperature
        .iter()
        .map(|t| t[3].to_bits())
        .collect();
    assert!(
        visited.len() >= 3,
        "replica 3 stayed at {} rung(s)",
        visited.len()
    );

    for (name, floor) in [("volume", 1.0), ("potential_energy", 1e-4)] {
        let pick = |r: &Records| match name {
            "volume" => r.volume.clone(),
            _ => r.potential_energy.clone(),
        };
        // REMD: ladder l holds members l·K .. l·K + K − 1.
        let with = rung_samples(&pick(&remd), &remd.thermostat_temperature, |m| {
            m / LADDER.len()
        });
        let without = rung_samples(&pick(&alone), &alone.thermostat_temperature, |m| m);
        for (k, t) in LADDER.iter().enumerate() {
            let (m1, s1) = (mean(&with[k]), standard_error(&with[k]));
            let (m2, s2) = (mean(&without[k]), standard_error(&without[k]));
            let se = (s1 * s1 + s2 * s2).sqrt().max(floor);
            eprintln!(
                "{name} at {t} K: exchanging {m1:.4} ± {s1:.4}, independent {m2:.4} ± {s2:.4} ({:.1} SE)",
                (m1 - m2) / se
            );
            assert!(
                (m1 - m2).abs() < 6.0 * se,
                "{name} at {t} K: {m1} ± {s1} with exchanges, {m2} ± {s2} without"
            );
        }
    }
}
