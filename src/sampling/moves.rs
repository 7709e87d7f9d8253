//! Moves: anything that acts on the state between integrator steps, at its
//! own interval, with its own checkpointed state (lumol's MC moves, OpenMM's
//! barostat force). Replica exchange and the Monte Carlo barostat are moves.
//!
//! Adding one: a file with a type that implements [`Move`] (and a
//! `from_setup` that reads its config section), plus one line in
//! [`MoveSet::from_setup`]. The run loop, checkpoints (a map from each move's
//! [`Move::name`] to its [`Move::save`]d state), resume and the log handle it
//! from there. Moves know nothing of files: what a move did is read back by
//! reporters (e.g. the exchange records) through [`MoveSet::get`].

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::force::ForceProvider;
use crate::integrate::Integrator;
use crate::parallel::Team;
use crate::state::BatchState;
use crate::system::cell::Cell;
use crate::system::Molecule;

use super::exchange_move::ReplicaExchangeMove;
use super::volume_move::VolumeMove;

/// Which moves [`MoveSet::attempt`] attempts.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// Those due at the state's step (`producing`: past equilibration).
    Due { producing: bool },
    /// The one called so, due or not (tests, tools).
    Named(&'a str),
}

/// What a move acts on (the step is `state.step`).
pub struct MoveContext<'a> {
    pub state: &'a mut BatchState,
    pub force: &'a dyn ForceProvider,
    pub integrator: &'a mut dyn Integrator,
    /// Each member's thermostat temperature (K), as the moves before this
    /// one at this step left it.
    pub temperatures: Vec<f64>,
    /// The pressure a move keeps (bar), if one does.
    pub pressure_bar: Option<f64>,
    /// The run's processes: `state` is this one's share of the members, and
    /// a move that decides for all of them gathers what it needs.
    pub team: &'a Team,
}

/// What a move did that the run must act on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MoveReport {
    /// The force provider's neighbour list changed shape: a captured step
    /// must be recorded again.
    pub new_list_shape: bool,
}

/// What a move is built from.
pub struct MoveSetup<'a> {
    pub config: &'a Config,
    pub molecule: &'a Molecule,
    pub state: &'a BatchState,
    /// The run's periodic cell as configured (every member starts in it).
    pub cell: Option<&'a Cell>,
}

/// A move between steps (see the module docs).
pub trait Move: Any {
    /// Its key in checkpoints and logs.
    fn name(&self) -> &'static str;

    /// Steps between attempts (a move is due at multiples of it).
    fn interval(&self) -> u64;

    /// Whether it acts during `[equilibration]` (the barostat settles the
    /// volume there; replica exchange waits for production).
    fn during_equilibration(&self) -> bool;

    /// One attempt at `cx.state.step` (a check step: values may be pulled to the
    /// host).
    fn attempt(&mut self, cx: &mut MoveContext) -> Result<MoveReport>;

    /// Each member's thermostat temperature (K), for a move that sets them.
    fn temperatures(&self) -> Option<Vec<f64>> {
        None
    }

    /// The pressure it keeps (bar), for a barostat.
    fn pressure_bar(&self) -> Option<f64> {
        None
    }

    /// Its whole state, for a checkpoint.
    fn save(&self) -> serde_json::Value;

    /// Become exactly what [`Move::save`] wrote.
    fn load(&mut self, saved: serde_json::Value) -> Result<()>;

    /// One line for the log.
    fn describe(&self) -> String;

    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The moves of a run, in the order they act when due at the same step.
#[derive(Default)]
pub struct MoveSet {
    moves: Vec<Box<dyn Move>>,
    /// Wall time spent in each move's attempts (s).
    seconds: Vec<f64>,
}

impl MoveSet {
    /// Every move the config asks for, one line each: replica exchange
    /// first (it sets the temperatures a barostat attempt at the same step
    /// uses), then the barostat.
    pub fn from_setup(setup: &MoveSetup) -> Result<MoveSet> {
        let mut set = MoveSet::default();
        set.extend(ReplicaExchangeMove::from_setup(setup)?);
        set.extend(VolumeMove::from_setup(setup)?);
        Ok(set)
    }

    /// Add a move after the others (library use: a move of one's own).
    pub fn push<M: Move>(&mut self, m: M) {
        self.moves.push(Box::new(m));
        self.seconds.push(0.0);
    }

