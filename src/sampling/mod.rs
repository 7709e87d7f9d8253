//! Samplers acting between integrator steps: temperature replica exchange
//! and the Monte Carlo barostat.

pub mod barostat;
pub mod replica_exchange;

pub use barostat::{BarostatMove, MoleculeScaling, MonteCarloBarostat};
pub use replica_exchange::{ExchangeOutcome, ReplicaExchange, ReplicaExchangeSummary};
