//! Replica-exchange analysis from the exchange records alone: acceptance per
//! neighbour pair, round trips, the samples MBAR takes, and a ladder that
//! would even out the acceptance. Recomputed from the per-exchange rows, so
//! it works on a running run (whose end-of-run matrices do not exist yet);
//! on a finished run it must agree with the run's own summary (tested).

use serde::Serialize;

use super::data::ExchangeRecords;
use super::mbar::{statistical_inefficiency, subsample, Samples};
use crate::units::kt;

/// Acceptance of swaps between temperatures a and a + 1, for each a.
#[derive(Debug, Clone, Serialize)]
pub struct Acceptance {
    /// None where no swap was attempted.
    pub rate: Vec<Option<f64>>,
    pub attempts: Vec<u64>,
    /// "final matrices" (written at the end of the run) or "exchange records".
    pub source: &'static str,
}

/// Neighbour acceptance: from the end-of-run matrices when the run wrote
/// them, otherwise (a running run) counted from the records, which the
/// neighbour scheme allows (exchange e tries pairs (a, a + 1) with a ≡ e mod
/// 2, once per ladder). None for the all-pairs scheme of a running run.
pub fn acceptance(rec: &ExchangeRecords) -> Option<Acceptance> {
    let k = rec.n_states();
    if let Some((attempts, accepts)) = &rec.matrices {
        if attempts.nrows() == k && attempts.ncols() == k {
            let att: Vec<u64> = (0..k - 1).map(|a| attempts[(a, a + 1)] as u64).collect();
            return Some(Acceptance {
                rate: (0..k - 1)
                    .map(|a| (att[a] > 0).then(|| accepts[(a, a + 1)] as f64 / att[a] as f64))
                    .collect(),
                attempts: att,
                source: "final matrices",
            });
        }
    }
    if rec.scheme != "Neighbor" {
        return None;
    }
    let ladders = rec.n_ladders() as u64;
    let mut att = vec![0u64; k - 1];
    let mut acc = vec![0u64; k - 1];
    for e in 0..rec.n_exchanges() {
        for (a, n) in att.iter_mut().enumerate() {
            if a % 2 == e % 2 {
                *n += ladders;
            }
        }
        for r in 0..rec.n_replicas() {
            let (before, after) = (
                rec.state_before(e, r),
                rec.state_of_replica[(e, r)] as usize,
            );
            if after == before + 1 {
                acc[before] += 1;
            }
        }
    }
    Some(Acceptance {
        rate: (0..k - 1)
            .map(|a| (att[a] > 0).then(|| acc[a] as f64 / att[a] as f64))
            .collect(),
        attempts: att,
        source: "exchange records",
    })
}

/// Round trips T_min → T_max → T_min per replica and the length of every
/// trip in steps, counted as the engine counts them (a trip runs from an
/// arrival at T_min to the next arrival there after visiting T_max).
pub fn round_trips(rec: &ExchangeRecords) -> (Vec<u64>, Vec<u64>) {
    let (r_count, top) = (rec.n_replicas(), rec.n_states() - 1);
    let mut trips = vec![0u64; r_count];
    let mut lengths = Vec::new();
    let mut start: Vec<Option<u64>> = vec![None; r_count];
    let mut reached_top = vec![false; r_count];
    let mut visit = |r: usize, state: usize, step: u64, trips: &mut Vec<u64>| match state {
        0 => match start[r] {
            Some(s) if reached_top[r] => {
                trips[r] += 1;
                lengths.push(step - s);
                start[r] = Some(step);
                reached_top[r] = false;
            }
            None => start[r] = Some(step),
            _ => {}
        },
        s if s == top && start[r].is_some() => reached_top[r] = true,
        _ => {}
    };
    for r in 0..r_count {
        visit(r, rec.state_before(0, r), 0, &mut trips);
    }
    for e in 0..rec.n_exchanges() {
        for r in 0..r_count {
            visit(
                r,
                rec.state_of_replica[(e, r)] as usize,
                rec.steps[e],
                &mut trips,
            );
        }
    }
    (trips, lengths)
}

/// The MBAR input of a replica-exchange run and how it was thinned.
#[derive(Debug, Clone)]
pub struct RemdSamples {
    /// Independent samples pooled by state, ladders in order within a state.
    pub samples: Samples,
    /// Statistical inefficiency of each (ladder, state) series, index
    /// ladder · K + state (1 where a series has no variance).
    pub inefficiency: Vec<f64>,
    /// Every production energy per state (eV), before thinning: histograms.
    pub energies_by_state: Vec<Vec<f64>>,
}

