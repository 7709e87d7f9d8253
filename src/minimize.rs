//! Batched FIRE energy minimisation (Bitzek et al., PRL 97, 170201 (2006)),
//! with ASE's parameters: every member relaxes at once with its own time
//! step and mixing parameter, and each stops moving once its largest atomic
//! force is below the threshold. Built structures rarely sit at a minimum of
//! the model; minimising first keeps MD from starting with a violent kick.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::force::{update_forces, ForceProvider};
use crate::state::{to_host_f64, BatchState};

#[derive(Debug, Clone, Copy)]
pub struct FireOptions {
    /// Converged when every atom's force norm is below this (eV/Å).
    pub max_force: f64,
    /// Iteration limit.
    pub max_steps: u64,
    /// Largest displacement of a member per iteration (Å, whole-member norm).
    pub max_step: f64,
}

impl Default for FireOptions {
    fn default() -> Self {
        FireOptions {
            max_force: 0.05,
            max_steps: 2000,
            max_step: 0.2,
        }
    }
}

/// Outcome per member.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MinimizeReport {
    pub iterations: u64,
    pub converged: Vec<bool>,
    /// Largest atomic force norm at the end (eV/Å).
    pub max_force: Vec<f64>,
    pub energy_before: Vec<f64>,
    pub energy_after: Vec<f64>,
}

// ASE's FIRE constants.
const DT_START: f64 = 0.1;
const DT_MAX: f64 = 1.0;
const N_MIN: f64 = 5.0;
const F_INC: f64 = 1.1;
const F_DEC: f64 = 0.5;
const ALPHA_START: f64 = 0.1;
const F_ALPHA: f64 = 0.99;
/// Iterations between convergence checks (each costs one [R] host copy).
pub const CHECK_EVERY: u64 = 10;

/// Largest atomic force norm of each member, [R] float64 on the device.
pub fn member_max_force(state: &BatchState) -> Tensor {
    let norms = state
        .forces
        .to_kind(Kind::Double)
        .square()
        .sum_dim_intlist(-1, false, Kind::Double)
        .sqrt();
    state.layout.max(&norms, 0.0)
}

/// Where a minimisation stands, at each convergence check.
#[derive(Debug, Clone, Copy)]
pub struct FireProgress {
    pub iteration: u64,
    pub max_steps: u64,
    /// Largest atomic force norm over all members (eV/Å).
    pub max_force: f64,
    /// Members not yet below the threshold.
    pub active: usize,
    pub members: usize,
}

/// Minimise every member of `state` in place; velocities are left untouched.
pub fn fire(
    state: &mut BatchState,
    force: &dyn ForceProvider,
    opts: &FireOptions,
) -> Result<MinimizeReport> {
    fire_with_progress(state, force, opts, |_| {})
}

/// FIRE's per-member variables: the search velocity of every atom and each
/// member's time step, mixing parameter and count of downhill steps. Kept
/// apart from the state so a batch can drop and take members between
/// iterations (screening), each member going on exactly where it was.
pub struct Fire {
    /// [N, 3] float64.
    v: Tensor,
    /// [R] float64.
    dt: Tensor,
    alpha: Tensor,
    count: Tensor,
    /// [R] bool: the member has not taken its first iteration. As in ASE,
    /// a first iteration (zero velocity, so no power to judge) changes
    /// neither the time step, nor the mixing, nor the count.
    fresh: Tensor,
}

impl Fire {
    /// Fresh variables for every member of `state`.
    pub fn new(state: &BatchState) -> Fire {
        let opts = (Kind::Double, state.device);
        let r = state.n_members as i64;
        Fire {
            v: Tensor::zeros([state.positions.size()[0], 3], opts),
            dt: Tensor::full([r], DT_START, opts),
            alpha: Tensor::full([r], ALPHA_START, opts),
            count: Tensor::zeros([r], opts),
            fresh: Tensor::ones([r], (Kind::Bool, state.device)),
        }
    }

    /// The variables of the members `keep` (slots, in order; `rows` their
    /// atoms' rows), followed by fresh ones for `new_members` members of
    /// `new_rows` atoms in all.
    pub fn regroup(&self, keep: &Tensor, rows: &Tensor, new_members: i64, new_rows: i64) -> Fire {
        let opts = (Kind::Double, self.dt.device());
        let cat = |t: &Tensor, fresh: Tensor| Tensor::cat(&[t.index_select(0, keep), fresh], 0);
        Fire {
            v: Tensor::cat(
                &[
                    self.v.index_select(0, rows),
                    Tensor::zeros([new_rows, 3], opts),
                ],
                0,
            ),
            dt: cat(&self.dt, Tensor::full([new_members], DT_START, opts)),
            alpha: cat(&self.alpha, Tensor::full([new_members], ALPHA_START, opts)),
            count: cat(&self.count, Tensor::zeros([new_members], opts)),
            fresh: cat(
                &self.fresh,
                Tensor::ones([new_members], (Kind::Bool, self.dt.device())),
            ),
        }
    }

