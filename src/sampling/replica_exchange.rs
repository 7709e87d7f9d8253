//! Temperature replica exchange on a batched state.
//!
//! All replicas of a ladder (and `n_ladders` independent ladders) live in one
//! [`BatchState`]; an exchange swaps *temperatures* between replicas (the
//! replica ↔ state map), never coordinates, so nothing moves on the device but
//! a [R] temperature vector and a velocity rescale. Decisions are made on the
//! host from one [R] copy of the potential energies per exchange interval.
//!
//! Layout: replica slot `r = l * K + k` belongs to ladder `l` and starts at
//! temperature index `k`; swaps happen only within a ladder.

use tch::Tensor;

use crate::config::ExchangeScheme;
use crate::error::{Error, Result};
use crate::integrate::Integrator;
use crate::rng::HostRng;
use crate::state::BatchState;
use crate::units::KB_EV_PER_K;

/// What one exchange did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExchangeOutcome {
    pub attempted: u64,
    pub accepted: u64,
}

/// The replica-exchange sampler: ladder, replica ↔ state map, statistics.
/// Serialisable whole, so a checkpoint restores it exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaExchange {
    /// Ladder in K, ascending (K states).
    pub temperatures: Vec<f64>,
    betas: Vec<f64>,
    pub n_ladders: usize,
    pub scheme: ExchangeScheme,
    /// Swap attempts per ladder and exchange (all-pairs).
    pub swap_attempts: usize,
    /// Temperature index of each replica slot [R].
    pub state_of: Vec<usize>,
    /// Replica slot at (ladder l, state k): `replica_at[l * K + k]`.
    replica_at: Vec<usize>,
    pub rng: HostRng,
    /// Exchanges performed.
    pub n_exchanges: u64,
    /// Attempted and accepted swaps between states a and b, [K*K], symmetric.
    pub attempts: Vec<u64>,
    pub accepts: Vec<u64>,
    /// Exchanges each replica spent at each state, [R*K].
    pub occupancy: Vec<u64>,
    /// Round-trip bookkeeping per replica.
    trip_start: Vec<Option<u64>>,
    reached_top: Vec<bool>,
    pub round_trips: Vec<u64>,
    round_trip_steps: Vec<u64>,
}

impl ReplicaExchange {
    /// `temperatures` ascending; R = K × n_ladders replicas.
    pub fn new(
        temperatures: Vec<f64>,
        n_ladders: usize,
        scheme: ExchangeScheme,
        swap_attempts: Option<usize>,
        seed: u64,
    ) -> Self {
        let k = temperatures.len();
        let r = k * n_ladders;
        let state_of: Vec<usize> = (0..r).map(|slot| slot % k).collect();
        let replica_at: Vec<usize> = (0..r).collect();
        let mut rex = ReplicaExchange {
            betas: temperatures
                .iter()
                .map(|t| 1.0 / (KB_EV_PER_K * t))
                .collect(),
            temperatures,
            n_ladders,
            scheme,
            swap_attempts: swap_attempts.unwrap_or(k * k * k),
            state_of,
            replica_at,
            rng: HostRng::new(seed ^ 0x5245_4d44_5f53_5741),
            n_exchanges: 0,
            attempts: vec![0; k * k],
            accepts: vec![0; k * k],
            occupancy: vec![0; r * k],
            trip_start: vec![None; r],
            reached_top: vec![false; r],
            round_trips: vec![0; r],
            round_trip_steps: vec![0; r],
        };
        rex.track_round_trips(0);
        rex
    }

    pub fn n_states(&self) -> usize {
        self.temperatures.len()
    }

    pub fn n_replicas(&self) -> usize {
        self.state_of.len()
    }

    /// Thermostat temperature of each replica slot [R], K.
    pub fn replica_temperatures(&self) -> Vec<f64> {
        self.state_of
            .iter()
            .map(|&s| self.temperatures[s])
            .collect()
    }

    /// Replica slot currently at state `k` of ladder `l`.
    pub fn replica_at(&self, ladder: usize, k: usize) -> usize {
        self.replica_at[ladder * self.n_states() + k]
    }

    /// Metropolis swap of states a and b in ladder l; true if accepted.
    fn attempt_pair(&mut self, ladder: usize, a: usize, b: usize, energies: &[f64]) -> bool {
        let k = self.n_states();
        let i = self.replica_at[ladder * k + a];
        let j = self.replica_at[ladder * k + b];
        let log_p = (self.betas[a] - self.betas[b]) * (energies[i] - energies[j]);
        // NaN energies never swap (the run's finiteness check reports them).
        let accept = log_p >= 0.0 || self.rng.uniform() < log_p.exp();
        let (lo, hi) = (a.min(b), a.max(b));
        self.attempts[lo * k + hi] += 1;
        if accept {
            self.accepts[lo * k + hi] += 1;
            self.replica_at.swap(ladder * k + a, ladder * k + b);
            self.state_of[i] = b;
            self.state_of[j] = a;
        }
        accept
    }

