//! Integrators advance the batched state by one step on the device. They know
//! nothing of files or reporters; they ask a force provider for forces.

use tch::Tensor;

use crate::error::Result;
use crate::force::ForceProvider;
use crate::state::BatchState;
use crate::units::EV_PER_A_AMU_TO_A_PER_FS2;

pub mod langevin;
pub mod verlet;

pub use langevin::Langevin;
pub use verlet::VelocityVerlet;

pub trait Integrator {
    /// One line for logs and metadata.
    fn describe(&self) -> String;

    /// Advance one time step. On entry `state.forces` holds the forces at
    /// `state.positions`; on return it holds those at the new positions.
    fn step(&mut self, state: &mut BatchState, force: &dyn ForceProvider) -> Result<()>;

    /// Time step in fs.
    fn timestep(&self) -> f64;

    /// Set per-member thermostat temperatures ([R], K). Returns false for
    /// integrators without a thermostat.
    fn set_temperatures(&mut self, _state: &BatchState, _temperatures: &Tensor) -> bool {
        false
    }

    /// Draw counter of the integrator's random stream, if it has one
    /// (saved in checkpoints).
    fn rng_counter(&self) -> Option<u64> {
        None
    }

    /// Restore the draw counter saved by [`Integrator::rng_counter`].
    fn set_rng_counter(&mut self, _counter: u64) {}

    /// Read the random numbers from a device tensor the step advances
    /// through from now on, so that a step captured in a CUDA graph gets
    /// fresh numbers on every replay (keys passed as host constants would
    /// be baked into the graph). The numbers drawn are the same either way.
    fn use_device_keys(&mut self, _state: &BatchState) {}

    /// Host work due before a step that must not be captured in a graph
    /// (drawing the next block of noise). Call before every step.
    fn before_step(&mut self, _state: &BatchState) {}

    /// The host-side bookkeeping of one step that a graph replay did on the
    /// device (step and draw counters).
    fn replayed(&mut self, state: &mut BatchState) {
        state.step += 1;
    }

    /// Device tensors a captured step reads that belong to the integrator:
    /// a graph stays valid only while their storage does not move.
    fn captured_inputs(&self) -> Vec<&Tensor> {
        Vec::new()
    }

    /// Whether total momentum is conserved (it sets the degrees of freedom
    /// used for the kinetic temperature: 3N − 3 if so, 3N otherwise).
    fn conserves_momentum(&self) -> bool;
}

/// Degrees of freedom per member for the kinetic temperature.
pub fn degrees_of_freedom(n_atoms: usize, integrator: &dyn Integrator) -> f64 {
    let full = 3.0 * n_atoms as f64;
    if integrator.conserves_momentum() && n_atoms > 1 {
        full - 3.0
    } else {
        full
    }
}

/// What a kick and a drift of `h` fs multiply by, made once per integrator
/// so each update is one fused multiply-add (`addcmul_`) on the device: on
/// a small system every kernel of the step counts.
pub(crate) struct Substep {
    /// [R*N, 1]: h/m in Å/fs per eV/Å.
    kick: Tensor,
    /// [1]: h in fs.
    drift: Tensor,
}

impl Substep {
    pub(crate) fn new(state: &BatchState, h: f64) -> Substep {
        Substep {
            kick: state.masses.reciprocal() * (h * EV_PER_A_AMU_TO_A_PER_FS2),
            drift: Tensor::full([1], h, (state.kind, state.device)),
        }
    }

    /// v ← v + (h/m) F (the "B" update).
    pub(crate) fn kick(&self, state: &mut BatchState) {
        let f = state.forces.shallow_clone();
        let _ = state.velocities.addcmul_(&f, &self.kick);
    }

    /// x ← x + h v (the "A" update).
    pub(crate) fn drift(&self, state: &mut BatchState) {
        let v = state.velocities.shallow_clone();
        let _ = state.positions.addcmul_(&v, &self.drift);
    }

    /// The device tensors it reads (a captured step depends on them).
    pub(crate) fn tensors(&self) -> [&Tensor; 2] {
        [&self.kick, &self.drift]
    }
}
