//! [`Communicator`] over MPI (rsmpi). The universe lives as long as the
//! communicator, so MPI is finalised when the run's last user lets go.

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives as _, Root as _};

use super::{launcher_local_rank, Communicator};
use crate::error::{Error, Result};

pub struct MpiWorld {
    world: SimpleCommunicator,
    local_rank: usize,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl MpiWorld {
    pub fn init() -> Result<MpiWorld> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Invalid("MPI was initialised already in this process".into()))?;
        let world = universe.world();
        // The launcher's node-local rank, else MPI's own split by node.
        let local_rank = launcher_local_rank()
            .unwrap_or_else(|| world.split_shared(world.rank()).rank() as usize);
        Ok(MpiWorld {
            world,
            local_rank,
            _universe: universe,
        })
    }
}

/// Counts and displacements in MPI's int.
fn layout(counts: &[usize]) -> (Vec<i32>, Vec<i32>) {
    let c: Vec<i32> = counts.iter().map(|&n| n as i32).collect();
    let d: Vec<i32> = c
        .iter()
        .scan(0, |acc, &n| {
            let at = *acc;
            *acc += n;
            Some(at)
        })
        .collect();
    (c, d)
}

impl Communicator for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_gather(&self, local: &[f64], counts: &[usize]) -> Vec<f64> {
        let mut all = vec![0.0; counts.iter().sum()];
        let (c, d) = layout(counts);
        let mut part = PartitionMut::new(&mut all[..], c, d);
        self.world.all_gather_varcount_into(local, &mut part);
        all
    }

    fn gather(&self, local: &[f64], counts: &[usize]) -> Vec<f64> {
        let root = self.world.process_at_rank(0);
        if self.world.rank() != 0 {
            root.gather_varcount_into(local);
            return Vec::new();
        }
        let mut all = vec![0.0; counts.iter().sum()];
        let (c, d) = layout(counts);
        let mut part = PartitionMut::new(&mut all[..], c, d);
        root.gather_varcount_into_root(local, &mut part);
        all
    }

    fn max(&self, local: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; local.len()];
        self.world
            .all_reduce_into(local, &mut out[..], SystemOperation::max());
        out
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
