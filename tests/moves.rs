//! The move interface from outside the engine: a move of one's own runs at
//! its interval (not during equilibration unless it says so), alongside the
//! built-in replica exchange, and its state goes into a checkpoint under its
//! name and comes back on restore.

mod common;

use std::any::Any;

use common::runs::*;
use mlff_md::config::Config;
use mlff_md::io::checkpoint::ReporterPositions;
use mlff_md::sampling::moves::{
    from_saved, to_saved, Move, MoveContext, MoveReport, MoveSet, Pick,
};
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

/// Sets every member's temperature and keeps a pressure, as replica
/// exchange and the barostat do; reports a new list shape.
struct Setter;

/// Sets nothing; records what it was handed, and takes 50 ms. Every 5
/// steps, or never (interval 0).
struct Watcher {
    interval: u64,
    seen: Vec<(Vec<f64>, Option<f64>)>,
}

impl Default for Watcher {
    fn default() -> Self {
        Watcher {
            interval: 5,
            seen: Vec::new(),
        }
    }
}

macro_rules! unsaved {
    () => {
        fn save(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn load(&mut self, _: serde_json::Value) -> mlff_md::Result<()> {
            Ok(())
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    };
}

impl Move for Setter {
    fn name(&self) -> &'static str {
        "setter"
    }
    fn interval(&self) -> u64 {
        5
    }
    fn during_equilibration(&self) -> bool {
        true
    }
    fn attempt(&mut self, _: &mut MoveContext) -> mlff_md::Result<MoveReport> {
        Ok(MoveReport {
            new_list_shape: true,
        })
    }
    fn temperatures(&self) -> Option<Vec<f64>> {
        Some(vec![310.0, 320.0, 330.0])
    }
    fn pressure_bar(&self) -> Option<f64> {
        Some(2.5)
    }
    fn describe(&self) -> String {
        "sets temperatures and a pressure".into()
    }
    unsaved!();
}

impl Move for Watcher {
    fn name(&self) -> &'static str {
        "watcher"
    }
    fn interval(&self) -> u64 {
        self.interval
    }
    fn during_equilibration(&self) -> bool {
        false
    }
    fn attempt(&mut self, cx: &mut MoveContext) -> mlff_md::Result<MoveReport> {
        self.seen.push((cx.temperatures.clone(), cx.pressure_bar));
        std::thread::sleep(std::time::Duration::from_millis(50));
        Ok(MoveReport::default())
    }
    fn describe(&self) -> String {
        "watches".into()
    }
    unsaved!();
}

/// A move is handed the temperatures and pressure the moves before it set
/// (the defaults when none does), is due at multiples of its interval,
/// outside equilibration only if it says so; the report ORs the moves'
/// list-shape flags; each move's wall time is its own.
#[test]
fn moves_see_what_earlier_moves_set_and_are_timed_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let path = config(
        tmp.path(),
        "c.toml",
        &tmp.path().join("out"),
        LANGEVIN,
        30,
        "",
    );
    let mut sim = Simulation::from_config(&Config::from_file(&path).unwrap()).unwrap();
    let defaults = [300.0; 3];
    let mut attempt = |set: &mut MoveSet, step: u64, pick: Pick| {
        sim.state.step = step;
        set.attempt(
            pick,
            (&mut sim.state, sim.force.as_ref(), sim.integrator.as_mut()),
            &sim.team,
            &defaults,
        )
        .unwrap()
    };

    let mut alone = MoveSet::default();
    alone.push(Watcher::default());
    assert_eq!(alone.temperatures(), None);
    assert_eq!(alone.pressure_bar(), None);
    assert!(!alone.any_due(5, false) && alone.any_due(5, true));
    assert!(!alone.any_due(6, true) && alone.any_due(10, true));
    assert_eq!(attempt(&mut alone, 5, Pick::Due { producing: false }), None);
    let report = attempt(&mut alone, 5, Pick::Due { producing: true });
    assert_eq!(report, Some(MoveReport::default()));
    let watcher = alone.get_mut::<Watcher>().unwrap();
    assert_eq!(watcher.seen, vec![(defaults.to_vec(), None)]);
    // Interval 0: never due (and no division by it).
    watcher.interval = 0;
    assert!(!alone.any_due(0, true) && !alone.any_due(5, true));
    assert_eq!(attempt(&mut alone, 0, Pick::Due { producing: true }), None);

    let mut both = MoveSet::default();
    both.push(Setter);
    both.push(Watcher::default());
    let names: Vec<&str> = both.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["setter", "watcher"]);
    assert_eq!(both.temperatures(), Some(vec![310.0, 320.0, 330.0]));
    assert_eq!(both.pressure_bar(), Some(2.5));
    assert!(both.any_due(5, false));
    for step in [5, 10] {
        let report = attempt(&mut both, step, Pick::Due { producing: true });
        assert_eq!(report.map(|r| r.new_list_shape), Some(true));
    }
    let report = attempt(&mut both, 7, Pick::Named("watcher"));
    assert_eq!(report.map(|r| r.new_list_shape), Some(false));
    let seen = &both.get::<Watcher>().unwrap().seen;
    assert_eq!(seen.len(), 3);
    for s in seen {
        assert_eq!(s, &(vec![310.0, 320.0, 330.0], Some(2.5)));
    }
    // Three attempts of 50 ms each; the setter takes next to nothing.
    assert!(
        both.seconds("watcher") >= 0.15,
        "{}",
        both.seconds("watcher")
    );
    assert!(both.seconds("setter") < both.seconds("watcher"));
    assert_eq!(both.seconds("nothing of that name"), 0.0);
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