    /// Attempt swaps given each replica's potential energy (eV, [R]) at `step`.
    pub fn exchange(&mut self, energies: &[f64], step: u64) -> ExchangeOutcome {
        assert_eq!(energies.len(), self.n_replicas(), "one energy per replica");
        let k = self.n_states();
        let mut out = ExchangeOutcome::default();
        for ladder in 0..self.n_ladders {
            match self.scheme {
                ExchangeScheme::Neighbor => {
                    let start = (self.n_exchanges % 2) as usize;
                    for a in (start..k.saturating_sub(1)).step_by(2) {
                        out.attempted += 1;
                        out.accepted += self.attempt_pair(ladder, a, a + 1, energies) as u64;
                    }
                }
                ExchangeScheme::AllPairs => {
                    for _ in 0..self.swap_attempts {
                        let a = self.rng.below(k);
                        let mut b = self.rng.below(k - 1);
                        if b >= a {
                            b += 1;
                        }
                        out.attempted += 1;
                        out.accepted += self.attempt_pair(ladder, a, b, energies) as u64;
                    }
                }
            }
        }
        self.n_exchanges += 1;
        for (r, &s) in self.state_of.iter().enumerate() {
            self.occupancy[r * k + s] += 1;
        }
        self.track_round_trips(step);
        out
    }

    /// A round trip is T_min → T_max → T_min; its time runs from the first
    /// arrival at T_min to the next arrival there after visiting T_max.
    fn track_round_trips(&mut self, step: u64) {
        let top = self.n_states() - 1;
        for r in 0..self.n_replicas() {
            match self.state_of[r] {
                0 => match self.trip_start[r] {
                    Some(start) if self.reached_top[r] => {
                        self.round_trips[r] += 1;
                        self.round_trip_steps[r] += step - start;
                        self.trip_start[r] = Some(step);
                        self.reached_top[r] = false;
                    }
                    None => self.trip_start[r] = Some(step),
                    _ => {}
                },
                s if s == top && self.trip_start[r].is_some() => self.reached_top[r] = true,
                _ => {}
            }
        }
    }

    /// Push the replica temperatures to the integrator and rescale the
    /// velocities of replicas whose temperature changed by sqrt(T_new/T_old)
    /// (`old_temperatures` of every replica; `state` may hold a share of
    /// them: its member ids are replica slots).
    pub fn apply(
        &self,
        old_temperatures: &[f64],
        state: &mut BatchState,
        integrator: &mut dyn Integrator,
    ) -> Result<()> {
        let scale: Vec<f64> = self
            .replica_temperatures()
            .iter()
            .zip(old_temperatures)
            .map(|(n, o)| (n / o).sqrt())
            .collect();
        let scale = state.mine(&scale);
        let temps =
            Tensor::from_slice(&state.mine(&self.replica_temperatures())).to_device(state.device);
        if !integrator.set_temperatures(state, &temps) {
            return Err(Error::Invalid(format!(
                "replica exchange needs a thermostatted integrator, not {}",
                integrator.describe()
            )));
        }
        let per_atom = Tensor::from_slice(&scale)
            .to_device(state.device)
            .to_kind(state.kind)
            .index_select(0, &state.batch)
            .unsqueeze(1);
        state.velocities *= per_atom;
        Ok(())
    }

    /// Acceptance rate between states a and b (NaN if never attempted).
    pub fn acceptance(&self, a: usize, b: usize) -> f64 {
        let k = self.n_states();
        let (lo, hi) = (a.min(b), a.max(b));
        self.accepts[lo * k + hi] as f64 / self.attempts[lo * k + hi] as f64
    }

    /// Statistics for the log and the output files.
    pub fn summary(&self, timestep_fs: f64) -> ReplicaExchangeSummary {
        let k = self.n_states();
        let trips: u64 = self.round_trips.iter().sum();
        let trip_steps: u64 = self.round_trip_steps.iter().sum();
        ReplicaExchangeSummary {
            temperatures_k: self.temperatures.clone(),
            exchanges: self.n_exchanges,
            neighbor_acceptance: (0..k.saturating_sub(1))
                .map(|a| self.acceptance(a, a + 1))
                .collect(),
            round_trips_per_replica: self.round_trips.clone(),
            mean_round_trip_ps: (trips > 0)
                .then(|| trip_steps as f64 / trips as f64 * timestep_fs * 1e-3),
            occupancy_fraction: (0..self.n_replicas())
                .map(|r| {
                    let row = &self.occupancy[r * k..(r + 1) * k];
                    let total = row.iter().sum::<u64>().max(1) as f64;
                    row.iter().map(|&c| c as f64 / total).collect()
                })
                .collect(),
        }
    }
}

