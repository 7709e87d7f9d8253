//! MBAR (Shirts & Chodera 2008) over temperature states, and the
//! autocorrelation estimate that decides how many samples are independent.
//!
//! Written to give pymbar 4's numbers on the same data (python/check_report.py
//! holds it to 1e-6): `statistical_inefficiency` and `subsample` follow
//! pymbar.timeseries (fast = False, mintime = 3; non-conservative stride),
//! the free energies solve the same convex problem to 1e-12, and the
//! uncertainties use pymbar's default asymptotic covariance ("svd-ew").
//! Heat capacities, which pymbar does not give directly, come with bootstrap
//! errors over the independent samples.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::HostRng;

/// Statistical inefficiency g = 1 + 2τ of a time series, by summing its
/// normalised autocorrelation until it first drops to zero after `mintime` = 3
/// lags (pymbar.timeseries.statistical_inefficiency, fast = False). None when
/// the series has no variance.
pub fn statistical_inefficiency(a: &[f64]) -> Option<f64> {
    const MINTIME: usize = 3;
    let n = a.len();
    if n < 2 {
        return None;
    }
    let mean = a.iter().sum::<f64>() / n as f64;
    let d: Vec<f64> = a.iter().map(|x| x - mean).collect();
    let var = d.iter().map(|x| x * x).sum::<f64>() / n as f64;
    if var == 0.0 {
        return None;
    }
    let mut g = 1.0;
    let mut t = 1;
    while t < n - 1 {
        let c =
            2.0 * (0..n - t).map(|i| d[i] * d[i + t]).sum::<f64>() / (2.0 * (n - t) as f64 * var);
        if c <= 0.0 && t > MINTIME {
            break;
        }
        g += 2.0 * c * (1.0 - t as f64 / n as f64);
        t += 1;
    }
    Some(g.max(1.0))
}

/// Indices of roughly independent samples of a series of `len` samples with
/// statistical inefficiency `g`: round(n·g) for n = 0, 1, ... (ties to even,
/// as Python's round), as pymbar.timeseries.subsample_correlated_data.
pub fn subsample(len: usize, g: f64) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut n = 0usize;
    loop {
        let t = (n as f64 * g).round_ties_even() as usize;
        if t >= len {
            return out;
        }
        if out.last() != Some(&t) {
            out.push(t);
        }
        n += 1;
    }
}

/// Samples pooled from K thermodynamic states that differ only in
/// temperature: sample n has potential energy `energies[n]` (eV) and was
/// drawn at state `state[n]`.
#[derive(Debug, Clone)]
pub struct Samples {
    pub energies: Vec<f64>,
    /// Inverse temperatures 1/(kB T_k), 1/eV.
    pub betas: Vec<f64>,
    /// Samples drawn from each state.
    pub counts: Vec<usize>,
}

impl Samples {
    fn n(&self) -> usize {
        self.energies.len()
    }

    fn k(&self) -> usize {
        self.betas.len()
    }

    /// ln Σ_k N_k exp(f_k − β_k U_n) for every sample: the mixture
    /// denominator every MBAR quantity shares.
    fn log_denominators(&self, f: &[f64]) -> Vec<f64> {
        let log_n: Vec<f64> = self.counts.iter().map(|&c| (c as f64).ln()).collect();
        self.energies
            .par_iter()
            .map(|&u| {
                let terms = (0..self.k()).map(|k| log_n[k] + f[k] - self.betas[k] * u);
                log_sum_exp(terms)
            })
            .collect()
    }
}

fn log_sum_exp(terms: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.map(|t| (t - max).exp()).sum::<f64>().ln()
}

const MAX_ITERATIONS: usize = 1000;

/// Reduced free energies f_k = −ln Z_k (f_0 = 0) and their uncertainties.
#[derive(Debug, Clone)]
pub struct Mbar {
    pub f: Vec<f64>,
    /// Standard error of f_k − f_0 (asymptotic, pymbar's "svd-ew").
    pub df: Vec<f64>,
    samples: Samples,
    log_den: Vec<f64>,
}

