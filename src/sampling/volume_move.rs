//! The Monte Carlo barostat as a [`Move`]: every `interval` steps (also
//! during equilibration) each periodic member proposes a volume change,
//! judged at its own thermostat temperature (its rung under replica
//! exchange).

use std::any::Any;

use super::moves::{from_saved, to_saved, Move, MoveContext, MoveReport, MoveSetup};
use super::{BarostatMove, MoleculeScaling, MonteCarloBarostat};
use crate::error::Result;

pub struct VolumeMove {
    pub barostat: MonteCarloBarostat,
    /// The molecules whose centres are scaled.
    molecules: MoleculeScaling,
    /// The latest attempt (not checkpointed).
    pub last: Option<BarostatMove>,
}

impl VolumeMove {
    /// From `[barostat]`, for a periodic system (validation refuses a
    /// barostat without a cell).
    pub fn from_setup(setup: &MoveSetup) -> Result<Option<Self>> {
        let (Some(b), Some(cell)) = (&setup.config.barostat, setup.cell) else {
            return Ok(None);
        };
        let molecule = setup.molecule;
        Ok(Some(VolumeMove {
            barostat: MonteCarloBarostat::new(
                b.pressure,
                b.interval,
                b.anisotropic,
                // Every member of the run (a rank's state holds a share).
                &vec![cell.volume(); setup.config.n_members()],
                setup.config.ensemble.seed,
            ),
            molecules: MoleculeScaling::new(
                molecule.n_atoms(),
                &molecule.template.topology().bonds(),
                setup.state.device,
            ),
            last: None,
        }))
    }
}

impl Move for VolumeMove {
    fn name(&self) -> &'static str {
        "barostat"
    }

    fn interval(&self) -> u64 {
        self.barostat.interval
    }

    fn during_equilibration(&self) -> bool {
        true
    }

    fn attempt(&mut self, cx: &mut MoveContext) -> Result<MoveReport> {
        let kt: Vec<f64> = cx
            .temperatures
            .iter()
            .map(|&t| crate::units::kt(t))
            .collect();
        let moved = self
            .barostat
            .attempt(cx.state, cx.force, &kt, &self.molecules, cx.team)?;
        let report = MoveReport {
            new_list_shape: moved.grew_list,
        };
        self.last = Some(moved);
        Ok(report)
    }

    fn pressure_bar(&self) -> Option<f64> {
        Some(self.barostat.pressure_bar)
    }

    fn save(&self) -> serde_json::Value {
        to_saved(&self.barostat)
    }

    fn load(&mut self, saved: serde_json::Value) -> Result<()> {
        self.barostat = from_saved(saved)?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "Monte Carlo barostat: {} bar, {}, every {} steps",
            self.barostat.pressure_bar,
            if self.barostat.anisotropic {
                "one axis at a time"
            } else {
                "isotropic"
            },
            self.barostat.interval
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