/// Production samples (exchange rows at or after `production_start`): row e
/// gives each replica's energy in the state it held before exchange e. For
/// each ladder and state the series over rows is thinned by its own
/// statistical inefficiency (python/check_report.py rebuilds exactly this).
pub fn samples(rec: &ExchangeRecords, production_start: u64) -> RemdSamples {
    let (k, ladders) = (rec.n_states(), rec.n_ladders());
    let rows: Vec<usize> = (0..rec.n_exchanges())
        .filter(|&e| rec.steps[e] >= production_start)
        .collect();
    // series[l * k + s]: energies of whichever replica of ladder l held s.
    let mut series = vec![Vec::with_capacity(rows.len()); ladders * k];
    for &e in &rows {
        for r in 0..rec.n_replicas() {
            let s = rec.state_before(e, r);
            series[(r / k) * k + s].push(rec.potential_energy[(e, r)]);
        }
    }
    let inefficiency: Vec<f64> = series
        .iter()
        .map(|x| statistical_inefficiency(x).unwrap_or(1.0))
        .collect();
    let mut energies = Vec::new();
    let mut counts = vec![0usize; k];
    let mut energies_by_state = vec![Vec::new(); k];
    for s in 0..k {
        for l in 0..ladders {
            let x = &series[l * k + s];
            for i in subsample(x.len(), inefficiency[l * k + s]) {
                energies.push(x[i]);
                counts[s] += 1;
            }
            energies_by_state[s].extend_from_slice(x);
        }
    }
    RemdSamples {
        samples: Samples {
            energies,
            betas: rec.temperatures.iter().map(|&t| 1.0 / kt(t)).collect(),
            counts,
        },
        inefficiency,
        energies_by_state,
    }
}

/// A ladder with the same ends and rungs that would even out neighbour
/// acceptance: acceptance between β_a and β_b falls with the overlap
/// measure ∫ σ_U dβ (σ_U the potential-energy spread), so the rungs are put
/// at equal steps of it, with σ_U linear in β between the measured rungs.
/// For harmonic wells (σ_U ∝ T) this is the geometric ladder.
pub fn suggested_ladder(temperatures: &[f64], sigma: &[f64]) -> Vec<f64> {
    let k = temperatures.len();
    let betas: Vec<f64> = temperatures.iter().map(|t| 1.0 / t).collect();
    // Cumulative overlap at each rung, from the coldest (largest β).
    let mut cumulative = vec![0.0; k];
    for i in 1..k {
        cumulative[i] =
            cumulative[i - 1] + 0.5 * (sigma[i - 1] + sigma[i]) * (betas[i - 1] - betas[i]);
    }
    let total = cumulative[k - 1];
    if total.is_nan() || total <= 0.0 {
        return temperatures.to_vec();
    }
    let mut out = vec![temperatures[0]];
    for j in 1..k - 1 {
        let target = total * j as f64 / (k - 1) as f64;
        let seg = (1..k).find(|&i| cumulative[i] >= target).unwrap_or(k - 1);
        let (b0, h) = (betas[seg - 1], betas[seg - 1] - betas[seg]);
        let (s0, s1) = (sigma[seg - 1], sigma[seg]);
        // ∫ over x ∈ [0, h] of s0 + (s1 − s0) x / h: solve for x by bisection.
        let want = target - cumulative[seg - 1];
        let (mut lo, mut hi) = (0.0, h);
        for _ in 0..200 {
            let x = 0.5 * (lo + hi);
            if s0 * x + (s1 - s0) * x * x / (2.0 * h) < want {
                lo = x;
            } else {
                hi = x;
            }
        }
        out.push(1.0 / (b0 - 0.5 * (lo + hi)));
    }
    out.push(temperatures[k - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_proportional_to_temperature_gives_the_geometric_ladder() {
        let t: Vec<f64> = vec![300.0, 320.0, 390.0, 450.0, 600.0];
        let sigma: Vec<f64> = t.iter().map(|t| 0.01 * t).collect();
        let out = suggested_ladder(&t, &sigma);
        for (i, x) in out.iter().enumerate() {
            let geometric = 300.0 * 2f64.powf(i as f64 / 4.0);
            // σ is interpolated linearly in β, not as 1/β: within 1 %.
            assert!((x / geometric - 1.0).abs() < 0.01, "{out:?}");
        }
    }

    #[test]
    fn constant_spread_gives_equal_steps_in_beta() {
        let t = vec![300.0, 310.0, 500.0, 600.0];
        let out = suggested_ladder(&t, &[1.0; 4]);
        let b: Vec<f64> = out.iter().map(|t| 1.0 / t).collect();
        let step = (b[0] - b[3]) / 3.0;
        for i in 0..3 {
            assert!(((b[i] - b[i + 1]) - step).abs() < 1e-12, "{out:?}");
        }
    }
}
