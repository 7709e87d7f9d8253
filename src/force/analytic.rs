//! Analytic force providers written with tch ops: exact references for tests
//! and cheap examples. All members must be the same molecule (the state's
//! layout), so per-member work is a reshape to [R, N, 3]. Lennard-Jones with
//! a cutoff (periodic or not) goes through the engine's neighbour list
//! instead: [`super::pairs::LennardJonesPairs`].

use tch::{Kind, Tensor};

use super::{autograd_forces, ForceOutput, ForceProvider};
use crate::error::Result;
use crate::state::BatchState;

/// Every atom bound to its reference position by a spring:
/// E = ½ k Σ |x − x₀|². Forces are analytic: F = −k (x − x₀).
pub struct Harmonic {
    /// Spring constant in eV/Å².
    pub k: f64,
    /// Reference positions [R*N, 3].
    pub reference: Tensor,
}

impl Harmonic {
    /// Springs to the state's current positions.
    pub fn at_current_positions(state: &BatchState, k: f64) -> Self {
        Harmonic {
            k,
            reference: state.positions.detach().copy(),
        }
    }
}

impl ForceProvider for Harmonic {
    fn describe(&self) -> String {
        format!("harmonic wells, k = {} eV/Å²", self.k)
    }

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        let d = &state.positions - &self.reference;
        let energies = state.per_member_sum(&d.square()) * (0.5 * self.k);
        Ok(ForceOutput {
            energies,
            forces: d * (-self.k),
        })
    }
}

/// Lennard-Jones between all atom pairs of each member:
/// E = Σ_{i<j} 4ε[(σ/r)¹² − (σ/r)⁶]. Forces by autograd.
pub struct LennardJones {
    pub epsilon: f64,
    pub sigma: f64,
}

impl ForceProvider for LennardJones {
    fn describe(&self) -> String {
        format!(
            "Lennard-Jones, ε = {} eV, σ = {} Å",
            self.epsilon, self.sigma
        )
    }

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        let (r, n) = (state.n_members as i64, state.n_atoms as i64);
        let (e, forces) = autograd_forces(&state.positions, |x| {
            let x = x.view([r, n, 3]);
            let d = x.unsqueeze(2) - x.unsqueeze(1);
            let r2 = d.square().sum_dim_intlist(-1, false, x.kind());
            let upper = Tensor::ones([n, n], (Kind::Bool, x.device())).triu(1);
            // Masked (i >= j) pairs get r² = 1 so nothing divides by zero.
            let safe = r2.where_self(&upper, &r2.ones_like());
            let s6 = (safe.reciprocal() * (self.sigma * self.sigma)).pow_tensor_scalar(3);
            let pair = (s6.square() - &s6) * (4.0 * self.epsilon);
            let pair = pair.where_self(&upper, &pair.zeros_like());
            Ok(pair.sum_dim_intlist([1, 2].as_slice(), false, Kind::Double))
        })?;
        Ok(ForceOutput {
            energies: e,
            forces,
        })
    }
}
