//! Blow-up handling on each path: a non-finite energy, a force beyond
//! max_force, a temperature beyond max_temperature (tests/reliability.rs),
//! each named with its member and reason; and reinitialisation putting
//! exactly the last good frame back.

mod common;

use common::root;
use common::runs::*;
use mlff_md::config::Config;
use mlff_md::io::checkpoint::Checkpoint;
use mlff_md::simulation::Simulation;
use tch::{Kind, Tensor};

/// tests/data/nan_after_20_calls.pt gives member 1 a NaN energy from its
/// 20th call on (the first is at set-up, so after step 19): the run stops
/// at the next observables interval, step 20, naming member 1 and why, and
/// its last checkpoint (step 15) is healthy.
#[test]
fn a_non_finite_energy_stops_the_run_naming_the_member() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = root().join("tests/data/nan_after_20_calls.pt");
    let c = config_with_model(
        tmp.path(),
        "nan.toml",
        &out,
        (&model, "float64"),
        LANGEVIN,
        100,
        "checkpoint_interval = 15",
    );
    let err = run_until_blowup(&c);
    assert!(
        err.contains("member(s) 1 blew up at step 20 (member 1: energy NaN)"),
        "{err}"
    );
    let (ck, _) = Checkpoint::read_latest(&out).unwrap();
    assert_eq!(ck.header.step, 15);
    assert!(ck.energies.iter().all(|e| e.is_finite()));
}

/// Harmonic wells at 300 K with max_force = 0.3 eV/Å: thermal displacements
/// (rms sqrt(kT/k) ≈ 0.16 Å, so forces ≈ 0.16 eV/Å) soon push one force
/// component past 0.3; the message gives the member and the force.
#[test]
fn a_force_beyond_max_force_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
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
temperature = 300.0
friction = 5.0
[ensemble]
members = 3
seed = 4
velocities = "zero"
[run]
steps = 4000
max_force = 0.3
[output]
directory = "{}"
observables_interval = 5
trajectory_interval = 0
"#,
        root().join("systems/ethanol.pdb").display(),
        out.display()
    );
    let c = tmp.path().join("f.toml");
    std::fs::write(&c, text).unwrap();
    let err = run_until_blowup(&c);
    let line = err
        .lines()
        .find(|l| l.contains("blew up"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("eV/Å > max_force = 0.3"), "{line}");
    // The force named is beyond the limit and was read from the state.
    let at = line.find("a force component of ").unwrap() + "a force component of ".len();
    let value: f64 = line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(value > 0.3 && value < 1.0, "{line}");
    assert!(
        !line.contains("energy NaN") && !line.contains("temperature"),
        "{line}"
    );
}

/// Reinitialisation: the blown-up members get exactly the snapshot's
/// positions and fresh velocities (not the snapshot's, which would repeat
/// an NVE blow-up); the other members are not touched at all.
#[test]
fn reinitialisation_restores_exactly_the_last_good_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(
        tmp.path(),
        "r.toml",
        &tmp.path().join("out"),
        LANGEVIN,
        100,
        "",
    );
    let config = Config::from_file(&c).unwrap();
    let mut sim = Simulation::from_config(&config).unwrap();
    for _ in 0..10 {
        sim.integrator
            .step(&mut sim.state, sim.force.as_ref())
            .unwrap();
    }
    let snapshot = sim.snapshot();
    for _ in 0..15 {
        sim.integrator
            .step(&mut sim.state, sim.force.as_ref())
            .unwrap();
    }
    let n = sim.state.n_atoms as i64;
    let member = |t: &Tensor, m: i64| t.narrow(0, m * n, n).copy();
    let before_x: Vec<Tensor> = (0..3).map(|m| member(&sim.state.positions, m)).collect();
    let before_v: Vec<Tensor> = (0..3).map(|m| member(&sim.state.velocities, m)).collect();
    sim.reinitialize(&[1], &snapshot).unwrap();
    let bits = |t: &Tensor| t.to_kind(Kind::Double).view_dtype(Kind::Int64);
    let same = |a: &Tensor, b: &Tensor| bits(a).equal(&bits(b));
    // Member 1: the snapshot's positions, bit for bit; new velocities.
    assert!(same(
        &member(&sim.state.positions, 1),
        &member(&snapshot.positions, 1)
    ));
    assert!(!same(
        &member(&sim.state.velocities, 1),
        &member(&snapshot.velocities, 1)
    ));
    assert!(!same(&member(&sim.state.velocities, 1), &before_v[1]));
    // Members 0 and 2: untouched.
    for m in [0, 2] {
        assert!(same(
            &member(&sim.state.positions, m),
            &before_x[m as usize]
        ));
        assert!(same(
            &member(&sim.state.velocities, m),
            &before_v[m as usize]
        ));
    }
    // Forces are those of the restored positions.
    let fresh = sim.force.compute(&sim.state).unwrap();
    assert!(same(&fresh.forces, &sim.state.forces));
}