impl Mbar {
    /// Solve the MBAR equations: self-consistent iterations to start, then
    /// Newton steps on the convex objective, to max |Δf| < 1e-12.
    pub fn solve(samples: Samples) -> Result<Mbar> {
        Self::solve_from(samples, None, true)
    }

    /// `errors`: whether to compute `df` (bootstrap resamples do not).
    fn solve_from(samples: Samples, start: Option<&[f64]>, errors: bool) -> Result<Mbar> {
        let k = samples.k();
        if samples.counts.len() != k || samples.counts.iter().sum::<usize>() != samples.n() {
            return Err(Error::Invalid(
                "MBAR: sample counts do not add up to the samples".into(),
            ));
        }
        if let Some(empty) = samples.counts.iter().position(|&c| c == 0) {
            return Err(Error::Invalid(format!(
                "MBAR: temperature index {empty} has no samples"
            )));
        }
        let mut f = start.map_or_else(|| vec![0.0; k], <[f64]>::to_vec);
        // Self-consistent iterations bring f near the solution (Newton from
        // far away, where the weights of whole states vanish, can diverge)...
        if start.is_none() {
            for _ in 0..200 {
                let log_den = samples.log_denominators(&f);
                let next = self_consistent(&samples, &log_den);
                let change = max_abs_difference(&next, &f);
                f = next;
                if change < 1e-6 {
                    break;
                }
            }
        }
        // ... then Newton steps on states 1..K (f_0 stays 0: the objective
        // is flat along a common shift), halved until the objective falls.
        let mut log_den = samples.log_denominators(&f);
        let mut value = objective(&samples, &f, &log_den);
        let mut previous = f64::INFINITY;
        for _ in 0..MAX_ITERATIONS {
            let (grad, hess) = gradient_hessian(&samples, &f, &log_den);
            let step = newton_step(&grad, &hess).unwrap_or_else(|| {
                let sc = self_consistent(&samples, &log_den);
                (0..k).map(|i| sc[i] - f[i]).collect()
            });
            // Near the solution the full step is right and the objective's
            // change is below its rounding: only long steps are checked.
            let length = step.iter().fold(0.0_f64, |m, s| m.max(s.abs()));
            let tries = if length > 0.1 { 40 } else { 1 };
            let mut scale = 1.0;
            let mut accepted = None;
            for attempt in 0..tries {
                let trial: Vec<f64> = f.iter().zip(&step).map(|(a, s)| a + scale * s).collect();
                let trial_den = samples.log_denominators(&trial);
                let trial_value = objective(&samples, &trial, &trial_den);
                if trial_value <= value || attempt + 1 == tries && tries == 1 {
                    accepted = Some((trial, trial_den, trial_value));
                    break;
                }
                scale *= 0.5;
            }
            // No descent left at all: f is at the minimum to rounding.
            let Some((trial, trial_den, trial_value)) = accepted else {
                break;
            };
            let change = max_abs_difference(&trial, &f);
            (f, log_den, value) = (trial, trial_den, trial_value);
            // Quadratic convergence ends in rounding noise: stop when the
            // step is negligible or no longer shrinks.
            if change < 1e-13 || (change < 1e-9 && change >= previous) {
                break;
            }
            previous = change;
        }
        // One pass over the samples serves the convergence check and the
        // uncertainties (WᵀW is the Hessian's outer-product sum).
        let (colsum, wtw) = weight_sums(&samples, &f, &log_den);
        let norm = gradient(&samples, &colsum)
            .iter()
            .map(|g| g * g)
            .sum::<f64>()
            .sqrt();
        if norm.is_nan() || norm >= 1e-6 * samples.n() as f64 {
            return Err(Error::Invalid(format!(
                "MBAR did not converge in {MAX_ITERATIONS} iterations (gradient {norm:e}; the temperatures' energy distributions may not overlap)"
            )));
        }
        let df = if errors {
            uncertainties(&samples, wtw)
        } else {
            Vec::new()
        };
        Ok(Mbar {
            f,
            df,
            samples,
            log_den,
        })
    }

