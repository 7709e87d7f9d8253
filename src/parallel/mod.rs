//! Running one set of members across several processes (MPI ranks): which
//! members each rank owns, and the few collective operations a run needs.
//!
//! Every rank steps its own contiguous share of the members on its own
//! device; only per-member numbers travel (energies for an exchange, the
//! frames the outputs and checkpoints are written from). The [`Team`] of a
//! process started without a launcher is one rank of one, whose operations
//! are copies: a run without `mpirun` does exactly what it did before.
//! MPI itself (the `mpi` cargo feature) lives in [`mpi`].

#[cfg(feature = "mpi")]
mod mpi;

use std::ops::Range;
use std::rc::Rc;

use crate::error::Result;
use crate::reporters::{HostFrame, Wants};
use crate::system::cell::Cell;

/// The collective operations a run needs (MPI's, or a single process's).
pub trait Communicator {
    /// This process's rank, 0..size.
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Rank among the processes on this node (picks the GPU).
    fn local_rank(&self) -> usize;
    /// Every rank's `local` (`counts[r]` numbers from rank r) in rank
    /// order, on every rank.
    fn all_gather(&self, local: &[f64], counts: &[usize]) -> Vec<f64>;
    /// The same on rank 0 only (the others get an empty vector).
    fn gather(&self, local: &[f64], counts: &[usize]) -> Vec<f64>;
    /// Element-wise maximum over the ranks, on every rank.
    fn max(&self, local: &[u64]) -> Vec<u64>;
    /// End every rank of the job with `code` (a rank that failed alone must
    /// not leave the others waiting for it).
    fn abort(&self, code: i32) -> !;
}

/// A process on its own.
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn all_gather(&self, local: &[f64], _counts: &[usize]) -> Vec<f64> {
        local.to_vec()
    }
    fn gather(&self, local: &[f64], _counts: &[usize]) -> Vec<f64> {
        local.to_vec()
    }
    fn max(&self, local: &[u64]) -> Vec<u64> {
        local.to_vec()
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// How many processes a launcher (mpirun/mpiexec of Open MPI or MPICH,
/// srun) started for this job, from the variables it sets; None without one.
pub fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .or_else(|| {
            std::env::var_os("SLURM_PROCID")
                .and_then(|_| std::env::var("SLURM_STEP_NUM_TASKS").ok())
        })
        .and_then(|s| s.trim().parse().ok())
}

/// The communicator of this process: MPI's world when a launcher started
/// more than one process, else [`Solo`]. A build without the `mpi` feature
/// refuses to run as one of several processes (each would write the same
/// files).
pub fn world() -> Result<Rc<dyn Communicator>> {
    match launched_size() {
        Some(n) if n > 1 => connect(n),
        _ => Ok(Rc::new(Solo)),
    }
}

#[cfg(feature = "mpi")]
fn connect(_n: usize) -> Result<Rc<dyn Communicator>> {
    Ok(Rc::new(mpi::MpiWorld::init()?))
}

#[cfg(not(feature = "mpi"))]
fn connect(n: usize) -> Result<Rc<dyn Communicator>> {
    Err(crate::error::Error::Invalid(format!(
        "started as one of {n} processes (mpirun/srun), but this mlff-md was built without MPI support; build it with `cargo build --release --features mpi` (needs an MPI library such as Open MPI), or start it without mpirun"
    )))
}

/// The rank of this process on its node from the launcher's variables
/// (Open MPI, MPICH, Slurm), if it set one.
pub fn launcher_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok())
    .and_then(|s| s.trim().parse().ok())
}