/// End-of-run replica-exchange statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaExchangeSummary {
    pub temperatures_k: Vec<f64>,
    pub exchanges: u64,
    /// Acceptance of swaps between neighbouring temperatures k, k+1.
    pub neighbor_acceptance: Vec<f64>,
    pub round_trips_per_replica: Vec<u64>,
    /// Mean time of a T_min → T_max → T_min round trip (None if none completed).
    pub mean_round_trip_ps: Option<f64>,
    /// Fraction of exchanges each replica spent at each temperature, [R][K].
    pub occupancy_fraction: Vec<Vec<f64>>,
}

impl ReplicaExchangeSummary {
    /// Human-readable lines for the end of a run.
    pub fn report(&self) -> String {
        let mut s = String::from("replica exchange: acceptance per neighbour pair\n");
        for (a, acc) in self.neighbor_acceptance.iter().enumerate() {
            s += &format!(
                "  {:8.2} K <-> {:8.2} K  {:6.1} %\n",
                self.temperatures_k[a],
                self.temperatures_k[a + 1],
                acc * 100.0
            );
        }
        let trips: u64 = self.round_trips_per_replica.iter().sum();
        s += &format!(
            "  round trips T_min -> T_max -> T_min: {trips} in total ({} per replica), mean round-trip time {}",
            self.round_trips_per_replica
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            self.mean_round_trip_ps
                .map_or("n/a (none completed)".to_string(), |t| format!("{t:.2} ps"))
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_scheme_alternates_pairs_and_counts() {
        let mut rex = ReplicaExchange::new(
            vec![300.0, 330.0, 360.0, 400.0],
            2,
            ExchangeScheme::Neighbor,
            None,
            1,
        );
        let zeros = vec![0.0; 8];
        let first = rex.exchange(&zeros, 100);
        // Even pairs (0,1), (2,3) in each of 2 ladders, all accepted at equal energy.
        assert_eq!(
            first,
            ExchangeOutcome {
                attempted: 4,
                accepted: 4
            }
        );
        assert_eq!(&rex.state_of[..4], &[1, 0, 3, 2]);
        let second = rex.exchange(&zeros, 200);
        // Odd pair (1,2) per ladder.
        assert_eq!(
            second,
            ExchangeOutcome {
                attempted: 2,
                accepted: 2
            }
        );
        assert_eq!(&rex.state_of[..4], &[2, 0, 3, 1]);
        // Ladders never mix: ladder 1 holds slots 4..8.
        for k in 0..4 {
            assert!(rex.replica_at(1, k) >= 4);
        }
    }

    #[test]
    fn metropolis_accepts_uphill_swaps_at_the_boltzmann_rate() {
        // The cold replica lower in energy by ΔE: a swap is accepted with
        // p = exp(−(β_cold − β_hot) ΔE), here chosen to be 0.3 (β from
        // k_B written out: 8.617333262e-5 eV/K).
        let (t_cold, t_hot) = (300.0, 600.0);
        let dbeta = (1.0 / t_cold - 1.0 / t_hot) / 8.617_333_262e-5;
        let p = 0.3f64;
        let de = -p.ln() / dbeta;
        let mut rex =
            ReplicaExchange::new(vec![t_cold, t_hot], 1, ExchangeScheme::Neighbor, None, 3);
        let exchanges = 8000;
        for n in 0..exchanges {
            let cold = rex.replica_at(0, 0);
            let mut e = vec![0.0; 2];
            e[cold] = -de;
            rex.exchange(&e, n);
        }
        // The neighbour scheme attempts the one pair on every other exchange.
        let attempts = rex.attempts[1] as f64;
        assert_eq!(attempts, (exchanges / 2) as f64);
        let rate = rex.accepts[1] as f64 / attempts;
        assert_eq!(rex.acceptance(0, 1), rate);
        let se = (p * (1.0 - p) / attempts).sqrt();
        assert!(
            (rate - p).abs() < 6.0 * se,
            "acceptance {rate}, expected {p} ± {se}"
        );
        // Far uphill (1 eV, p ≈ e^-19): never.
        let mut rex =
            ReplicaExchange::new(vec![t_cold, t_hot], 1, ExchangeScheme::Neighbor, None, 4);
        for n in 0..200 {
            let cold = rex.replica_at(0, 0);
            let mut e = vec![0.0; 2];
            e[cold] = -1.0;
            rex.exchange(&e, n);
        }
        assert_eq!(rex.accepts[1], 0);
        assert_eq!(rex.attempts[1], 100);
    }

    /// All-pairs draws one unordered pair of different states per attempt,
    /// each of the K(K−1)/2 pairs equally often, and the outcome counts
    /// every attempt and every acceptance.
    #[test]
    fn all_pairs_draws_distinct_states_uniformly_and_counts() {
        let k = 4;
        let draws = 6000;
        let mut rex = ReplicaExchange::new(
            vec![300.0, 330.0, 360.0, 400.0],
            1,
            ExchangeScheme::AllPairs,
            Some(draws),
            5,
        );
        // Equal energies: every attempt is accepted.
        let first = rex.exchange(&[0.0; 4], 10);
        assert_eq!(
            first,
            ExchangeOutcome {
                attempted: draws as u64,
                accepted: draws as u64
            }
        );
        for a in 0..k {
            assert_eq!(rex.attempts[a * k + a], 0, "state {a} with itself");
        }
        // Binomial counts with p = 1/6 per pair.
        let p = 1.0 / 6.0;
        let expected = draws as f64 * p;
        let se = (draws as f64 * p * (1.0 - p)).sqrt();
        for a in 0..k {
            for b in a + 1..k {
                let n = rex.attempts[a * k + b] as f64;
                assert!(
                    (n - expected).abs() < 6.0 * se,
                    "pair ({a}, {b}): {n} draws, expected {expected} ± {se}"
                );
            }
        }
        // Replica 0 far below the rest: only some swaps are accepted, and
        // the outcome counts exactly those.
        let accepted_before: u64 = rex.accepts.iter().sum();
        let mut e = vec![0.0; 4];
        e[0] = -0.05;
        let second = rex.exchange(&e, 20);
        let accepted: u64 = rex.accepts.iter().sum::<u64>() - accepted_before;
        assert_eq!(second.attempted, draws as u64);
        assert_eq!(second.accepted, accepted);
        assert!(0 < accepted && accepted < draws as u64, "{accepted}");
        // Acceptance per pair, either way round, from the counts.
        for a in 0..k {
            for b in a + 1..k {
                let rate = rex.accepts[a * k + b] as f64 / rex.attempts[a * k + b] as f64;
                assert!(rate < 1.0 && rate > 0.5, "pair ({a}, {b}): {rate}");
                assert_eq!(rex.acceptance(a, b), rate);
                assert_eq!(rex.acceptance(b, a), rate);
            }
        }
    }

    /// The summary's occupancy is the fraction of exchanges each replica
    /// ended at each state, as seen from outside after every exchange; no
    /// completed round trip means no mean round-trip time.
    #[test]
    fn occupancy_counts_each_exchange_and_no_trip_has_no_mean() {
        let (k, r) = (3, 6);
        let mut rex = ReplicaExchange::new(
            vec![300.0, 330.0, 360.0],
            2,
            ExchangeScheme::AllPairs,
            Some(2),
            8,
        );
        let mut seen = vec![0u64; r * k];
        let exchanges = 7;
        for n in 1..=exchanges {
            rex.exchange(&[0.0, -0.01, 0.02, 0.0, 0.01, 0.0], n * 10);
            for (replica, &state) in rex.state_of.iter().enumerate() {
                seen[replica * k + state] += 1;
            }
        }
        let s = rex.summary(1.0);
        for replica in 0..r {
            let expected: Vec<f64> = (0..k)
                .map(|state| seen[replica * k + state] as f64 / exchanges as f64)
                .collect();
            assert_eq!(s.occupancy_fraction[replica], expected, "replica {replica}");
        }
        let fresh = ReplicaExchange::new(vec![300.0, 400.0], 1, ExchangeScheme::Neighbor, None, 1);
        assert_eq!(fresh.summary(1.0).mean_round_trip_ps, None);
    }

    #[test]
    fn round_trips_are_counted() {
        let mut rex =
            ReplicaExchange::new(vec![300.0, 400.0], 1, ExchangeScheme::Neighbor, None, 1);
        // Equal energies: every attempted swap (every other exchange) is accepted.
        for step in 1..=8 {
            rex.exchange(&[0.0, 0.0], step * 10);
        }
        // Replica 0: at T_min from step 0, → T_max (10) → T_min (30) → T_max
        // (50) → T_min (70): round trips of 30 and 40 steps. Replica 1 first
        // reaches T_min at step 10, → T_max (30) → T_min (50): one of 40
        // steps; its second (from 50, T_max at 70) is not complete at 80.
        assert_eq!(rex.round_trips, vec![2, 1]);
        let s = rex.summary(0.5);
        let mean_steps = (30.0 + 40.0 + 40.0) / 3.0;
        let expected_ps = mean_steps * 0.5 * 1e-3;
        assert!(
            (s.mean_round_trip_ps.unwrap() - expected_ps).abs() < 1e-15,
            "{:?} vs {expected_ps}",
            s.mean_round_trip_ps
        );
        assert_eq!(s.round_trips_per_replica, vec![2, 1]);
        assert!((s.neighbor_acceptance[0] - 1.0).abs() < 1e-12);
    }
}