    /// Normalised weights of every sample in the state with inverse
    /// temperature `beta` (sampled or not).
    fn weights_at(&self, beta: f64) -> Vec<f64> {
        let logw: Vec<f64> = self
            .samples
            .energies
            .iter()
            .zip(&self.log_den)
            .map(|(&u, &d)| -beta * u - d)
            .collect();
        let norm = log_sum_exp(logw.iter().copied());
        logw.iter().map(|l| (l - norm).exp()).collect()
    }

    /// ⟨U⟩ (eV) at inverse temperature `beta`.
    pub fn mean_energy(&self, beta: f64) -> f64 {
        let w = self.weights_at(beta);
        w.iter()
            .zip(&self.samples.energies)
            .map(|(w, u)| w * u)
            .sum()
    }

    /// Configurational heat capacity in units of kB, (⟨U²⟩ − ⟨U⟩²)·β², at
    /// inverse temperature `beta`.
    pub fn heat_capacity(&self, beta: f64) -> f64 {
        let w = self.weights_at(beta);
        let e = &self.samples.energies;
        let mean: f64 = w.iter().zip(e).map(|(w, u)| w * u).sum();
        let var: f64 = w.iter().zip(e).map(|(w, u)| w * (u - mean).powi(2)).sum();
        var * beta * beta
    }

    /// Standard errors of the heat capacity at each of `betas`, from
    /// `resamples` bootstrap resamples (within each state, with replacement)
    /// of the independent samples; seeded, so the report is reproducible.
    pub fn heat_capacity_errors(
        &self,
        betas: &[f64],
        resamples: usize,
        seed: u64,
    ) -> Result<Vec<f64>> {
        let offsets: Vec<usize> = self
            .samples
            .counts
            .iter()
            .scan(0, |acc, &c| {
                let start = *acc;
                *acc += c;
                Some(start)
            })
            .collect();
        let curves: Vec<Vec<f64>> = (0..resamples)
            .into_par_iter()
            .map(|b| {
                let mut rng = HostRng::new(seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut energies = Vec::with_capacity(self.samples.n());
                for (&start, &count) in offsets.iter().zip(&self.samples.counts) {
                    for _ in 0..count {
                        energies.push(self.samples.energies[start + rng.below(count)]);
                    }
                }
                let resampled = Samples {
                    energies,
                    betas: self.samples.betas.clone(),
                    counts: self.samples.counts.clone(),
                };
                let m = Mbar::solve_from(resampled, Some(&self.f), false)?;
                Ok(betas.iter().map(|&b| m.heat_capacity(b)).collect())
            })
            .collect::<Result<_>>()?;
        Ok((0..betas.len())
            .map(|i| {
                let xs: Vec<f64> = curves.iter().map(|c| c[i]).collect();
                let m = xs.iter().sum::<f64>() / xs.len() as f64;
                (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1).max(1) as f64)
                    .sqrt()
            })
            .collect())
    }
}

/// pymbar's objective Σ_n ln Σ_k N_k e^{f_k − u_kn} − Σ_k N_k f_k (convex;
/// its minimum is the MBAR solution).
fn objective(samples: &Samples, f: &[f64], log_den: &[f64]) -> f64 {
    log_den.iter().sum::<f64>()
        - samples
            .counts
            .iter()
            .zip(f)
            .map(|(&c, f)| c as f64 * f)
            .sum::<f64>()
}

fn max_abs_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// W_nk = exp(f_k − β_k U_n − ln den_n), the weight of sample n in state k.
fn weight(samples: &Samples, f: &[f64], log_den: &[f64], n: usize, k: usize) -> f64 {
    (f[k] - samples.betas[k] * samples.energies[n] - log_den[n]).exp()
}

