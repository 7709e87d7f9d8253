//! BAOAB Langevin dynamics (Leimkuhler & Matthews 2013; OpenMM's
//! LangevinMiddleIntegrator): half kick, half drift, exact Ornstein-Uhlenbeck
//! velocity update, half drift, force call, half kick. Samples configurations
//! with O(dt²) error and exact kinetic temperature for harmonic systems, and
//! needs only one force call per step.
//!
//! Each member has its own thermostat temperature (a tensor), so replica
//! exchange can reassign temperatures without touching the integrator.

use tch::{Kind, Tensor};

use super::{Integrator, Substep};
use crate::error::Result;
use crate::force::{update_forces, ForceProvider};
use crate::rng::CounterRng;
use crate::state::BatchState;
use crate::units::per_ps_to_per_fs;

pub struct Langevin {
    dt: f64,
    /// Friction in 1/fs.
    gamma: f64,
    /// Half kicks and half drifts (dt/2).
    half: Substep,
    /// [R] thermostat temperature of each member, K.
    temperatures: Tensor,
    /// sqrt(1 − exp(−2γdt)) · sqrt(kT/m), [R*N, 1]; recomputed when temperatures change.
    noise_scale: Tensor,
    /// exp(−γ dt).
    c1: f64,
    pub rng: CounterRng,
    /// Noise drawn ahead on the device (see [`Integrator::use_device_keys`]).
    block: Option<NoiseBlock>,
}

/// Memory for pre-drawn noise (bytes): draws per block are as many as fit,
/// up to [`MAX_BLOCK_DRAWS`].
const NOISE_BLOCK_BYTES: i64 = 128 << 20;
/// Most draws made at once.
const MAX_BLOCK_DRAWS: u64 = 64;

/// Thermostat noise drawn ahead for a captured step (see
/// [`Integrator::use_device_keys`]): the Gaussian numbers of draws
/// `base .. base + draws`, made by one batched evaluation of the counter
/// generator, and the row the next step reads (`slot`, a device scalar the
/// step itself advances, so a replayed graph moves through the block). The
/// numbers are exactly those of drawing one step at a time; a block costs
/// the generator's ~50 elementwise kernels once per `draws` steps instead
/// of once per step, which is most of a small system's step.
struct NoiseBlock {
    /// [draws, R*N, 3] in the state's precision.
    noise: Tensor,
    /// [1] int64: row of the next draw.
    slot: Tensor,
    /// Draw counter of row 0; None until filled (or after the counter was reset).
    base: Option<u64>,
    draws: u64,
}

impl Langevin {
    /// `friction_per_ps` in 1/ps; every member at `temperature` K.
    pub fn new(
        state: &BatchState,
        dt: f64,
        friction_per_ps: f64,
        temperature: f64,
        seed: u64,
    ) -> Self {
        let temps = Tensor::full(
            [state.n_members as i64],
            temperature,
            (Kind::Double, state.device),
        );
        Self::with_temperatures(state, dt, friction_per_ps, temps, seed)
    }

    /// Per-member temperatures `temps` ([R], K).
    pub fn with_temperatures(
        state: &BatchState,
        dt: f64,
        friction_per_ps: f64,
        temps: Tensor,
        seed: u64,
    ) -> Self {
        let gamma = per_ps_to_per_fs(friction_per_ps);
        let c1 = (-gamma * dt).exp();
        // Seed stream distinct from the initial-velocity stream.
        let rng = CounterRng::new(crate::rng::splitmix64(seed ^ 0x4c41_4e47_4556_494e));
        let mut integrator = Langevin {
            dt,
            gamma,
            half: Substep::new(state, 0.5 * dt),
            temperatures: temps.shallow_clone(),
            noise_scale: Tensor::zeros([1], (state.kind, state.device)),
            c1,
            rng,
            block: None,
        };
        integrator.set_temperatures(state, &temps);
        integrator
    }
}

impl Integrator for Langevin {
    fn describe(&self) -> String {
        format!(
            "BAOAB Langevin (NVT), dt = {} fs, friction = {} 1/ps",
            self.dt,
            self.gamma * 1.0e3
        )
    }

