//! Batched FIRE with in-flight swapping: tasks (a molecule and where it
//! starts) enter the batch while it has room; each is checked every
//! [`CHECK_EVERY`] of its own iterations and leaves at a check when its
//! largest force is below the threshold or its iterations are spent, and
//! the next tasks take its place (TorchSim's in-flight autobatching). Each
//! task enters with fresh FIRE variables, so its search does not depend on
//! its batch-mates (up to the model's floating-point sums).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use tch::{Device, Kind, Tensor};

use super::config::ScreenMinimize;
use super::order::crowded_last;
use crate::error::Result;
use crate::force::{update_forces, ForceProvider};
use crate::minimize::{member_max_force, Fire, CHECK_EVERY};
use crate::state::{to_host_f64, BatchState};
use crate::system::Molecule;

/// One minimisation: a library record's molecule, from its own structure
/// or from `start`.
#[derive(Debug, Clone)]
pub struct Task {
    pub record: usize,
    pub start: Option<Vec<[f64; 3]>>,
    /// The sampled frame it starts from (conformer sampling), if any.
    pub frame: Option<usize>,
}

/// A finished minimisation.
#[derive(Debug, Clone)]
pub struct Finished {
    pub task: Task,
    pub energy_start: f64,
    pub energy: f64,
    pub max_force: f64,
    pub converged: bool,
    pub iterations: u64,
    pub positions: Vec<[f64; 3]>,
}

/// Where the loop's time went. The checks are its only waits for the
/// device, so the time up to the end of a check's reads is charged to what
/// the device was given before it: a block of iterations or a refill.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PhaseTimes {
    /// Blocks of FIRE iterations on an unchanged batch (and the layout
    /// update of a batch that lost members), up to the next check's reads.
    pub iterations_seconds: f64,
    pub blocks: u64,
    /// Refills: the grown batch built on the host, its neighbour-list and
    /// model layout, and its first evaluation, up to the next check's reads
    /// (a refill that ran out of device memory counts too, without a force
    /// call).
    pub refill_seconds: f64,
    pub refills: u64,
    /// Checks after the reads: finished molecules' results written and the
    /// batch shrunk.
    pub check_seconds: f64,
}

/// What the device was last given (see [`PhaseTimes`]).
#[derive(Clone, Copy)]
enum Phase {
    Iterations,
    Refill,
}

/// What the loop needs besides its tasks.
pub struct Runner<'a> {
    pub force: &'a dyn ForceProvider,
    /// The molecule of each record (None: not screened).
    pub molecules: &'a [Option<Molecule>],
    pub device: Device,
    pub minimize: &'a ScreenMinimize,
    pub max_molecules: usize,
    /// Atoms per batch (halved when a batch runs out of device memory).
    pub budget: usize,
    pub force_calls: u64,
    pub times: PhaseTimes,
    /// Nonzero (a signal number): stop at the next check.
    pub stop: Option<&'a AtomicUsize>,
    /// A warning line for the user.
    pub note: &'a dyn Fn(&str),
}

/// A task in the batch.
struct Slot {
    task: Task,
    atoms: usize,
    iterations: u64,
    energy_start: Option<f64>,
}