/// Σ_n W_nk (per state) and Σ_n W_nk W_nl (= WᵀW) in one pass.
fn weight_sums(samples: &Samples, f: &[f64], log_den: &[f64]) -> (Vec<f64>, DMatrix<f64>) {
    let k = samples.k();
    (0..samples.n())
        .into_par_iter()
        .fold(
            || (vec![0.0; k], DMatrix::<f64>::zeros(k, k)),
            |(mut cs, mut ww), n| {
                let w: Vec<f64> = (0..k).map(|j| weight(samples, f, log_den, n, j)).collect();
                for a in 0..k {
                    cs[a] += w[a];
                    for b in 0..k {
                        ww[(a, b)] += w[a] * w[b];
                    }
                }
                (cs, ww)
            },
        )
        .reduce(
            || (vec![0.0; k], DMatrix::<f64>::zeros(k, k)),
            |(a1, m1), (a2, m2)| (a1.iter().zip(&a2).map(|(x, y)| x + y).collect(), m1 + m2),
        )
}

/// Gradient of pymbar's objective Σ_n ln Σ_k N_k e^{f_k − u_kn} − Σ_k N_k f_k:
/// g_k = N_k (Σ_n W_nk − 1).
fn gradient(samples: &Samples, colsum: &[f64]) -> Vec<f64> {
    samples
        .counts
        .iter()
        .zip(colsum)
        .map(|(&c, s)| c as f64 * (s - 1.0))
        .collect()
}

/// Gradient and Hessian of that objective:
/// H_kl = δ_kl N_k Σ_n W_nk − N_k N_l Σ_n W_nk W_nl.
fn gradient_hessian(samples: &Samples, f: &[f64], log_den: &[f64]) -> (Vec<f64>, DMatrix<f64>) {
    let k = samples.k();
    let (colsum, outer) = weight_sums(samples, f, log_den);
    let n_k: Vec<f64> = samples.counts.iter().map(|&c| c as f64).collect();
    let hess = DMatrix::from_fn(k, k, |a, b| {
        let diag = if a == b { n_k[a] * colsum[a] } else { 0.0 };
        diag - n_k[a] * n_k[b] * outer[(a, b)]
    });
    (gradient(samples, &colsum), hess)
}

/// Newton step for states 1..K (state 0 fixed); None if singular.
fn newton_step(grad: &[f64], hess: &DMatrix<f64>) -> Option<Vec<f64>> {
    let k = grad.len();
    let h = hess.view((1, 1), (k - 1, k - 1)).into_owned();
    let g = DVector::from_iterator(k - 1, grad[1..].iter().copied());
    let step = h.cholesky()?.solve(&g);
    Some(
        std::iter::once(0.0)
            .chain(step.iter().map(|s| -s))
            .collect(),
    )
}

/// One self-consistent update: f_k = −ln Σ_n exp(−β_k U_n − ln den_n).
fn self_consistent(samples: &Samples, log_den: &[f64]) -> Vec<f64> {
    let f: Vec<f64> = (0..samples.k())
        .map(|k| {
            -log_sum_exp(
                samples
                    .energies
                    .iter()
                    .zip(log_den)
                    .map(|(&u, &d)| -samples.betas[k] * u - d),
            )
        })
        .collect();
    f.iter().map(|x| x - f[0]).collect()
}

