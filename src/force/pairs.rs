//! Models that take the engine's pairs (model contract v2, see
//! models/README.md): the engine owns the neighbour list, the model owns
//! the physics. [`PairForces`] builds the list on the device at every force
//! call (inside the captured step: no host sync, fixed shapes), hands the
//! model the pair vectors x_j − x_i + shift, takes one backward pass for
//! dE/d(vectors) and assembles the forces from the list's reverse entries
//! in a fixed order, so they are bitwise reproducible on a GPU.
//!
//! Cell grids keep a stored list reaching a skin beyond the cutoff between
//! steps (see [`crate::neighbors`]); the stepper rebuilds it on a host
//! schedule ([`ListUpkeep`]): every `every` steps, halved when a check
//! finds an atom that moved more than half the skin (the steps since the
//! last check then run again), doubled (up to [`MAX_EVERY`], never past an
//! interval that once failed) when a whole interval used less than a
//! quarter of it. Results do not depend on the schedule.
//!
//! Capacities are checked where values are pulled to the host anyway
//! ([`ForceProvider::overflow`]); after an overflow the engine goes back to
//! its last check, [`ForceProvider::grow`]s the list and runs those steps
//! again, so no step ever uses a list that dropped a pair.

use std::cell::RefCell;

use tch::{Kind, Tensor};

use super::{autograd_forces, ForceOutput, ForceProvider, ListUpkeep};
use crate::error::{Error, Result};
use crate::neighbors::{Grid, ListShape, NeighborList, Outer, Pairs, DEFAULT_SKIN};
use crate::state::{BatchState, Layout};

/// What a pair model sees of one batch.
#[derive(Clone, Copy)]
pub struct PairInputs<'a> {
    pub atomic_numbers: &'a Tensor,
    /// [N] int64: structure (member) of each atom.
    pub batch: &'a Tensor,
    pub layout: &'a Layout,
    pub pairs: &'a Pairs,
    /// [N, K, 3] pair vectors in the model's dtype (Å).
    pub vectors: &'a Tensor,
    /// [S] total charge of each structure (e), for a model that takes it.
    pub charges: &'a Tensor,
}

/// A neighbour list sized for `state` (its layout, boundaries and members'
/// atom counts) at these cutoffs and skin.
fn list_for(state: &BatchState, cutoffs: &[f64], skin: f64) -> Result<NeighborList> {
    NeighborList::allocate(
        &state.positions,
        &state.batch,
        state.n_members,
        Some(state.n_atoms),
        &state.boundary(),
        cutoffs,
        skin,
    )
}

