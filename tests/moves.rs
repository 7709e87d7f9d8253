//! The move interface from outside the engine: a move of one's own runs at
//! its interval (not during equilibration unless it says so), alongside the
//! built-in replica exchange, and its state goes into a checkpoint under its
//! name and comes back on restore.

mod common;

use std::any::Any;

use common::runs::*;
use mlff_md::config::Config;
use mlff_md::io::checkpoint::ReporterPositions;
use mlff_md::sampling::moves::{from_saved, to_saved, Move, MoveContext, MoveReport};
use mlff_md::simulation::Simulation;

/// Records the steps it acted at and scales every velocity by one half.
#[derive(Default)]
struct Halving {
    steps: Vec<u64>,
}

impl Move for Halving {
    fn name(&self) -> &'static str {
        "halving"
    }
    fn interval(&self) -> u64 {
        7
    }
    fn during_equilibration(&self) -> bool {
        false
    }
    fn attempt(&mut self, cx: &mut MoveContext) -> mlff_md::Result<MoveReport> {
        self.steps.push(cx.state.step);
        cx.state.velocities *= 0.5;
        Ok(MoveReport::default())
    }
    fn save(&self) -> serde_json::Value {
        to_saved(&self.steps)
    }
    fn load(&mut self, saved: serde_json::Value) -> mlff_md::Result<()> {
        self.steps = from_saved(saved)?;
        Ok(())
    }
    fn describe(&self) -> String {
        "halves the velocities every 7 steps".into()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

fn simulation(dir: &std::path::Path) -> Simulation {
    let path = config(dir, "c.toml", &dir.join("out"), REMD, 30, "");
    Simulation::from_config(&Config::from_file(&path).unwrap()).unwrap()
}

#[test]
fn a_move_of_ones_own_runs_at_its_interval_and_is_checkpointed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sim = simulation(tmp.path());
    sim.moves.push(Halving::default());
    let mut kinetic_drop = Vec::new();
    for _ in 0..30 {
        sim.integrator
            .step(&mut sim.state, sim.force.as_ref())
            .unwrap();
        let producing = sim.state.step > 14;
        let before = sim.observables().unwrap()[1].iter().sum::<f64>();
        sim.attempt_moves(producing).unwrap();
        let after = sim.observables().unwrap()[1].iter().sum::<f64>();
        kinetic_drop.push(after / before);
    }
    let halving = sim.moves.get::<Halving>().unwrap();
    // Due at 7, 14, 21, 28; not while "equilibrating" (steps up to 14).
    assert_eq!(halving.steps, vec![21, 28]);
    for (i, ratio) in kinetic_drop.iter().enumerate() {
        let step = i as u64 + 1;
        // Replica exchange (every 10 steps, after the move) may rescale
        // velocities by sqrt(T_new/T_old), never by exactly 1/4 overall.
        if step == 21 || step == 28 {
            assert!((ratio - 0.25).abs() < 1e-12, "step {step}: {ratio}");
        } else if step % 10 != 0 {
            assert_eq!(*ratio, 1.0, "step {step}");
        }
    }
    // The replica exchange acted too, at its own interval (20 and 30).
    assert_eq!(sim.replica_exchange().unwrap().n_exchanges, 2);

    let ck = sim
        .checkpoint(
            ReporterPositions {
                observables_rows: 0,
                exchange_rows: 0,
                trajectory_bytes: vec![],
            },
            0.0,
        )
        .unwrap();
    assert_eq!(ck.header.moves["halving"], serde_json::json!([21, 28]));
    assert!(ck.header.moves.contains_key("replica_exchange"));

    let mut again = simulation(tmp.path());
    again.moves.push(Halving::default());
    again.restore(&ck, false).unwrap();
    assert_eq!(again.moves.get::<Halving>().unwrap().steps, vec![21, 28]);
    assert_eq!(again.replica_exchange(), sim.replica_exchange());
}