    fn step(&mut self, state: &mut BatchState, force: &dyn ForceProvider) -> Result<()> {
        self.half.kick(state);
        self.half.drift(state);
        let z = match &self.block {
            None => self.rng.normal(&state.noise_index).to_kind(state.kind),
            Some(block) => {
                let z = block.noise.index_select(0, &block.slot).squeeze_dim(0);
                let mut slot = block.slot.shallow_clone();
                let _ = slot.g_add_scalar_(1);
                self.rng.counter += 1;
                z
            }
        };
        state.velocities *= self.c1;
        let _ = state.velocities.addcmul_(&z, &self.noise_scale);
        self.half.drift(state);
        update_forces(state, force)?;
        self.half.kick(state);
        state.step += 1;
        Ok(())
    }

    fn set_temperatures(&mut self, state: &BatchState, temperatures: &Tensor) -> bool {
        let c2 = (1.0 - self.c1 * self.c1).max(0.0).sqrt();
        let scale = state.thermal_velocity_scale(temperatures) * c2;
        // In place when possible: a captured CUDA graph reads this storage.
        if self.noise_scale.size() == scale.size() {
            self.noise_scale.copy_(&scale);
        } else {
            self.noise_scale = scale;
        }
        self.temperatures = temperatures.shallow_clone();
        true
    }

    fn rng_counter(&self) -> Option<u64> {
        Some(self.rng.counter)
    }

    fn set_rng_counter(&mut self, counter: u64) {
        self.rng.counter = counter;
        if let Some(block) = self.block.as_mut() {
            block.base = None;
        }
    }

    fn use_device_keys(&mut self, state: &BatchState) {
        if self.block.is_none() {
            let per_draw = 3 * state.positions.size()[0] * state.kind.elt_size_in_bytes() as i64;
            let draws = ((NOISE_BLOCK_BYTES / per_draw.max(1)) as u64).clamp(1, MAX_BLOCK_DRAWS);
            let rows = state.positions.size()[0];
            self.block = Some(NoiseBlock {
                noise: Tensor::zeros([draws as i64, rows, 3], (state.kind, state.device)),
                slot: Tensor::zeros([1], (Kind::Int64, state.device)),
                base: None,
                draws,
            });
        }
    }

    fn before_step(&mut self, state: &BatchState) {
        let counter = self.rng.counter;
        let Some(block) = self.block.as_mut() else {
            return;
        };
        let current = block
            .base
            .is_some_and(|b| counter >= b && counter - b < block.draws);
        if current {
            return;
        }
        let keys: Vec<i64> = (counter..counter + block.draws)
            .flat_map(|c| self.rng.keys(c))
            .collect();
        let keys = Tensor::from_slice(&keys)
            .view([block.draws as i64, 3])
            .to_device(state.device);
        let z = CounterRng::normal_block(&state.noise_index, &keys);
        block.noise.copy_(&z.to_kind(state.kind));
        let _ = block.slot.fill_(0);
        block.base = Some(counter);
    }

    fn replayed(&mut self, state: &mut BatchState) {
        state.step += 1;
        self.rng.counter += 1;
    }

    fn captured_inputs(&self) -> Vec<&Tensor> {
        let mut v = self.half.tensors().to_vec();
        v.push(&self.noise_scale);
        if let Some(block) = &self.block {
            v.push(&block.noise);
            v.push(&block.slot);
        }
        v
    }

    fn timestep(&self) -> f64 {
        self.dt
    }

    fn conserves_momentum(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Molecule;
    use tch::Device;

    /// The thermostat's stream is seeded from the run seed in a fixed way
    /// (value from a separate transcription of SplitMix64): a change would
    /// alter every Langevin trajectory of a given seed.
    #[test]
    fn the_thermostat_stream_seed_is_pinned() {
        let m = Molecule::from_symbols(&["O", "H"], &[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).unwrap();
        let state = BatchState::new(&m, 1, Device::Cpu, Kind::Double);
        let l = Langevin::new(&state, 0.5, 1.0, 300.0, 42);
        assert_eq!(l.rng.seed, 0x81fa_126a_e053_5cfa);
        assert_eq!(l.rng.counter, 0);
        // c1 = exp(−γ dt) with γ = 1/ps = 1e-3/fs, dt = 0.5 fs.
        assert!((l.c1 - (-0.0005f64).exp()).abs() < 1e-16);
    }
}