/// Whether a fresh list of `shape` can take row capacity `capacity` and
/// inner capacities `inner` (a compiled package's) without losing room:
/// at least as many entries everywhere, and whole rows (a dense grid's rows
/// in place) kept at their length (their inner lists may take more room).
pub fn takes_capacities(shape: &ListShape, capacity: i64, inner: &[i64]) -> bool {
    let rows_fit = match shape.rows_whole() {
        true => capacity == shape.capacity,
        false => capacity >= shape.capacity,
    };
    rows_fit
        && inner.len() == shape.inner_capacities.len()
        && inner
            .iter()
            .zip(&shape.inner_capacities)
            .all(|(k, need)| k >= need)
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

    /// Energies [S] and −∂E/∂vectors [N, K, 3]: one backward pass through
    /// [`PairModel::energies`], unless the model brings its gradient (a
    /// compiled package, src/force/aoti.rs).
    fn energies_and_minus_grad(&self, inputs: &PairInputs) -> Result<(Tensor, Tensor)> {
        autograd_forces(inputs.vectors, |v| {
            self.energies(&PairInputs {
                vectors: v,
                ..*inputs
            })
        })
    }

    /// Row capacity and inner capacities the model was made for, when it
    /// takes no others efficiently (a compiled package): a fresh list is
    /// given them where they have room for what it needs.
    fn fixed_capacities(&self) -> Option<(i64, Vec<i64>)> {
        None
    }

    /// Whether `mlff-md compile` can make a package of it (a TorchScript
    /// file with prepare() and forward_pairs_prepared(), no charge).
    fn compilable_pairs(&self) -> bool {
        false
    }

    /// See [`ForceProvider::triton_kernels`].
    fn triton_kernels(&self) -> bool {
        false
    }

    /// Switch to a static-shape evaluation of `state`'s batch composition
    /// (see [`ForceProvider::prepare_static`]); Err says why not.
    fn prepare(&self, _state: &BatchState) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Called before the model sees input shapes it has not seen (the list
    /// grew, or came from a checkpoint): start afresh whatever learns from
    /// the shapes it has seen (TorchScript's optimising executor), so that
    /// its results for the new shapes do not depend on that history, and
    /// prepare again if it was prepared. Ok(true): it did, and its first
    /// calls are to be spent as after a preparation.
    fn renew_executor(&self, _state: &BatchState) -> Result<bool> {
        Ok(false)
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        None
    }

    /// Whether `energies` reads `inputs.charges` (see
    /// [`ForceProvider::takes_charge`]).
    fn takes_charge(&self) -> bool {
        false
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
    /// A cell grid's stored list (None until first built, and after the
    /// list's shapes change).
    outer: RefCell<Option<Outer>>,
    schedule: std::cell::Cell<Schedule>,
}

/// When the stored list is rebuilt (host bookkeeping).
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Steps between rebuilds.
    every: u64,
    /// The most `every` may grow to: one less than an interval that failed.
    ceiling: u64,
    /// Steps since the last rebuild.
    since: u64,
    /// Rebuild before the next step whatever `since` says (a force call
    /// outside the steps rebuilt the list for other positions or cells).
    stale: bool,
    /// Force calls read the stored list (inside a step).
    stepping: bool,
    /// Steps since the last check.
    steps_since_check: u64,
}

/// Longest rebuild interval the schedule grows to (steps).
pub const MAX_EVERY: u64 = 50;

/// Test-only environment switch: the rebuild interval a fresh list starts
/// with (e.g. far too long, so a check must find atoms beyond half the
/// skin, go back and rebuild more often).
pub const REBUILD_ENV: &str = "MLFF_MD_TEST_REBUILD_EVERY";

/// Rebuild interval a list starts with.
const FIRST_EVERY: u64 = 10;

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
    /// A list sized for `state`'s positions and the model's cutoffs, with
    /// the default skin.
    pub fn new(model: Box<dyn PairModel>, state: &BatchState) -> Result<PairForces> {
        Self::with_skin(model, state, DEFAULT_SKIN)
    }

    /// A list sized for `state`'s positions and the model's cutoffs; cell
    /// grids keep a list `skin` Å beyond the cutoff between rebuilds (0:
    /// every force call builds its list).
    pub fn with_skin(
        model: Box<dyn PairModel>,
        state: &BatchState,
        skin: f64,
    ) -> Result<PairForces> {
        let mut list = list_for(state, &model.cutoffs(), skin)?;
        if let Some((capacity, inner)) = model.fixed_capacities() {
            let shape = &list.shape;
            if takes_capacities(shape, capacity, &inner)
                && (capacity, &inner) != (shape.capacity, &shape.inner_capacities)
            {
                let whole = shape.rows_whole();
                list.set_row_capacities(capacity, inner, whole);
            }
        }
        let every = std::env::var(REBUILD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(FIRST_EVERY)
            .max(1);
        Ok(PairForces {
            model,
            list: RefCell::new(list),
            test_room: std::cell::Cell::new(
                std::env::var(ROOM_ENV).ok().and_then(|v| v.parse().ok()),
            ),
            warmups_due: std::cell::Cell::new(0),
            outer: RefCell::new(None),
            schedule: std::cell::Cell::new(Schedule {
                every,
                ceiling: MAX_EVERY.max(every),
                since: 0,
                stale: true,
                stepping: false,
                steps_since_check: 0,
            }),
        })
    }

    fn update_schedule(&self, f: impl FnOnce(&mut Schedule)) {
        let mut s = self.schedule.get();
        f(&mut s);
        self.schedule.set(s);
    }

    /// Build the stored list for `state` into the tensors steps read (in
    /// place where the shapes allow, so a captured step sees it).
    fn store(&self, list: &NeighborList, state: &BatchState) {
        let fresh = list.build(&state.positions, &state.batch, &state.boundary());
        let mut slot = self.outer.borrow_mut();
        match (slot.as_mut(), fresh) {
            (Some(old), Some(new)) if old.same_shape(&new) => old.refresh(&new),
            (_, new) => *slot = new,
        }
    }

    /// The rebuild interval now (steps).
    pub fn rebuild_every(&self) -> u64 {
        self.schedule.get().every
    }

    /// The list's shapes changed: the model starts afresh on them
    /// ([`PairModel::renew_executor`]) and, if it did, its first calls are
    /// spent before the next evaluation.
    fn new_shapes(&self, state: &BatchState) -> Result<()> {
        if self.model.renew_executor(state)? {
            self.warmups_due.set(PROFILING_CALLS);
        }
        Ok(())
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
        self.evaluate_with_virial(state, false).map(|(out, _)| out)
    }

    /// [`PairForces::evaluate`], and with `virial` each member's
    /// W = Σ v·(−∂E/∂v) over the used entries ([R] float64, eV).
    fn evaluate_with_virial(
        &self,
        state: &BatchState,
        virial: bool,
    ) -> Result<(ForceOutput, Option<Tensor>)> {
        let list = self.list.borrow();
        if list.stores() && !self.schedule.get().stepping {
            // Not a step's call: the list must be right for these positions
            // (and cells), and the next step must not inherit it.
            self.store(&list, state);
            self.update_schedule(|s| s.stale = true);
        }
        let pairs = list.refine(
            self.outer.borrow().as_ref(),
            &state.positions,
            &state.batch,
            &state.boundary(),
        );
        drop(list);
        let vectors = pairs.vectors(&state.positions.to_kind(Kind::Double), self.model.dtype());
        let (energies, minus_grad) = self.model.energies_and_minus_grad(&PairInputs {
            atomic_numbers: &state.atomic_numbers,
            batch: &state.batch,
            layout: &state.layout,
            pairs: &pairs,
            vectors: &vectors,
            charges: &state.charges,
        })?;
        let minus_grad = minus_grad.to_kind(Kind::Double);
        let w = virial.then(|| {
            let used = pairs.mask.unsqueeze(2);
            let terms = (vectors.to_kind(Kind::Double) * &minus_grad)
                .where_self(&used, &Tensor::zeros([1], (Kind::Double, vectors.device())));
            state
                .layout
                .sum(&terms.sum_dim_intlist([1, 2].as_slice(), false, Kind::Double))
        });
        let forces = pairs.forces(&minus_grad);
        let out = ForceOutput {
            energies: energies.to_kind(Kind::Double),
            forces: forces.to_kind(state.kind),
        };
        Ok((out, w))
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

    fn takes_charge(&self) -> bool {
        self.model.takes_charge()
    }

    fn compilable(&self) -> bool {
        self.model.compilable_pairs()
    }

    fn triton_kernels(&self) -> bool {
        self.model.triton_kernels()
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        self.model.supported_elements()
    }

    fn gives_virial(&self) -> bool {
        true
    }

    fn virial(&self, state: &BatchState) -> Result<Tensor> {
        let (_, w) = self.evaluate_with_virial(state, true)?;
        Ok(w.expect("asked for the virial"))
    }

    fn prepare_static(&self, state: &BatchState) -> std::result::Result<(), String> {
        if let Some(room) = self.test_room.take() {
            let mut list = self.list.borrow_mut();
            let inner = list.shape.inner_capacities.clone();
            list.set_row_capacities(room, inner, false);
            drop(list);
            self.new_shapes(state).map_err(|e| e.to_string())?;
        }
        self.model.prepare(state)?;
        self.warmups_due.set(PROFILING_CALLS);
        Ok(())
    }

    fn overflow(&self) -> Option<String> {
        let list = self.list.borrow();
        let (problem, moved) = list.check();
        let skin = list.shape.skin;
        self.update_schedule(|s| {
            // A whole interval that used less than a quarter of the skin.
            if problem.is_none()
                && skin > 0.0
                && s.steps_since_check >= s.every
                && moved <= 0.25 * skin
            {
                s.every = (2 * s.every).min(s.ceiling);
            }
            s.steps_since_check = 0;
        });
        problem
    }

    fn grow(&self, state: &BatchState) -> Result<()> {
        let mut list = self.list.borrow_mut();
        if list.moved() > 0.5 * list.shape.skin {
            self.update_schedule(|s| {
                s.every = (s.every / 2).max(1);
                s.ceiling = s.every;
            });
        }
        *self.outer.borrow_mut() = None;
        list.grow(
            &state.positions,
            &state.batch,
            state.n_members,
            Some(state.n_atoms),
            &state.boundary(),
        )?;
        drop(list);
        self.new_shapes(state)
    }

    fn rebatch(&self, state: &BatchState) -> Result<()> {
        let skin = self.list.borrow().shape.skin;
        *self.outer.borrow_mut() = None;
        *self.list.borrow_mut() = list_for(state, &self.model.cutoffs(), skin)?;
        self.update_schedule(|s| s.stale = true);
        Ok(())
    }

    fn upkeep(&self) -> Option<&dyn ListUpkeep> {
        self.list
            .borrow()
            .stores()
            .then_some(self as &dyn ListUpkeep)
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
        *self.outer.borrow_mut() = None;
        let current_skin = self.list.borrow().shape.skin;
        let list = if matches!(shape.grid, Grid::Cells { .. }) && shape.skin < current_skin {
            // A checkpoint written before skins (or with a smaller one):
            // the stored list's reach, bins and room change no result,
            // only the row capacities do, so those are kept and the rest
            // sized for this skin.
            let mut list = list_for(state, &shape.cutoffs, current_skin)?;
            list.set_row_capacities(shape.capacity, shape.inner_capacities, shape.whole_rows);
            list
        } else {
            NeighborList::with_shape(shape, &state.batch, state.n_members, &state.boundary())
        };
        *self.list.borrow_mut() = list;
        self.test_room.set(None);
        self.new_shapes(state)
    }
}

impl ListUpkeep for PairForces {
    fn due(&self) -> bool {
        let s = self.schedule.get();
        self.outer.borrow().is_none() || s.stale || s.since >= s.every
    }

    fn rebuild(&self, state: &BatchState) -> Result<()> {
        self.store(&self.list.borrow(), state);
        Ok(())
    }

    fn rebuilt(&self) {
        self.update_schedule(|s| {
            s.since = 0;
            s.stale = false;
        });
    }

    fn stepping(&self, on: bool) {
        self.update_schedule(|s| s.stepping = on);
    }

    fn stepped(&self) {
        self.update_schedule(|s| {
            s.since += 1;
            s.steps_since_check += 1;
        });
    }

    fn invalidate(&self) {
        self.update_schedule(|s| s.stale = true);
    }

    fn inputs(&self) -> Vec<Tensor> {
        self.outer
            .borrow()
            .as_ref()
            .map(|o| o.tensors().into_iter().map(|t| t.shallow_clone()).collect())
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use tch::{Device, Kind, Tensor};

    use super::{LennardJonesPairs, PairForces, PairInputs, PairModel};
    use crate::force::ForceProvider;
    use crate::state::{to_host_f64, BatchState};
    use crate::system::Molecule;

    /// Two members of eight argon atoms near the sites of a 2×2×2 lattice
    /// in a 12 Å periodic cube; Lennard-Jones to 6.5 Å with a 0.8 Å skin, so
    /// the list is a stored cell list.
    fn fluid() -> (BatchState, PairForces) {
        let sites: Vec<[f64; 3]> = (0..8)
            .map(|i| {
                let d = 0.1 * i as f64;
                [
                    1.5 + 6.0 * (i & 1) as f64 + d,
                    1.5 + 6.0 * ((i >> 1) & 1) as f64 - d,
                    1.5 + 6.0 * (i >> 2) as f64 + 0.5 * d,
                ]
            })
            .collect();
        let m = Molecule::from_symbols(&["Ar"; 8], &sites).unwrap();
        let mut state = BatchState::new(&m, 2, Device::Cpu, Kind::Double);
        let cube = [12.0, 0.0, 0.0, 0.0, 12.0, 0.0, 0.0, 0.0, 12.0];
        state.set_cells(&Tensor::from_slice(&[cube, cube].concat()).view([2, 3, 3]));
        let lj = LennardJonesPairs {
            epsilon: 0.0104,
            sigma: 3.4,
            cutoff: 6.5,
            shifted: false,
        };
        let f = PairForces::with_skin(Box::new(lj), &state, 0.8).unwrap();
        (state, f)
    }

    /// The stored list's schedule as the stepper drives it: a call outside
    /// the steps leaves the list stale; after a rebuild the steps read it
    /// (the same energies) until `every` steps have passed; a clean check
    /// after a whole interval that used under a quarter of the skin
    /// doubles the interval up to 50 steps; an atom that moved more than
    /// half the skin is reported, and growing the list halves the interval
    /// and makes it the ceiling; invalidate() forces a rebuild.
    #[test]
    fn the_stored_list_is_rebuilt_on_its_schedule() {
        let (mut state, f) = fluid();
        assert!(!f.takes_charge(), "Lennard-Jones takes no charge");
        assert_eq!(f.model.cutoffs(), vec![6.5]);
        let fresh = to_host_f64(&f.compute(&state).unwrap().energies);
        assert!(
            fresh.iter().all(|&e| e < 0.0),
            "pairs within the cutoff: {fresh:?}"
        );
        let u = f.upkeep().expect("a periodic list with a skin is stored");
        assert!(u.due(), "a call outside the steps leaves the list stale");
        let rebuild = |u: &dyn super::ListUpkeep, state: &BatchState| {
            u.rebuild(state).unwrap();
            u.rebuilt();
            assert!(!u.due(), "just rebuilt");
        };
        rebuild(u, &state);
        // A captured step reads the stored list where it was: rebuilds
        // write into the same tensors.
        let addresses = |u: &dyn super::ListUpkeep| -> Vec<usize> {
            u.inputs().iter().map(|t| t.data_ptr() as usize).collect()
        };
        let stored = addresses(u);
        assert_eq!(stored.len(), 5, "the stored list's tensors");
        rebuild(u, &state);
        assert_eq!(addresses(u), stored, "rebuilt in place");
        assert_eq!(f.rebuild_every(), 10);
        u.stepping(true);
        for k in 0..10 {
            assert!(!u.due(), "step {k}");
            let e = to_host_f64(&f.compute(&state).unwrap().energies);
            for (a, b) in e.iter().zip(&fresh) {
                assert!((a - b).abs() < 1e-12 * b.abs(), "{a} vs {b}");
            }
            u.stepped();
        }
        assert!(u.due(), "due after 10 steps");
        for want in [20, 40, 50, 50] {
            assert_eq!(f.overflow(), None);
            assert_eq!(f.rebuild_every(), want);
            rebuild(u, &state);
            (0..want).for_each(|_| u.stepped());
            assert!(u.due());
        }
        rebuild(u, &state);
        u.invalidate();
        assert!(u.due(), "invalidated");
        u.rebuild_if_due(&state).unwrap();
        assert!(!u.due(), "rebuilt when due");
        // Atom 3 of member 1 moves 0.6 Å: more than half the skin.
        let mut x = to_host_f64(&state.positions);
        x[3 * 11] += 0.6;
        state.positions.copy_(&Tensor::from_slice(&x).view([16, 3]));
        f.compute(&state).unwrap();
        let problem = f.overflow().expect("the move is reported");
        assert!(problem.contains("an atom moved 0.600 Å"), "{problem}");
        f.grow(&state).unwrap();
        assert_eq!(f.rebuild_every(), 25);
        assert!(u.due(), "a grown list is rebuilt");
        rebuild(u, &state);
        (0..25).for_each(|_| u.stepped());
        assert_eq!(f.overflow(), None);
        assert_eq!(
            f.rebuild_every(),
            25,
            "the interval that failed is the ceiling"
        );
        u.stepping(false);
        f.compute(&state).unwrap();
        assert!(u.due(), "a call outside the steps leaves the list stale");
    }

    /// A checkpoint's list shape: refused for other cutoffs; taken whole
    /// when its skin is at least the current one; from a checkpoint
    /// written before skins (skin 0), only the row capacities are kept
    /// and the rest sized for the current skin. Either way the stored list
    /// is built afresh before the next step.
    #[test]
    fn a_checkpoints_list_shape_is_taken_or_refused() {
        let (state, f) = fluid();
        let u = f.upkeep().unwrap();
        u.rebuild(&state).unwrap();
        u.rebuilt();
        let shape = f.list_shape().unwrap();
        assert_eq!(shape.skin, 0.8);
        let mut other = shape.clone();
        other.cutoffs = vec![6.0];
        let err = f.set_list_shape(other, &state).unwrap_err().to_string();
        assert!(err.contains("cutoffs [6.0] Å, the model [6.5] Å"), "{err}");
        assert!(!u.due(), "a refused shape changes nothing");
        let mut roomier = shape.clone();
        roomier.capacity += 7;
        f.set_list_shape(roomier.clone(), &state).unwrap();
        assert_eq!(f.list_shape().unwrap(), roomier);
        assert!(u.due(), "the stored list is built afresh");
        let mut legacy = shape.clone();
        legacy.skin = 0.0;
        legacy.capacity += 3;
        f.set_list_shape(legacy, &state).unwrap();
        let mut want = shape.clone();
        want.capacity += 3;
        assert_eq!(f.list_shape().unwrap(), want);
    }

    /// A new batch (a screen's members left and entered): the list is
    /// sized afresh for it and the next step rebuilds the stored list, so
    /// the energies are those of a provider made for the new batch.
    #[test]
    fn a_new_batch_gets_a_list_of_its_own() {
        let (state, f) = fluid();
        f.compute(&state).unwrap();
        let u = f.upkeep().unwrap();
        u.rebuild(&state).unwrap();
        u.rebuilt();
        let m = Molecule::from_symbols(&["Ar"; 2], &[[1.0, 1.0, 1.0], [5.0, 1.0, 1.0]]).unwrap();
        let mut three = BatchState::new(&m, 3, Device::Cpu, Kind::Double);
        let cube = [12.0, 0.0, 0.0, 0.0, 12.0, 0.0, 0.0, 0.0, 12.0];
        three.set_cells(&Tensor::from_slice(&[cube, cube, cube].concat()).view([3, 3, 3]));
        f.rebatch(&three).unwrap();
        assert!(u.due(), "the stored list is built for the new batch");
        u.rebuild(&three).unwrap();
        u.rebuilt();
        u.stepping(true);
        let e = to_host_f64(&f.compute(&three).unwrap().energies);
        // One pair at 4 Å per member: 4ε[(σ/r)¹² − (σ/r)⁶].
        let s6 = (3.4f64 / 4.0).powi(6);
        let want = 4.0 * 0.0104 * (s6 * s6 - s6);
        assert_eq!(e.len(), 3);
        for x in e {
            assert!((x - want).abs() < 1e-12, "{x} vs {want}");
        }
    }

    /// A check keeps the interval when it comes before a whole interval
    /// has passed, when the atoms used more than a quarter of the skin, or
    /// when it found a problem (here a row with more neighbours than
    /// room).
    #[test]
    fn the_interval_grows_only_after_a_clean_whole_interval() {
        let (mut state, f) = fluid();
        let u = f.upkeep().unwrap();
        u.rebuild(&state).unwrap();
        u.rebuilt();
        u.stepping(true);
        (0..5).for_each(|_| u.stepped());
        assert_eq!(f.overflow(), None);
        assert_eq!(f.rebuild_every(), 10, "half an interval");
        // Atom 0 of member 0 moves 0.3 Å: over a quarter of the 0.8 Å skin
        // (and under 0.25 / skin, what a slip of * for / would allow).
        let mut x = to_host_f64(&state.positions);
        x[0] += 0.3;
        state.positions.copy_(&Tensor::from_slice(&x).view([16, 3]));
        f.compute(&state).unwrap();
        (0..10).for_each(|_| u.stepped());
        assert_eq!(f.overflow(), None);
        assert_eq!(f.rebuild_every(), 10, "over a quarter of the skin used");
        u.rebuild(&state).unwrap();
        u.rebuilt();
        f.list.borrow_mut().shape.capacity = 1;
        f.compute(&state).unwrap();
        (0..10).for_each(|_| u.stepped());
        let problem = f.overflow().expect("rows overflow");
        assert!(
            problem.contains("neighbours in a row (room for 1)"),
            "{problem}"
        );
        assert_eq!(f.rebuild_every(), 10, "a check that found a problem");
    }

    /// Lennard-Jones that takes a charge, knows argon only and counts its
    /// evaluations.
    struct Counted {
        lj: LennardJonesPairs,
        calls: Rc<Cell<usize>>,
    }

    impl PairModel for Counted {
        fn describe(&self) -> String {
            "counted".into()
        }

        fn cutoffs(&self) -> Vec<f64> {
            self.lj.cutoffs()
        }

        fn dtype(&self) -> Kind {
            Kind::Double
        }

        fn energies(&self, inputs: &PairInputs) -> crate::error::Result<Tensor> {
            self.calls.set(self.calls.get() + 1);
            self.lj.energies(inputs)
        }

        fn supported_elements(&self) -> Option<Vec<i64>> {
            Some(vec![18])
        }

        fn takes_charge(&self) -> bool {
            true
        }
    }

    /// What the model says of itself passes through; preparing for capture
    /// spends two warm-up calls before the next evaluation (and applies
    /// the test switch's row capacity), a grown list none for a model that
    /// keeps no executor.
    #[test]
    fn the_model_is_asked_and_warmed_up_as_it_needs() {
        let (state, _) = fluid();
        let calls = Rc::new(Cell::new(0));
        let model = Counted {
            lj: LennardJonesPairs {
                epsilon: 0.0104,
                sigma: 3.4,
                cutoff: 6.5,
                shifted: false,
            },
            calls: calls.clone(),
        };
        let f = PairForces::with_skin(Box::new(model), &state, 0.8).unwrap();
        assert!(f.takes_charge());
        assert_eq!(f.supported_elements(), Some(vec![18]));
        assert_eq!(f.describe(), "counted");
        f.compute(&state).unwrap();
        assert_eq!(calls.get(), 1);
        f.test_room.set(Some(3));
        f.prepare_static(&state).unwrap();
        assert_eq!(f.list_shape().unwrap().capacity, 3);
        assert_eq!(calls.get(), 1, "warm-ups wait for the next evaluation");
        f.compute(&state).unwrap();
        assert_eq!(calls.get(), 4);
        f.compute(&state).unwrap();
        assert_eq!(calls.get(), 5);
        f.grow(&state).unwrap();
        f.compute(&state).unwrap();
        assert_eq!(calls.get(), 6);
        f.prepare_static(&state).unwrap();
        assert!(
            f.list_shape().unwrap().capacity > 3,
            "the switch applies once"
        );
    }

    /// Lennard-Jones made for fixed list capacities (as a compiled package
    /// is), with its own gradient: that of the energies plus an
    /// anti-spring −½·10⁻³ Σ|v|² over the used entries the energies leave
    /// out, so that the forces show whose gradient the engine assembled.
    struct Fixed {
        lj: LennardJonesPairs,
        capacities: (i64, Vec<i64>),
    }

    impl PairModel for Fixed {
        fn describe(&self) -> String {
            "fixed".into()
        }

        fn cutoffs(&self) -> Vec<f64> {
            vec![self.lj.cutoff, 4.0]
        }

        fn dtype(&self) -> Kind {
            Kind::Double
        }

        fn energies(&self, inputs: &PairInputs) -> crate::error::Result<Tensor> {
            self.lj.energies(inputs)
        }

        fn energies_and_minus_grad(
            &self,
            inputs: &PairInputs,
        ) -> crate::error::Result<(Tensor, Tensor)> {
            let (e, minus_grad) = super::autograd_forces(inputs.vectors, |v| {
                self.energies(&PairInputs {
                    vectors: v,
                    ..*inputs
                })
            })?;
            let used = inputs.pairs.mask.unsqueeze(2).to_kind(Kind::Double);
            Ok((e, minus_grad + used * inputs.vectors * 1e-3))
        }

        fn fixed_capacities(&self) -> Option<(i64, Vec<i64>)> {
            Some(self.capacities.clone())
        }
    }

    /// Lennard-Jones plus the anti-spring of [`Fixed`] in its energies,
    /// differentiated by the engine.
    struct Spring(LennardJonesPairs);

    impl PairModel for Spring {
        fn describe(&self) -> String {
            "spring".into()
        }

        fn cutoffs(&self) -> Vec<f64> {
            vec![self.0.cutoff, 4.0]
        }

        fn dtype(&self) -> Kind {
            Kind::Double
        }

        fn energies(&self, inputs: &PairInputs) -> crate::error::Result<Tensor> {
            let used = inputs.pairs.mask.to_kind(Kind::Double);
            let r2 = inputs
                .vectors
                .square()
                .sum_dim_intlist(-1, false, Kind::Double);
            let per_atom = (r2 * used).sum_dim_intlist(1, false, Kind::Double) * -0.5e-3;
            Ok(self.0.energies(inputs)? + inputs.layout.sum(&per_atom))
        }
    }

    /// A model made for fixed capacities gives a fresh list them where they
    /// have room for what the list needs (never less room), and the engine
    /// assembles the forces from the model's own gradient.
    #[test]
    fn a_model_with_fixed_capacities_gets_them_and_brings_its_gradient() {
        let (state, plain) = fluid();
        let need = plain.list_shape().unwrap();
        let lj = || LennardJonesPairs {
            epsilon: 0.0104,
            sigma: 3.4,
            cutoff: 6.5,
            shifted: false,
        };
        let fixed = |capacity: i64, inner: i64| {
            let model = Fixed {
                lj: lj(),
                capacities: (capacity, vec![inner]),
            };
            PairForces::with_skin(Box::new(model), &state, 0.8).unwrap()
        };
        let reference = PairForces::with_skin(
            Box::new(Fixed {
                lj: lj(),
                capacities: (0, vec![0]),
            }),
            &state,
            0.8,
        )
        .unwrap();
        let base = reference.list_shape().unwrap();
        assert_eq!(base.capacity, need.capacity, "too small: kept");
        let roomy = fixed(base.capacity + 5, base.inner_capacities[0] + 2);
        let shape = roomy.list_shape().unwrap();
        assert_eq!(
            (shape.capacity, shape.inner_capacities.clone()),
            (base.capacity + 5, vec![base.inner_capacities[0] + 2])
        );
        // room in the row, none in the inner list: kept as it is
        let half = fixed(base.capacity + 5, base.inner_capacities[0] - 1);
        assert_eq!(half.list_shape().unwrap().capacity, base.capacity);
        // Whole rows (eight free atoms within the cutoff of each other)
        // keep their length; their inner lists take the model's room.
        let sites: Vec<[f64; 3]> = (0..8)
            .map(|i| {
                [
                    1.2 * (i & 1) as f64,
                    1.3 * ((i >> 1) & 1) as f64,
                    1.4 * (i >> 2) as f64,
                ]
            })
            .collect();
        let m = Molecule::from_symbols(&["Ar"; 8], &sites).unwrap();
        let small = BatchState::new(&m, 2, Device::Cpu, Kind::Double);
        let whole = |capacity: i64, inner: i64| {
            let model = Fixed {
                lj: lj(),
                capacities: (capacity, vec![inner]),
            };
            let f = PairForces::with_skin(Box::new(model), &small, 0.8).unwrap();
            f.list_shape().unwrap()
        };
        let own = whole(0, 0);
        assert!(own.rows_whole() && own.capacity == 8, "{own:?}");
        let more_inner = whole(8, own.inner_capacities[0] + 2);
        assert!(more_inner.rows_whole(), "{more_inner:?}");
        assert_eq!(more_inner.inner_capacities, [own.inner_capacities[0] + 2]);
        assert_eq!(whole(9, own.inner_capacities[0] + 2), own, "longer rows");
        // Its energies, and the forces of its gradient: those of the
        // anti-spring's energies, not Lennard-Jones's.
        let out = roomy.compute(&state).unwrap();
        let lj_out = plain.compute(&state).unwrap();
        let spring = PairForces::with_skin(Box::new(Spring(lj())), &state, 0.8).unwrap();
        let spring_out = spring.compute(&state).unwrap();
        let e = to_host_f64(&(out.energies - lj_out.energies));
        assert!(e.iter().all(|d| d.abs() < 1e-12), "{e:?}");
        let df = to_host_f64(&(&out.forces - spring_out.forces).abs().max());
        let moved = to_host_f64(&(&out.forces - lj_out.forces).abs().max());
        assert!(df[0] < 1e-12 && moved[0] > 1e-4, "{df:?} {moved:?}");
    }

    /// The shifted-force form V(r) − V(rc) − (r − rc) V'(rc) for one pair
    /// of free atoms, against V and V' written out here: energy and force
    /// at 4 Å, and both vanishing at the cutoff. The plain form is V(r).
    #[test]
    fn shifted_lennard_jones_is_the_shifted_force_form() {
        let (eps, sigma, rc) = (0.0104, 3.4, 6.5);
        let v = |r: f64| 4.0 * eps * ((sigma / r).powi(12) - (sigma / r).powi(6));
        let dv = |r: f64| {
            4.0 * eps * (-12.0 * sigma.powi(12) / r.powi(13) + 6.0 * sigma.powi(6) / r.powi(7))
        };
        for (shifted, r) in [(true, 4.0), (true, rc - 1e-9), (false, 4.0)] {
            let m = Molecule::from_symbols(&["Ar"; 2], &[[1.0, 2.0, 3.0], [1.0 + r, 2.0, 3.0]])
                .unwrap();
            let state = BatchState::new(&m, 1, Device::Cpu, Kind::Double);
            let lj = LennardJonesPairs {
                epsilon: eps,
                sigma,
                cutoff: rc,
                shifted,
            };
            let f = PairForces::new(Box::new(lj), &state).unwrap();
            let out = f.compute(&state).unwrap();
            let (e, force) = (to_host_f64(&out.energies)[0], to_host_f64(&out.forces));
            let (want_e, want_f) = match shifted {
                true => (v(r) - v(rc) - (r - rc) * dv(rc), dv(r) - dv(rc)),
                false => (v(r), dv(r)),
            };
            assert!((e - want_e).abs() < 1e-12, "E({r}) = {e}, want {want_e}");
            // Atom 0 is pushed along −x by −dE/dx₀ = V'(r) (minus V'(rc)).
            assert!(
                (force[0] - want_f).abs() < 1e-12,
                "F({r}) = {}, want {want_f}",
                force[0]
            );
            assert!((force[3] + want_f).abs() < 1e-12);
        }
        let lj = LennardJonesPairs {
            epsilon: eps,
            sigma,
            cutoff: rc,
            shifted: true,
        };
        assert_eq!(
            lj.describe(),
            "Lennard-Jones, ε = 0.0104 eV, σ = 3.4 Å, cutoff 6.5 Å, shifted (engine neighbour list)"
        );
    }
}