/// Uncertainties of f_k − f_0 from the asymptotic covariance
/// Θ = V Σ (I − Σ Vᵀ N V Σ)⁺ Σ Vᵀ, with WᵀW = V Σ² Vᵀ (pymbar "svd-ew";
/// pseudo-inverse cut at 1e-10 of the largest singular value, as numpy's
/// pinv with rcond = 1e-10: for this symmetric matrix, its eigenvalues'
/// magnitudes).
fn uncertainties(samples: &Samples, wtw: DMatrix<f64>) -> Vec<f64> {
    let k = samples.k();
    let eig = wtw.symmetric_eigen();
    let v = eig.eigenvectors;
    let sigma = DMatrix::from_diagonal(&eig.eigenvalues.map(|s| s.max(0.0).sqrt()));
    let n_diag = DMatrix::from_diagonal(&DVector::from_iterator(
        k,
        samples.counts.iter().map(|&c| c as f64),
    ));
    let inner = DMatrix::<f64>::identity(k, k) - &sigma * v.transpose() * n_diag * &v * &sigma;
    // `inner` is symmetric: its pseudo-inverse from its eigen-decomposition
    // (nalgebra's SVD of this nearly singular matrix loses ~1e-4 of the
    // result; the symmetric solver does not).
    let inner_eig = inner.symmetric_eigen();
    let cutoff = 1e-10 * inner_eig.eigenvalues.amax();
    let inverted = inner_eig
        .eigenvalues
        .map(|l| if l.abs() > cutoff { 1.0 / l } else { 0.0 });
    let pinv = &inner_eig.eigenvectors
        * DMatrix::from_diagonal(&inverted)
        * inner_eig.eigenvectors.transpose();
    let theta = &v * &sigma * pinv * &sigma * v.transpose();
    (0..k)
        .map(|i| {
            (theta[(i, i)] + theta[(0, 0)] - 2.0 * theta[(i, 0)])
                .max(0.0)
                .sqrt()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_noise_has_inefficiency_near_one_and_a_slow_series_more() {
        let mut rng = HostRng::new(7);
        let noise: Vec<f64> = (0..4000).map(|_| rng.uniform()).collect();
        let g = statistical_inefficiency(&noise).unwrap();
        assert!((1.0..1.2).contains(&g), "{g}");
        // AR(1) with φ = 0.9: g = (1 + φ)/(1 − φ) = 19.
        let mut x = 0.0;
        let ar: Vec<f64> = (0..200_000)
            .map(|_| {
                x = 0.9 * x + rng.uniform() - 0.5;
                x
            })
            .collect();
        let g = statistical_inefficiency(&ar).unwrap();
        assert!((g - 19.0).abs() < 1.5, "{g}");
        assert_eq!(statistical_inefficiency(&[1.0; 10]), None);
    }

    #[test]
    fn subsampling_rounds_ties_to_even_as_python() {
        assert_eq!(subsample(10, 1.5), vec![0, 2, 3, 4, 6, 8, 9]);
        assert_eq!(subsample(5, 1.0), vec![0, 1, 2, 3, 4]);
    }

    /// Two states of one exponential density: p_k(U) ∝ e^{−β_k U} on U ≥ 0 has
    /// Z_k = 1/β_k, so f_1 − f_0 = ln(β_1/β_0) exactly, whatever the samples
    /// (given overlap): MBAR must find it to sampling error.
    #[test]
    fn exponential_states_give_the_analytic_free_energy() {
        let betas = vec![1.0, 2.0, 3.0];
        let mut rng = HostRng::new(11);
        let mut energies = Vec::new();
        for &b in &betas {
            for _ in 0..20_000 {
                energies.push(-(1.0 - rng.uniform()).ln() / b);
            }
        }
        let m = Mbar::solve(Samples {
            energies,
            betas: betas.clone(),
            counts: vec![20_000; 3],
        })
        .unwrap();
        for k in 1..3 {
            let exact = (betas[k] / betas[0]).ln();
            assert!(m.df[k] > 0.0 && m.df[k] < 0.02, "{:?}", m.df);
            assert!(
                (m.f[k] - exact).abs() < 6.0 * m.df[k],
                "{} vs {exact} ± {}",
                m.f[k],
                m.df[k]
            );
            // ⟨U⟩ = 1/β and Var(U) β² = 1 at every temperature, sampled or not.
            assert!((m.mean_energy(betas[k]) * betas[k] - 1.0).abs() < 0.03);
        }
        assert!((m.heat_capacity(1.5) - 1.0).abs() < 0.05);
        let errors = m.heat_capacity_errors(&[1.5], 20, 1).unwrap();
        assert!(errors[0] > 0.0 && errors[0] < 0.05, "{errors:?}");
    }
}
