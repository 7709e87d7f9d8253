//! Samplers acting between integrator steps: moves ([`moves::Move`]), of
//! which temperature replica exchange and the Monte Carlo barostat are two.

pub mod barostat;
pub mod exchange_move;
pub mod moves;
pub mod replica_exchange;
pub mod volume_move;

pub use barostat::{BarostatMove, MoleculeScaling, MonteCarloBarostat};
pub use exchange_move::{ExchangeAttempt, ReplicaExchangeMove};
pub use moves::{Move, MoveReport, MoveSet};
pub use replica_exchange::{ExchangeOutcome, ReplicaExchange, ReplicaExchangeSummary};
pub use volume_move::VolumeMove;