    fn extend<M: Move>(&mut self, m: Option<M>) {
        if let Some(m) = m {
            self.push(m);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Move> {
        self.moves.iter().map(|m| m.as_ref())
    }

    /// The move of type `M`, if the run has one.
    pub fn get<M: Move>(&self) -> Option<&M> {
        self.moves.iter().find_map(|m| m.as_any().downcast_ref())
    }

    pub fn get_mut<M: Move>(&mut self) -> Option<&mut M> {
        self.moves
            .iter_mut()
            .find_map(|m| m.as_any_mut().downcast_mut())
    }

    /// Whether any move acts at `step` (`producing`: past equilibration).
    pub fn any_due(&self, step: u64, producing: bool) -> bool {
        self.moves.iter().any(|m| due(m.as_ref(), step, producing))
    }

    /// Thermostat temperatures (K) per member as the moves set them, or
    /// None when no move sets them.
    pub fn temperatures(&self) -> Option<Vec<f64>> {
        self.moves.iter().find_map(|m| m.temperatures())
    }

    pub fn pressure_bar(&self) -> Option<f64> {
        self.moves.iter().find_map(|m| m.pressure_bar())
    }

    /// Attempt, in order, every move `pick` selects. `default_temperatures`
    /// (K) are the members' thermostat temperatures when no move sets them.
    /// None when it selects no move.
    pub fn attempt(
        &mut self,
        pick: Pick,
        (state, force, integrator): (&mut BatchState, &dyn ForceProvider, &mut dyn Integrator),
        team: &Team,
        default_temperatures: &[f64],
    ) -> Result<Option<MoveReport>> {
        let step = state.step;
        let mut report: Option<MoveReport> = None;
        for i in 0..self.moves.len() {
            let m = self.moves[i].as_ref();
            let picked = match pick {
                Pick::Due { producing } => due(m, step, producing),
                Pick::Named(name) => m.name() == name,
            };
            if !picked {
                continue;
            }
            let t0 = Instant::now();
            let mut cx = MoveContext {
                temperatures: self
                    .temperatures()
                    .unwrap_or_else(|| default_temperatures.to_vec()),
                pressure_bar: self.pressure_bar(),
                state: &mut *state,
                force,
                integrator: &mut *integrator,
                team,
            };
            let r = self.moves[i].attempt(&mut cx)?;
            self.seconds[i] += t0.elapsed().as_secs_f64();
            report.get_or_insert_default().new_list_shape |= r.new_list_shape;
        }
        Ok(report)
    }

    /// Wall time spent in the move called `name` (s).
    pub fn seconds(&self, name: &str) -> f64 {
        self.moves
            .iter()
            .zip(&self.seconds)
            .filter(|(m, _)| m.name() == name)
            .map(|(_, s)| s)
            .sum()
    }

    /// Every move's state, by name (for a checkpoint).
    pub fn save(&self) -> BTreeMap<String, serde_json::Value> {
        self.moves
            .iter()
            .map(|m| (m.name().to_string(), m.save()))
            .collect()
    }

    /// Restore each move from `saved(name)` (a checkpoint); a move the
    /// checkpoint holds no state for keeps its fresh state, as checkpoints
    /// written before it existed did.
    pub fn load(&mut self, saved: impl Fn(&str) -> Option<serde_json::Value>) -> Result<()> {
        for m in &mut self.moves {
            if let Some(v) = saved(m.name()) {
                let name = m.name();
                m.load(v).map_err(|e| {
                    Error::Invalid(format!("the checkpoint's {name} state cannot be used: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

fn due(m: &dyn Move, step: u64, producing: bool) -> bool {
    m.interval() > 0 && step % m.interval() == 0 && (producing || m.during_equilibration())
}

/// A move's state from a checkpoint value.
pub fn from_saved<T: serde::de::DeserializeOwned>(saved: serde_json::Value) -> Result<T> {
    serde_json::from_value(saved).map_err(|e| Error::Invalid(e.to_string()))
}

/// A move's state as a checkpoint value.
pub fn to_saved<T: serde::Serialize>(state: &T) -> serde_json::Value {
    serde_json::to_value(state).expect("move state serialises")
}
