//! Velocity Verlet: symplectic and time-reversible, conserves total energy up
//! to an O(dt²) fluctuation with no drift (for smooth forces), and conserves
//! total momentum when the forces sum to zero.

use tch::Tensor;

use super::{drift, kick, Integrator};
use crate::error::Result;
use crate::force::{update_forces, ForceProvider};
use crate::state::BatchState;

pub struct VelocityVerlet {
    dt: f64,
    inv_mass: Tensor,
}

impl VelocityVerlet {
    pub fn new(state: &BatchState, dt: f64) -> Self {
        VelocityVerlet {
            dt,
            inv_mass: state.masses.reciprocal(),
        }
    }
}

impl Integrator for VelocityVerlet {
    fn describe(&self) -> String {
        format!("velocity Verlet (NVE), dt = {} fs", self.dt)
    }

    fn step(&mut self, state: &mut BatchState, force: &dyn ForceProvider) -> Result<()> {
        let h = 0.5 * self.dt;
        kick(state, &self.inv_mass, h);
        drift(state, self.dt);
        update_forces(state, force)?;
        kick(state, &self.inv_mass, h);
        state.step += 1;
        Ok(())
    }

    fn timestep(&self) -> f64 {
        self.dt
    }

    fn conserves_momentum(&self) -> bool {
        true
    }
}
