//! Velocity Verlet: symplectic and time-reversible, conserves total energy up
//! to an O(dt²) fluctuation with no drift (for smooth forces), and conserves
//! total momentum when the forces sum to zero.

use tch::Tensor;

use super::{Integrator, Substep};
use crate::error::Result;
use crate::force::{update_forces, ForceProvider};
use crate::state::BatchState;

pub struct VelocityVerlet {
    dt: f64,
    /// Half kicks (dt/2).
    half: Substep,
    /// Whole drifts (dt).
    whole: Substep,
}

impl VelocityVerlet {
    pub fn new(state: &BatchState, dt: f64) -> Self {
        VelocityVerlet {
            dt,
            half: Substep::new(state, 0.5 * dt),
            whole: Substep::new(state, dt),
        }
    }
}

impl Integrator for VelocityVerlet {
    fn describe(&self) -> String {
        format!("velocity Verlet (NVE), dt = {} fs", self.dt)
    }

    fn step(&mut self, state: &mut BatchState, force: &dyn ForceProvider) -> Result<()> {
        self.half.kick(state);
        self.whole.drift(state);
        update_forces(state, force)?;
        self.half.kick(state);
        state.step += 1;
        Ok(())
    }

    fn timestep(&self) -> f64 {
        self.dt
    }

    fn captured_inputs(&self) -> Vec<&Tensor> {
        [self.half.tensors(), self.whole.tensors()].concat()
    }

    fn conserves_momentum(&self) -> bool {
        true
    }
}
