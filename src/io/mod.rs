//! Writing results: trajectories through chemfiles, observables in HDF5,
//! checkpoints, and the lock that keeps one run per output directory.

pub mod checkpoint;
pub mod exchange;
pub mod lock;
pub mod observables;
pub mod trajectory;
pub mod wrap;

pub use observables::ObservablesWriter;
pub use trajectory::TrajectoryWriter;
