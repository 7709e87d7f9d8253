//! Analytic force providers written with tch ops: exact references for tests
//! and cheap examples. All members must be the same molecule (the state's
//! layout), so per-member work is a reshape to [R, N, 3]. The periodic
//! Lennard-Jones one works on the pairs of a device neighbour list.

use tch::{Kind, Tensor};

use super::{autograd_forces, ForceOutput, ForceProvider};
use crate::error::Result;
use crate::neighbors::{with_padding_row, Boundary, NeighborList};
use crate::state::BatchState;
use crate::system::cell::Cell;

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

/// Lennard-Jones in periodic cells, truncated at `cutoff` (no shift, no
/// switching, no long-range correction: OpenMM's NonbondedForce with
/// CutoffPeriodic), over the pairs of a device [`NeighborList`] rebuilt at
/// every evaluation. Each member has its own cell ([R, 3, 3], rows a, b, c).
///
/// Until the engine checks neighbour-list overflows at its observables
/// intervals, this provider checks after every rebuild (one host copy)
/// and reallocates with more room, so it never drops a pair; it is
/// therefore not capturable in a CUDA graph yet.
pub struct PeriodicLennardJones {
    pub epsilon: f64,
    pub sigma: f64,
    pub cutoff: f64,
    pub cells: Tensor,
    list: std::cell::RefCell<Option<NeighborList>>,
}

impl PeriodicLennardJones {
    /// Refuses cells narrower than twice the cutoff along any direction.
    pub fn new(epsilon: f64, sigma: f64, cutoff: f64, cells: Tensor) -> Result<Self> {
        for cell in Cell::all_from_tensor(&cells)? {
            cell.check_cutoff(cutoff)?;
        }
        Ok(PeriodicLennardJones {
            epsilon,
            sigma,
            cutoff,
            cells: cells.to_kind(Kind::Double),
            list: std::cell::RefCell::new(None),
        })
    }

    /// Neighbours of `state`'s atoms, built or rebuilt with room enough.
    fn neighbors(&self, state: &BatchState) -> Result<(Tensor, Tensor, Tensor)> {
        let boundary = Boundary::Periodic(&self.cells);
        let mut slot = self.list.borrow_mut();
        if let Some(list) = slot.as_mut() {
            list.update(&state.positions, &state.batch, &boundary);
            if list.overflowed() {
                *slot = None;
            }
        }
        if slot.is_none() {
            *slot = Some(NeighborList::allocate(
                &state.positions,
                &state.batch,
                state.n_members,
                &boundary,
                self.cutoff,
            )?);
        }
        let list = slot.as_ref().expect("allocated above");
        Ok((
            list.neighbors.shallow_clone(),
            list.shifts.shallow_clone(),
            list.mask.shallow_clone(),
        ))
    }
}

impl ForceProvider for PeriodicLennardJones {
    fn describe(&self) -> String {
        format!(
            "periodic Lennard-Jones, ε = {} eV, σ = {} Å, cutoff {} Å",
            self.epsilon, self.sigma, self.cutoff
        )
    }

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        let (neighbors, shifts, mask) = self.neighbors(state)?;
        let n = state.positions.size()[0];
        let k = neighbors.size()[1];
        let (e, forces) = autograd_forces(&state.positions, |x| {
            let x = x.to_kind(Kind::Double);
            let padded = with_padding_row(&x);
            let xj = padded
                .index_select(0, &neighbors.view([-1]))
                .view([n, k, 3]);
            let d = xj + &shifts - x.unsqueeze(1);
            let r2 = d.square().sum_dim_intlist(-1, false, Kind::Double);
            // Unused entries get r² = 1 so nothing divides by zero.
            let safe = r2.where_self(&mask, &r2.ones_like());
            let s6 = (safe.reciprocal() * (self.sigma * self.sigma)).pow_tensor_scalar(3);
            let pair = ((s6.square() - &s6) * (4.0 * self.epsilon))
                .where_self(&mask, &Tensor::zeros([1], (Kind::Double, x.device())));
            // Each pair is listed for both atoms: half of it to each.
            let per_atom = pair.sum_dim_intlist(1, false, Kind::Double) * 0.5;
            Ok(state.per_member_sum(&per_atom))
        })?;
        Ok(ForceOutput {
            energies: e,
            forces: forces.to_kind(state.kind),
        })
    }
}
