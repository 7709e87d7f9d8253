//! Models that take the engine's pairs (model contract v2, see
//! models/README.md): the engine owns the neighbour list, the model owns
//! the physics. [`PairForces`] builds the list on the device at every force
//! call (inside the captured step: no host sync, fixed shapes), hands the
//! model the pair vectors x_j − x_i + shift, takes one backward pass for
//! dE/d(vectors) and assembles the forces from the list's reverse entries
//! in a fixed order, so they are bitwise reproducible on a GPU.
//!
//! Capacities are checked where values are pulled to the host anyway
//! ([`ForceProvider::overflow`]); after an overflow the engine goes back to
//! its last check, [`ForceProvider::grow`]s the list and runs those steps
//! again, so no step ever uses a list that dropped a pair.

use std::cell::RefCell;

use tch::{Kind, Tensor};

use super::{autograd_forces, ForceOutput, ForceProvider};
use crate::error::{Error, Result};
use crate::neighbors::{ListShape, NeighborList, Pairs};
use crate::state::{BatchState, Layout};

/// What a pair model sees of one batch.
pub struct PairInputs<'a> {
    pub atomic_numbers: &'a Tensor,
    /// [N] int64: structure (member) of each atom.
    pub batch: &'a Tensor,
    pub layout: &'a Layout,
    pub pairs: &'a Pairs,
    /// [N, K, 3] pair vectors in the model's dtype (Å).
    pub vectors: &'a Tensor,
}

/// A model of contract v2: energies from pair vectors.
pub trait PairModel {
    /// One line for logs and metadata.
    fn describe(&self) -> String;

    /// Å, descending: the interaction range, then inner ranges the model
    /// wants slot lists for.
    fn cutoffs(&self) -> Vec<f64>;

    /// Precision of the pair vectors it takes.
    fn dtype(&self) -> Kind;

    /// Energies [S] (eV), differentiable with respect to `inputs.vectors`,
    /// which alone carry the geometry.
    fn energies(&self, inputs: &PairInputs) -> Result<Tensor>;

    /// Switch to a static-shape evaluation of `state`'s batch composition
    /// (see [`ForceProvider::prepare_static`]); Err says why not.
    fn prepare(&self, _state: &BatchState) -> std::result::Result<(), String> {
        Ok(())
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        None
    }
}

/// Forces of a [`PairModel`] over the engine's neighbour list.
pub struct PairForces {
    model: Box<dyn PairModel>,
    list: RefCell<NeighborList>,
    /// The test switch [`ROOM_ENV`], until it is applied (at the first
    /// preparation of a fresh list; never to a list from a checkpoint).
    test_room: std::cell::Cell<Option<i64>>,
    /// Warm-up calls still owed after `prepare_static` (made before the
    /// next evaluation, so a `validate` that never steps skips them).
    warmups_due: std::cell::Cell<usize>,
}

/// Test-only environment switch: the neighbour list's row capacity from
/// the first step of a fresh run on (e.g. too small, so the run must find
/// the overflow at its first check, go back and grow the list).
pub const ROOM_ENV: &str = "MLFF_MD_TEST_NEIGHBOR_ROOM";

/// Calls of the model after `prepare` before results settle (TorchScript's
/// profiling executor optimises a method from its second call on); spent
/// before the first evaluation after a preparation, so every step, in a
/// fresh or a resumed process, sees the same numerics.
const PROFILING_CALLS: usize = 2;

impl PairForces {
    /// A list sized for `state`'s positions and the model's cutoffs.
    pub fn new(model: Box<dyn PairModel>, state: &BatchState) -> Result<PairForces> {
        let list = NeighborList::allocate(
            &state.positions,
            &state.batch,
            state.n_members,
            state.layout.uniform_atoms(),
            &state.boundary(),
            &model.cutoffs(),
        )?;
        Ok(PairForces {
            model,
            list: RefCell::new(list),
            test_room: std::cell::Cell::new(
                std::env::var(ROOM_ENV).ok().and_then(|v| v.parse().ok()),
            ),
            warmups_due: std::cell::Cell::new(0),
        })
    }

    /// One build of the neighbour list for `state` (what every force call
    /// does first; exposed for benchmarks).
    pub fn build_list(&self, state: &BatchState) -> Pairs {
        self.list
            .borrow()
            .update(&state.positions, &state.batch, &state.boundary())
    }

    /// The list and the evaluation; `prepare_static`'s warm-up calls too.
    fn evaluate(&self, state: &BatchState) -> Result<ForceOutput> {
        let pairs = self.build_list(state);
        let vectors = pairs
            .vectors(&state.positions.to_kind(Kind::Double))
            .to_kind(self.model.dtype());
        let (energies, minus_grad) = autograd_forces(&vectors, |v| {
            self.model.energies(&PairInputs {
                atomic_numbers: &state.atomic_numbers,
                batch: &state.batch,
                layout: &state.layout,
                pairs: &pairs,
                vectors: v,
            })
        })?;
        let forces = pairs.forces(&minus_grad.to_kind(Kind::Double));
        Ok(ForceOutput {
            energies: energies.to_kind(Kind::Double),
            forces: forces.to_kind(state.kind),
        })
    }
}

