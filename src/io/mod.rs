//! Writing results: trajectories through chemfiles, observables in HDF5.

pub mod checkpoint;
pub mod exchange;
pub mod observables;
pub mod trajectory;

pub use observables::ObservablesWriter;
pub use trajectory::TrajectoryWriter;
