//! BAOAB Langevin dynamics (Leimkuhler & Matthews 2013; OpenMM's
//! LangevinMiddleIntegrator): half kick, half drift, exact Ornstein-Uhlenbeck
//! velocity update, half drift, force call, half kick. Samples configurations
//! with O(dt²) error and exact kinetic temperature for harmonic systems, and
//! needs only one force call per step.
//!
//! Each member has its own thermostat temperature (a tensor), so replica
//! exchange can reassign temperatures without touching the integrator.

use tch::{Kind, Tensor};

use super::{drift, kick, Integrator};
use crate::error::Result;
use crate::force::{update_forces, ForceProvider};
use crate::rng::CounterRng;
use crate::state::BatchState;
use crate::units::per_ps_to_per_fs;

pub struct Langevin {
    dt: f64,
    /// Friction in 1/fs.
    gamma: f64,
    inv_mass: Tensor,
    /// [R] thermostat temperature of each member, K.
    temperatures: Tensor,
    /// sqrt(1 − exp(−2γdt)) · sqrt(kT/m), [R*N, 1]; recomputed when temperatures change.
    noise_scale: Tensor,
    /// exp(−γ dt).
    c1: f64,
    pub rng: CounterRng,
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
            inv_mass: state.masses.reciprocal(),
            temperatures: temps.shallow_clone(),
            noise_scale: Tensor::zeros([1], (state.kind, state.device)),
            c1,
            rng,
        };
        integrator.set_temperatures(state, &temps);
        integrator
    }

    pub fn temperatures(&self) -> &Tensor {
        &self.temperatures
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
        let h = 0.5 * self.dt;
        kick(state, &self.inv_mass, h);
        drift(state, h);
        let noise = self.rng.normal(&state.noise_index).to_kind(state.kind) * &self.noise_scale;
        state.velocities *= self.c1;
        state.velocities += noise;
        drift(state, h);
        update_forces(state, force)?;
        kick(state, &self.inv_mass, h);
        state.step += 1;
        Ok(())
    }

    fn set_temperatures(&mut self, state: &BatchState, temperatures: &Tensor) -> bool {
        let c2 = (1.0 - self.c1 * self.c1).max(0.0).sqrt();
        self.noise_scale = state.thermal_velocity_scale(temperatures) * c2;
        self.temperatures = temperatures.shallow_clone();
        true
    }

    fn rng_counter(&self) -> Option<u64> {
        Some(self.rng.counter)
    }

    fn set_rng_counter(&mut self, counter: u64) {
        self.rng.counter = counter;
    }

    fn timestep(&self) -> f64 {
        self.dt
    }

    fn conserves_momentum(&self) -> bool {
        false
    }
}