impl ForceProvider for PairForces {
    fn describe(&self) -> String {
        self.model.describe()
    }

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        while self.warmups_due.get() > 0 {
            self.warmups_due.set(self.warmups_due.get() - 1);
            drop(self.evaluate(state)?);
        }
        self.evaluate(state)
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        self.model.supported_elements()
    }

    fn prepare_static(&self, state: &BatchState) -> std::result::Result<(), String> {
        if let Some(room) = self.test_room.take() {
            self.list.borrow_mut().shape.capacity = room;
        }
        self.model.prepare(state)?;
        self.warmups_due.set(PROFILING_CALLS);
        Ok(())
    }

    fn overflow(&self) -> Option<String> {
        self.list.borrow().overflow()
    }

    fn grow(&self, state: &BatchState) -> Result<()> {
        self.list.borrow_mut().grow(
            &state.positions,
            &state.batch,
            state.n_members,
            state.layout.uniform_atoms(),
            &state.boundary(),
        )
    }

    fn list_shape(&self) -> Option<ListShape> {
        Some(self.list.borrow().shape.clone())
    }

    fn set_list_shape(&self, shape: ListShape, state: &BatchState) -> Result<()> {
        if shape.cutoffs != self.model.cutoffs() {
            return Err(Error::Invalid(format!(
                "the checkpoint's neighbour list has cutoffs {:?} Å, the model {:?} Å",
                shape.cutoffs,
                self.model.cutoffs()
            )));
        }
        *self.list.borrow_mut() = NeighborList::with_shape(
            shape,
            state.layout.n_rows(),
            state.n_members,
            &state.boundary(),
            state.device,
        );
        self.test_room.set(None);
        Ok(())
    }
}

/// Lennard-Jones over the engine's pairs, truncated at `cutoff` (OpenMM's
/// NonbondedForce with CutoffPeriodic / CutoffNonPeriodic, no switching, no
/// long-range correction), or with `shifted` the shifted-force form
/// V(r) − V(rc) − (r − rc) V'(rc), whose energy and force both reach zero at
/// the cutoff, so velocity Verlet conserves energy to O(dt²) (plain
/// truncation jumps in energy, an energy shift alone in force). float64
/// throughout. Free or periodic members alike.
pub struct LennardJonesPairs {
    pub epsilon: f64,
    pub sigma: f64,
    pub cutoff: f64,
    pub shifted: bool,
}

impl LennardJonesPairs {
    fn pair_energy(&self, r2: &Tensor) -> Tensor {
        let s6 = (r2.reciprocal() * (self.sigma * self.sigma)).pow_tensor_scalar(3);
        let e = (s6.square() - &s6) * (4.0 * self.epsilon);
        if !self.shifted {
            return e;
        }
        let (rc, eps) = (self.cutoff, self.epsilon);
        let sc6 = (self.sigma / rc).powi(6);
        let v_rc = 4.0 * eps * (sc6 * sc6 - sc6);
        let dv_rc = 4.0 * eps * (-12.0 * sc6 * sc6 + 6.0 * sc6) / rc;
        e - v_rc - (r2.sqrt() - rc) * dv_rc
    }
}

impl PairModel for LennardJonesPairs {
    fn describe(&self) -> String {
        format!(
            "Lennard-Jones, ε = {} eV, σ = {} Å, cutoff {} Å{} (engine neighbour list)",
            self.epsilon,
            self.sigma,
            self.cutoff,
            if self.shifted { ", shifted" } else { "" }
        )
    }

    fn cutoffs(&self) -> Vec<f64> {
        vec![self.cutoff]
    }

    fn dtype(&self) -> Kind {
        Kind::Double
    }

    fn energies(&self, inputs: &PairInputs) -> Result<Tensor> {
        let v = inputs.vectors;
        let r2 = v.square().sum_dim_intlist(-1, false, Kind::Double);
        let inside = r2.lt(self.cutoff * self.cutoff);
        // Entries beyond the cutoff get r² = 1 so nothing divides by zero.
        let safe = r2.where_self(&inside, &r2.ones_like());
        let pair = self
            .pair_energy(&safe)
            .where_self(&inside, &Tensor::zeros([1], (Kind::Double, v.device())));
        // Each pair is listed for both atoms: half of it to each.
        let per_atom = pair.sum_dim_intlist(1, false, Kind::Double) * 0.5;
        Ok(inputs.layout.sum(&per_atom))
    }
}
