//! Temperature replica exchange as a [`Move`]: every `exchange_interval`
//! steps of production, one attempt on one host copy of the potential
//! energies (plus P·V under a barostat: in the isothermal-isobaric ensemble a
//! swap of rungs i and j is accepted with min(1, exp[(β_i − β_j)(U_i − U_j +
//! P(V_i − V_j))])).

use std::any::Any;

use super::moves::{from_saved, to_saved, Move, MoveContext, MoveReport, MoveSetup};
use super::{ExchangeOutcome, ReplicaExchange};
use crate::error::Result;
use crate::state::to_host_f64;
use crate::system::cell::Cell;
use crate::units::BAR_IN_EV_PER_A3;

/// One exchange attempt, as the exchange records store it.
#[derive(Debug, Clone)]
pub struct ExchangeAttempt {
    pub step: u64,
    pub outcome: ExchangeOutcome,
    /// Potential energies (eV) the attempt saw, per member.
    pub energies: Vec<f64>,
}

pub struct ReplicaExchangeMove {
    pub rex: ReplicaExchange,
    interval: u64,
    /// The latest attempt (not checkpointed: read at its own step).
    pub last: Option<ExchangeAttempt>,
}

impl ReplicaExchangeMove {
    /// From `[replica_exchange]`, if the config has one.
    pub fn from_setup(setup: &MoveSetup) -> Result<Option<Self>> {
        let config = setup.config;
        Ok(config
            .replica_exchange
            .as_ref()
            .map(|r| ReplicaExchangeMove {
                rex: ReplicaExchange::new(
                    r.ladder(),
                    r.members_per_temperature,
                    r.scheme,
                    r.swap_attempts,
                    config.ensemble.seed,
                ),
                interval: r.exchange_interval,
                last: None,
            }))
    }

    /// The attempt made at `step`, if one was.
    pub fn attempt_at(&self, step: u64) -> Option<&ExchangeAttempt> {
        self.last.as_ref().filter(|a| a.step == step)
    }
}

/// U + P·V per member (eV), from potential energies (eV), volumes (Å³)
/// and the barostat's pressure (bar): what an isobaric swap weighs.
fn enthalpies(energies: &[f64], volumes: &[f64], pressure_bar: f64) -> Vec<f64> {
    let pressure = pressure_bar * BAR_IN_EV_PER_A3;
    energies
        .iter()
        .zip(volumes)
        .map(|(u, v)| u + pressure * v)
        .collect()
}

impl Move for ReplicaExchangeMove {
    fn name(&self) -> &'static str {
        "replica_exchange"
    }

    fn interval(&self) -> u64 {
        self.interval
    }

    fn during_equilibration(&self) -> bool {
        false
    }

    /// Pulls the [R] energies (and, under a barostat, the cells) to the
    /// host, decides, and pushes temperatures and velocity scales back only
    /// if a swap was accepted. Across MPI ranks, every rank gathers all
    /// energies (and volumes) and makes the same decision from the same
    /// random stream.
    fn attempt(&mut self, cx: &mut MoveContext) -> Result<MoveReport> {
        let energies = cx.team.all_members(&to_host_f64(&cx.state.energies), 1);
        let weighed = match (cx.pressure_bar, cx.state.cells.as_ref()) {
            (Some(bar), Some(cells)) => {
                let mine: Vec<f64> = Cell::all_as_stored(cells)?
                    .iter()
                    .map(Cell::volume)
                    .collect();
                enthalpies(&energies, &cx.team.all_members(&mine, 1), bar)
            }
            _ => energies.clone(),
        };
        let old = self.rex.replica_temperatures();
        let step = cx.state.step;
        let outcome = self.rex.exchange(&weighed, step);
        if outcome.accepted > 0 {
            self.rex.apply(&old, cx.state, cx.integrator)?;
        }
        self.last = Some(ExchangeAttempt {
            step,
            outcome,
            energies,
        });
        Ok(MoveReport::default())
    }

    fn temperatures(&self) -> Option<Vec<f64>> {
        Some(self.rex.replica_temperatures())
    }

    fn save(&self) -> serde_json::Value {
        to_saved(&self.rex)
    }

    fn load(&mut self, saved: serde_json::Value) -> Result<()> {
        self.rex = from_saved(saved)?;
        Ok(())
    }

    fn describe(&self) -> String {
        let ladder: Vec<String> = self
            .rex
            .temperatures
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect();
        format!(
            "replica exchange: {:?}, every {} steps, {} ladder(s) of [{}] K",
            self.rex.scheme,
            self.interval,
            self.rex.n_ladders,
            ladder.join(", ")
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{enthalpies, Move, ReplicaExchangeMove};
    use crate::config::ExchangeScheme;
    use crate::sampling::ReplicaExchange;

    /// The log line a user reads to check the ladder they asked for.
    #[test]
    fn describe_names_scheme_interval_and_ladder() {
        let ladder = vec![300.0, 330.0, 370.0];
        let m = ReplicaExchangeMove {
            rex: ReplicaExchange::new(ladder, 2, ExchangeScheme::AllPairs, None, 1),
            interval: 10,
            last: None,
        };
        assert_eq!(
            m.describe(),
            "replica exchange: AllPairs, every 10 steps, 2 ladder(s) of [300.0, 330.0, 370.0] K"
        );
    }

    /// 1 bar = 10⁵ J/m³; with e = 1.602176634e-19 C (exact since 2019),
    /// 1000 bar × 1000 Å³ = 10⁸ J/m³ × 10⁻²⁷ m³ = 10⁻¹⁹ J = 0.624150907 eV.
    #[test]
    fn a_swap_weighs_u_plus_p_v() {
        let pv = 1.0e-19 / 1.602_176_634e-19;
        let h = enthalpies(&[-2.0, 3.0], &[1000.0, 2000.0], 1000.0);
        assert!((h[0] - (-2.0 + pv)).abs() < 1e-12, "{h:?}");
        assert!((h[1] - (3.0 + 2.0 * pv)).abs() < 1e-12, "{h:?}");
        assert_eq!(enthalpies(&[-2.0], &[1000.0], 0.0), vec![-2.0]);
    }
}