    /// One FIRE iteration of every member whose `moving` ([R] bool) is
    /// set, then the forces at the new positions. Semi-implicit Euler with
    /// unit masses; each member's displacement is capped at `max_step` Å.
    pub fn step(
        &mut self,
        state: &mut BatchState,
        force: &dyn ForceProvider,
        max_step: f64,
        moving: &Tensor,
    ) -> Result<()> {
        let batch = state.batch.shallow_clone();
        let per_atom = |t: &Tensor| t.index_select(0, &batch).unsqueeze(1);
        let (v, dt, alpha, count) = (&self.v, &self.dt, &self.alpha, &self.count);
        let f = state.forces.to_kind(Kind::Double);
        let p = state.per_member_sum(&(&f * v));
        let f_norm = state.per_member_sum(&f.square()).sqrt().clamp_min(1e-300);
        let v_norm = state.per_member_sum(&v.square()).sqrt();
        let started = self.fresh.logical_not();
        let uphill = p.le(0.0).logical_and(&started);
        let mixed = v * per_atom(&(1.0 - alpha)) + &f * per_atom(&(alpha * &v_norm / &f_norm));
        let v = v.zeros_like().where_self(&per_atom(&uphill), &mixed);
        let accelerate = uphill.logical_not().logical_and(&count.gt(N_MIN));
        self.dt = (dt * F_DEC).where_self(
            &uphill,
            &(dt * F_INC).clamp_max(DT_MAX).where_self(&accelerate, dt),
        );
        self.alpha = Tensor::full_like(alpha, ALPHA_START)
            .where_self(&uphill, &(alpha * F_ALPHA).where_self(&accelerate, alpha));
        self.count = count
            .zeros_like()
            .where_self(&uphill, &(count + 1.0).where_self(&started, count));
        self.fresh = self.fresh.zeros_like();
        self.v = v + &f * per_atom(&self.dt);
        let dr = &self.v * per_atom(&self.dt);
        let dr_norm = state.per_member_sum(&dr.square()).sqrt().clamp_min(1e-300);
        let scale = (max_step / dr_norm).clamp_max(1.0) * moving.to_kind(Kind::Double);
        let step = (dr * per_atom(&scale)).to_kind(state.kind);
        state.positions += step;
        update_forces(state, force)
    }
}

