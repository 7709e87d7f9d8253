//! mlff-md: molecular dynamics of many replicas in lockstep with one batched
//! libtorch call of a machine-learned force field per step.
//!
//! Layers (data flows one way): [`config`] → [`system`] (chemfiles) →
//! [`state::BatchState`] on the device → [`integrate`] stepping with a
//! [`force::ForceProvider`] → [`io`] reporters, wired together by [`run`].

pub mod bench;
pub mod compile;
pub mod config;
pub mod cuda_graph;
pub mod device;
pub mod error;
pub mod force;
pub mod inspect;
pub mod integrate;
pub mod io;
pub mod minimize;
pub mod neighbors;
pub mod parallel;
pub mod report;
pub mod reporters;
pub mod rng;
pub mod run;
pub mod sampling;
pub mod screen;
pub mod simulation;
pub mod state;
pub mod stepper;
pub mod system;
pub mod units;

pub use error::{Error, Result};