impl Runner<'_> {
    fn atoms(&self, record: usize) -> usize {
        self.molecules[record].as_ref().map_or(0, Molecule::n_atoms)
    }

    /// Minimise every task, calling `on_done` as each finishes; returns the
    /// signal that stopped it early, or 0 (unfinished tasks are dropped).
    /// Tasks enter in the order of [`crowded_last`].
    pub fn run(
        &mut self,
        pending: VecDeque<Task>,
        on_done: &mut dyn FnMut(Finished) -> Result<()>,
    ) -> Result<usize> {
        let (device, kind) = (self.device, Kind::Double);
        let cutoffs = self.force.list_shape().map(|s| s.cutoffs);
        let mut pending = crowded_last(pending, self.molecules, cutoffs.as_deref());
        let mut active: Vec<Slot> = Vec::new();
        let mut state: Option<BatchState> = None;
        let mut fire: Option<Fire> = None;
        let mut unchecked: Vec<bool> = Vec::new();
        // The force provider still holds the layout of a batch that lost
        // members: a refill (whose first evaluation rebatches) or the next
        // block of iterations rebatches it, not the removal itself, so a
        // refill does not pay for the neighbour list's allocation twice.
        let mut stale_layout = false;
        let mut mark = Instant::now();
        let mut phase = Phase::Refill;
        loop {
            // Checks: all members after a block of iterations, only the
            // newcomers after a refill.
            if let Some(st) = state.take() {
                let fmax = to_host_f64(&member_max_force(&st));
                let energies = to_host_f64(&st.energies);
                let positions = st.positions_host();
                let waited = mark.elapsed().as_secs_f64();
                match phase {
                    Phase::Iterations => self.times.iterations_seconds += waited,
                    Phase::Refill => self.times.refill_seconds += waited,
                }
                mark = Instant::now();
                let mut leaving = vec![false; active.len()];
                for (k, slot) in active.iter_mut().enumerate() {
                    if !unchecked[k] {
                        continue;
                    }
                    let energy_start = *slot.energy_start.get_or_insert(energies[k]);
                    let converged = fmax[k] < self.minimize.max_force;
                    if converged || slot.iterations >= self.minimize.max_steps {
                        leaving[k] = true;
                        let o = st.layout.offsets[k];
                        on_done(Finished {
                            task: slot.task.clone(),
                            energy_start,
                            energy: energies[k],
                            max_force: fmax[k],
                            converged,
                            iterations: slot.iterations,
                            positions: (o..o + slot.atoms)
                                .map(|a| {
                                    [positions[3 * a], positions[3 * a + 1], positions[3 * a + 2]]
                                })
                                .collect(),
                        })?;
                    }
                }
                unchecked = vec![false; active.len()];
                if leaving.iter().any(|&l| l) {
                    let (kept, rows) = kept_rows(&st, &leaving);
                    let mut k = 0;
                    active.retain(|_| {
                        k += 1;
                        !leaving[k - 1]
                    });
                    unchecked.truncate(active.len());
                    if !active.is_empty() {
                        // The members that stay keep their positions, forces
                        // and FIRE variables; only the layout changes.
                        let kept = Tensor::from_slice(&kept).to_device(device);
                        let mut next = self.batch(&active, &st.positions.index_select(0, &rows));
                        next.forces = st.forces.index_select(0, &rows);
                        next.energies = st.energies.index_select(0, &kept);
                        stale_layout = true;
                        fire = fire.map(|f| f.regroup(&kept, &rows, 0, 0));
                        state = Some(next);
                    }
                } else {
                    state = Some(st);
                }
                self.times.check_seconds += mark.elapsed().as_secs_f64();
                mark = Instant::now();
            }
            let signal = self.stop.map_or(0, |s| s.load(Ordering::SeqCst));
            if signal != 0 {
                return Ok(signal);
            }
            // Refill while the batch has room (a task larger than the
            // budget goes alone).
            let mut atoms: usize = active.iter().map(|s| s.atoms).sum();
            let r_old = active.len();
            while let Some(next) = pending.front() {
                let n = self.atoms(next.record);
                let fits = atoms + n <= self.budget || active.is_empty();
                if !fits || active.len() >= self.max_molecules {
                    break;
                }
                let task = pending.pop_front().expect("front exists");
                atoms += n;
                active.push(Slot {
                    task,
                    atoms: n,
                    iterations: 0,
                    energy_start: None,
                });
            }
            if active.len() > r_old {
                phase = Phase::Refill;
                self.times.refills += 1;
                let n_new = (active.len() - r_old) as i64;
                let kept_positions = match &state {
                    Some(st) => st.positions.shallow_clone(),
                    None => Tensor::zeros([0, 3], (kind, device)),
                };
                let rows_old = kept_positions.size()[0];
                let mut st = self.batch(&active, &kept_positions);
                let new_rows = st.positions.size()[0] - rows_old;
                let old = Tensor::arange(r_old as i64, (Kind::Int64, device));
                let old_rows = Tensor::arange(rows_old, (Kind::Int64, device));
                let grown = match &fire {
                    Some(f) => f.regroup(&old, &old_rows, n_new, new_rows),
                    None => Fire::new(&st),
                };
                match evaluate(self.force, &mut st) {
                    Ok(()) => stale_layout = false,
                    Err(e) if e.is_out_of_memory() && active.len() > 1 => {
                        // Too big for the device after all: the newcomers go
                        // back to the queue (they have not moved), batches
                        // get half the atoms from now on, and the members
                        // that stay go on as they were.
                        self.budget = (self.budget / 2).max(1);
                        (self.note)(&format!(
                            "warning: a batch ran out of device memory; batches of up to {} atoms from now on",
                            self.budget
                        ));
                        for s in active.drain(r_old..).rev() {
                            pending.push_front(s.task);
                        }
                        drop(st);
                        crate::cuda_graph::release_cached_memory();
                        if let Some(st) = &state {
                            self.force.rebatch(st)?;
                            stale_layout = false;
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                self.force_calls += 1;
                fire = Some(grown);
                unchecked = (0..active.len()).map(|k| k >= r_old).collect();
                state = Some(st);
                continue;
            }
            let (Some(st), Some(f)) = (state.as_mut(), fire.as_mut()) else {
                return Ok(0);
            };
            phase = Phase::Iterations;
            self.times.blocks += 1;
            if stale_layout {
                self.force.rebatch(st)?;
                stale_layout = false;
            }
            let moving = Tensor::ones([active.len() as i64], (Kind::Bool, device));
            for _ in 0..CHECK_EVERY {
                f.step(st, self.force, self.minimize.max_step, &moving)?;
            }
            self.force_calls += CHECK_EVERY;
            for s in active.iter_mut() {
                s.iterations += CHECK_EVERY;
            }
            unchecked = vec![true; active.len()];
        }
    }

    /// A state of `active`'s molecules: the first rows from `kept` (the
    /// members that stay, in order), the others at their tasks' starts.
    fn batch(&self, active: &[Slot], kept: &Tensor) -> BatchState {
        // (Member ids key random streams only; FIRE draws none.)
        let members: Vec<(&Molecule, usize)> = active
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let m = self.molecules[s.task.record]
                    .as_ref()
                    .expect("only admitted records enter a batch");
                (m, k)
            })
            .collect();
        let mut st = BatchState::from_members(&members, self.device, Kind::Double);
        let n_kept = kept.size()[0];
        // The newcomers' starts in one upload (a refill brings hundreds).
        let mut flat: Vec<f64> = Vec::new();
        let mut row = 0;
        for (s, (m, _)) in active.iter().zip(&members) {
            if row >= n_kept {
                let start = s.task.start.as_ref().unwrap_or(&m.structures[0]);
                flat.extend(start.iter().flatten());
            }
            row += s.atoms as i64;
        }
        let fresh = Tensor::from_slice(&flat)
            .view([flat.len() as i64 / 3, 3])
            .to_device(self.device);
        st.positions = Tensor::cat(&[kept.to_kind(Kind::Double), fresh], 0);
        st
    }
}

/// Forces and energies of a batch of a new composition.
pub fn evaluate(force: &dyn ForceProvider, state: &mut BatchState) -> Result<()> {
    force.rebatch(state)?;
    update_forces(state, force)
}

/// Slots of the members that stay and their atoms' rows, as device tensors.
fn kept_rows(state: &BatchState, leaving: &[bool]) -> (Vec<i64>, Tensor) {
    let mut kept = Vec::new();
    let mut rows = Vec::new();
    for (k, &gone) in leaving.iter().enumerate() {
        if !gone {
            kept.push(k as i64);
            let o = state.layout.offsets[k] as i64;
            rows.extend(o..o + state.layout.counts[k] as i64);
        }
    }
    (kept, Tensor::from_slice(&rows).to_device(state.device))
}
