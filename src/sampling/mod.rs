//! Samplers acting between integrator steps: temperature replica exchange.

pub mod replica_exchange;

pub use replica_exchange::{ExchangeOutcome, ReplicaExchange, ReplicaExchangeSummary};