/// Members `0..total` split into `size` contiguous shares whose sizes differ
/// by at most one (the first `total mod size` shares have one more).
pub fn share(total: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (total / size, total % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// The processes of a run and the members each owns.
#[derive(Clone)]
pub struct Team {
    pub comm: Rc<dyn Communicator>,
    /// Members of the whole run.
    pub total: usize,
}

impl Team {
    /// Whether this process writes the outputs (rank 0).
    pub fn leads(&self) -> bool {
        self.comm.rank() == 0
    }

    pub fn is_alone(&self) -> bool {
        self.comm.size() == 1
    }

    /// The members this process steps.
    pub fn mine(&self) -> Range<usize> {
        share(self.total, self.comm.rank(), self.comm.size())
    }

    /// How many numbers each rank sends when each member sends `per_member`.
    fn counts(&self, per_member: usize) -> Vec<usize> {
        (0..self.comm.size())
            .map(|r| share(self.total, r, self.comm.size()).len() * per_member)
            .collect()
    }

    /// Every member's `per_member` numbers, in member order, on every rank,
    /// from each rank's own.
    pub fn all_members(&self, local: &[f64], per_member: usize) -> Vec<f64> {
        self.comm.all_gather(local, &self.counts(per_member))
    }

    /// The same on rank 0 only.
    fn gather_members(&self, local: &[f64], per_member: usize) -> Vec<f64> {
        self.comm.gather(local, &self.counts(per_member))
    }

    /// Every rank's (member, step) records, concatenated in rank order, on
    /// every rank: for what each rank notes about its own members (the
    /// blow-ups it reinitialised), so rank 0's summary has all of them.
    pub fn all_records(&self, local: &[(usize, u64)]) -> Vec<(usize, u64)> {
        if self.is_alone() {
            return local.to_vec();
        }
        let ones = vec![1; self.comm.size()];
        let counts: Vec<usize> = self
            .comm
            .all_gather(&[(2 * local.len()) as f64], &ones)
            .into_iter()
            .map(|c| c as usize)
            .collect();
        // Member ids and steps are integers below 2^53: exact as f64.
        let flat: Vec<f64> = local
            .iter()
            .flat_map(|&(m, s)| [m as f64, s as f64])
            .collect();
        self.comm
            .all_gather(&flat, &counts)
            .chunks(2)
            .map(|p| (p[0] as usize, p[1] as u64))
            .collect()
    }

    /// Whether any rank says yes.
    pub fn any(&self, yes: bool) -> bool {
        self.comm.max(&[u64::from(yes)])[0] != 0
    }

    /// Once per step: the signal any rank caught (the largest number), whether
    /// any rank's wall clock asks for a checkpoint, and what rank 0's
    /// reporters read now ([`Team::agree_wants`]), in one exchange.
    pub fn agree_step(
        &self,
        signal: usize,
        wall_due: bool,
        wants: Option<Wants>,
    ) -> (usize, bool, Option<Wants>) {
        if self.is_alone() {
            return (signal, wall_due, wants);
        }
        let mut flags = vec![signal as u64, u64::from(wall_due)];
        flags.extend(wants_flags(wants));
        let v = self.comm.max(&flags);
        (v[0] as usize, v[1] != 0, wants_from(&v[2..]))
    }

    /// What rank 0's reporters want now, on every rank (the others pass
    /// None), so every rank pulls the same parts of its frame.
    pub fn agree_wants(&self, mine: Option<Wants>) -> Option<Wants> {
        if self.is_alone() {
            return mine;
        }
        wants_from(&self.comm.max(&wants_flags(mine)))
    }

    /// The whole run's frame on rank 0 (None on the others) from each
    /// rank's frame of its own members (pulled with the same wants), one
    /// molecule of `atoms` atoms per member.
    pub fn gather_frame(&self, frame: HostFrame, atoms: usize) -> Option<HostFrame> {
        if self.is_alone() {
            return Some(frame);
        }
        let per_member = |v: &[f64], n: usize| self.gather_members(v, n);
        let rows = 3 * atoms;
        let opt = |v: &Option<Vec<f64>>, n: usize| v.as_deref().map(|v| per_member(v, n));
        let potential = per_member(&frame.potential, 1);
        let kinetic = per_member(&frame.kinetic, 1);
        let cells = frame.cells.as_ref().map(|c| {
            let flat: Vec<f64> = c.iter().flat_map(Cell::to_array).collect();
            per_member(&flat, 9)
        });
        let virial = opt(&frame.virial, 1);
        let positions = opt(&frame.positions, rows);
        let velocities = opt(&frame.velocities, rows);
        let forces = opt(&frame.forces, rows);
        self.leads().then(|| HostFrame {
            step: frame.step,
            time_fs: frame.time_fs,
            potential,
            kinetic,
            cells: cells.map(|c| Cell::all_from_rows(&c)),
            positions,
            velocities,
            forces,
            virial,
        })
    }
}

/// Wants as [some, positions, dynamics, virial] flags, for a maximum over
/// the ranks (the others pass None: all zeros).
fn wants_flags(wants: Option<Wants>) -> [u64; 4] {
    let w = wants.unwrap_or_default();
    [
        u64::from(wants.is_some()),
        u64::from(w.positions),
        u64::from(w.dynamics),
        u64::from(w.virial),
    ]
}

/// Wants from [`wants_flags`].
fn wants_from(v: &[u64]) -> Option<Wants> {
    (v[0] != 0).then_some(Wants {
        positions: v[1] != 0,
        dynamics: v[2] != 0,
        virial: v[3] != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_contiguous_balanced_and_cover_every_member() {
        for total in [1, 2, 5, 7, 64, 1000] {
            for size in 1..=8 {
                let shares: Vec<Range<usize>> = (0..size).map(|r| share(total, r, size)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[size - 1].end, total);
                for w in shares.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = shares.iter().map(|s| s.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "{total} over {size}: {lens:?}");
            }
        }
        assert_eq!(share(7, 0, 3), 0..3);
        assert_eq!(share(7, 1, 3), 3..5);
        assert_eq!(share(7, 2, 3), 5..7);
    }
}