/// [`fire`], calling `progress` at every convergence check (every
/// `CHECK_EVERY` iterations, where the per-member forces come to the host
/// anyway).
pub fn fire_with_progress(
    state: &mut BatchState,
    force: &dyn ForceProvider,
    opts: &FireOptions,
    mut progress: impl FnMut(FireProgress),
) -> Result<MinimizeReport> {
    update_forces(state, force)?;
    let energy_before = to_host_f64(&state.energies);
    let mut fire = Fire::new(state);
    let mut active = member_max_force(state).ge(opts.max_force);
    let mut iterations = 0;
    while iterations < opts.max_steps {
        if iterations % CHECK_EVERY == 0 {
            if force.overflow().is_some() {
                // A neighbour list ran out of room: make room and take the
                // forces again, so every later move and the convergence
                // test see all pairs (FIRE goes on from here; it is a
                // search, not a trajectory).
                force.grow(state)?;
                update_forces(state, force)?;
            }
            let fmax = member_max_force(state);
            active = fmax.ge(opts.max_force);
            let host = to_host_f64(&fmax);
            let still = host.iter().filter(|&&f| f >= opts.max_force).count();
            progress(FireProgress {
                iteration: iterations,
                max_steps: opts.max_steps,
                max_force: host.iter().cloned().fold(0.0, f64::max),
                active: still,
                members: host.len(),
            });
            if still == 0 {
                break;
            }
        }
        iterations += 1;
        fire.step(state, force, opts.max_step, &active)?;
    }
    if force.overflow().is_some() {
        force.grow(state)?;
        update_forces(state, force)?;
    }
    let fmax = to_host_f64(&member_max_force(state));
    Ok(MinimizeReport {
        iterations,
        converged: fmax.iter().map(|&f| f < opts.max_force).collect(),
        max_force: fmax,
        energy_before,
        energy_after: to_host_f64(&state.energies),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::force::{Harmonic, LennardJones};
    use crate::system::Molecule;
    use tch::Device;

    #[test]
    fn relaxes_lennard_jones_dimers_to_the_minimum() {
        // Three dimers at different separations; the LJ minimum is 2^(1/6) σ.
        let m = Molecule::from_symbols(&["Ar", "Ar"], &[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]).unwrap();
        let mut state = BatchState::new(&m, 3, Device::Cpu, Kind::Double);
        let stretch = Tensor::from_slice(&[
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, -0.3, 0.1,
            0.0,
        ])
        .view([6, 3]);
        state.positions = &state.positions + stretch;
        let lj = LennardJones {
            epsilon: 0.01,
            sigma: 3.4,
        };
        let report = fire(
            &mut state,
            &lj,
            // Near the minimum the pair's stiffness is 72 ε / r_m² ≈ 0.05
            // eV/Å², so a largest force of 1e-5 eV/Å leaves r within 2e-4 Å.
            &FireOptions {
                max_force: 1e-5,
                max_steps: 20000,
                max_step: 0.2,
            },
        )
        .unwrap();
        assert!(report.converged.iter().all(|&c| c), "{report:?}");
        let x = crate::state::to_host_f64(&state.positions);
        for member in 0..3 {
            let a = &x[member * 6..member * 6 + 3];
            let b = &x[member * 6 + 3..member * 6 + 6];
            let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
            assert!(
                (d - 2f64.powf(1.0 / 6.0) * 3.4).abs() < 1e-3,
                "member {member}: r = {d}"
            );
        }
        assert!(report
            .energy_after
            .iter()
            .zip(&report.energy_before)
            .all(|(a, b)| a <= b));
    }

    /// ASE's FIRE (ase/optimize/fire.py) written out on the host for one
    /// member: the engine's iterations must follow it step by step,
    /// including ASE's first step, which adapts nothing.
    #[test]
    fn iterations_follow_ase_fire() {
        let m = Molecule::from_symbols(&["O", "H"], &[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).unwrap();
        let mut state = BatchState::new(&m, 1, Device::Cpu, Kind::Double);
        let k = 2.0;
        let h = Harmonic::at_current_positions(&state, k);
        let start = [0.9, -0.4, 0.3, 1.5, 0.8, -0.6];
        state.positions = Tensor::from_slice(&start).view([2, 3]);
        update_forces(&mut state, &h).unwrap();
        let mut fire = Fire::new(&state);
        let moving = Tensor::ones([1], (Kind::Bool, Device::Cpu));
        // Host ASE: x relative to the springs' rest positions.
        let rest = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let mut x: Vec<f64> = start.iter().zip(&rest).map(|(a, b)| a - b).collect();
        let mut v: Option<Vec<f64>> = None;
        let (mut dt, mut a, mut n_steps) = (DT_START, ALPHA_START, 0.0);
        let dot = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(a, b)| a * b).sum::<f64>();
        for it in 0..60 {
            let f: Vec<f64> = x.iter().map(|xi| -k * xi).collect();
            let mut vel = match v.take() {
                None => vec![0.0; 6],
                Some(mut vel) => {
                    let vf = dot(&f, &vel);
                    if vf > 0.0 {
                        let (nv, nf) = (dot(&vel, &vel).sqrt(), dot(&f, &f).sqrt());
                        for (vi, fi) in vel.iter_mut().zip(&f) {
                            *vi = (1.0 - a) * *vi + a * fi / nf * nv;
                        }
                        if n_steps > N_MIN {
                            dt = (dt * F_INC).min(DT_MAX);
                            a *= F_ALPHA;
                        }
                        n_steps += 1.0;
                    } else {
                        vel.iter_mut().for_each(|vi| *vi = 0.0);
                        a = ALPHA_START;
                        dt *= F_DEC;
                        n_steps = 0.0;
                    }
                    vel
                }
            };
            for (vi, fi) in vel.iter_mut().zip(&f) {
                *vi += dt * fi;
            }
            let mut dr: Vec<f64> = vel.iter().map(|vi| dt * vi).collect();
            let norm = dot(&dr, &dr).sqrt();
            if norm > 0.2 {
                dr.iter_mut().for_each(|d| *d *= 0.2 / norm);
            }
            x.iter_mut().zip(&dr).for_each(|(xi, d)| *xi += d);
            v = Some(vel);
            fire.step(&mut state, &h, 0.2, &moving).unwrap();
            let got = crate::state::to_host_f64(&state.positions);
            for c in 0..6 {
                assert!(
                    (got[c] - rest[c] - x[c]).abs() < 1e-12,
                    "iteration {it}, coordinate {c}: {} vs {}",
                    got[c] - rest[c],
                    x[c]
                );
            }
        }
    }

    #[test]
    fn converged_members_stay_put() {
        let m = Molecule::from_symbols(&["O", "H"], &[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).unwrap();
        let mut state = BatchState::new(&m, 2, Device::Cpu, Kind::Double);
        let h = Harmonic::at_current_positions(&state, 1.0);
        // Member 1 displaced, member 0 already at its minimum.
        let shift =
            Tensor::from_slice(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.2, 0.0])
                .view([4, 3]);
        state.positions = &state.positions + shift;
        let report = fire(&mut state, &h, &FireOptions::default()).unwrap();
        assert_eq!(report.converged, vec![true, true]);
        let moved = (&state.positions - &h.reference)
            .abs()
            .max()
            .double_value(&[]);
        assert!(moved < 0.05 / 1.0, "still {moved} Å from the minimum");
        let member0 = (&state.positions - &h.reference)
            .narrow(0, 0, 2)
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(member0, 0.0, "a converged member must not move");
    }
}
