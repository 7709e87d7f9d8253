//! Neighbour lists on the device, for free and periodic members, with
//! every shape fixed, so an update is capturable in a CUDA graph and never
//! waits for the host.
//!
//! As in jax-md's partition module: [`NeighborList::allocate`] runs on the
//! host once (it looks at the data to fix the grid and the capacities);
//! [`NeighborList::update`] builds the list for new positions with those
//! shapes and raises, in place on the device, the largest counts it met
//! (`seen`). Where values are pulled to the host anyway, the engine asks
//! [`NeighborList::overflow`] whether a capacity was exceeded since
//! allocation; an overflowed list must not have been used (pairs may be
//! missing), so the engine goes back to its last check and
//! [`NeighborList::grow`]s the list first.
//!
//! Pairs never cross members. The list is full (each pair appears for both
//! atoms). Row i lists atoms j = `neighbors[i, k]` with `shifts[i, k]` such
//! that x_j − x_i + shift is the vector to the image within the cutoff, for
//! x the positions as given (unwrapped). `reverse[i, k]` is the flat index
//! (row · K + entry) of the same pair seen from j, so per-pair gradients
//! sum into per-atom forces by gathers in a fixed order, without atomic
//! adds: forces are bitwise reproducible on a GPU. Rows list their entries
//! in a fixed order (by bin offset, then atom index), whatever the
//! capacities.
//!
//! Two ways to find candidates:
//! * dense: every atom of the member (isolated molecules of up to
//!   [`DENSE_MAX_ATOMS`] atoms, of one size or of several, as in a screen's
//!   batch of different molecules: n² candidates per member, padded to the
//!   largest, beat a cell list at that size). Rows are compacted to the
//!   entries within the cutoff, or, where a row has room for the whole
//!   member anyway (small molecules), hold every candidate in place with
//!   those beyond the cutoff unused ([`ListShape::whole_rows`]): then only
//!   distances, mask and inner lists change from step to step, and a
//!   graphed step, whose time such small kernels set, is a dozen calls
//!   shorter. Whole rows of equal members (one molecule × R) are an n × n
//!   square per member: differences by broadcasting, kept for the pair
//!   vectors, and forces by a column sum minus a row sum
//!   ([`Pairs::differences`]), with no gathers over [N, K, 3];
//! * cells: binning (an O(N) cell list). Periodic members bin their wrapped
//!   fractional coordinates, with nb_k = floor(w_k / (1.1 cutoff)) bins (at least 1) along
//!   lattice direction k (w_k the perpendicular width), so every image
//!   within the cutoff lies in one of the 27 neighbouring bins; the bin
//!   offset gives the image, so a small cell's several images of one atom
//!   are distinct entries (a width must be at least the cutoff). Free
//!   members bin x − (the member's lowest corner) in cubes of the cutoff,
//!   clamped to the grid fixed at allocation: an atom beyond it falls into
//!   an edge bin, which keeps every pair findable (at worst it overflows
//!   that bin).
//!
//! Inner lists: for each smaller cutoff the model asks for (ANI's angular
//! terms), `inner_slots[c][i, m]` names the entries of row i within it, in
//! increasing k, with their own capacity.
//!
//! Skin (cell grids): [`NeighborList::build`] keeps every pair within
//! cutoff + skin as a stored list ([`Outer`]: neighbour, integer lattice
//! image, reverse entry), its rows sorted by (neighbour, image), and
//! [`NeighborList::refine`] picks from it, at each force call, the pairs
//! within the cutoff. The candidate search (binning, 27 bins of candidates
//! per atom) then runs only when the stored list is rebuilt; a step filters
//! ~(1 + skin/cutoff)³ entries per atom instead. Because the stored rows
//! are in that canonical order and the shifts are made from the integer
//! images and the cells (which only change with a rebuild), the pairs a
//! model sees, and their
//! order, do not depend on when the stored list was built: any rebuild
//! schedule that keeps every atom within half the skin of where it was at
//! the last build gives the same bits. `refine` records the largest
//! displacement since the build (`moved`); a check that finds more than
//! half the skin reports it like an overflow, and the steps since the last
//! check run again with more frequent rebuilds.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::system::cell::Cell;

/// Spare room in the bins of a cell grid (cheap: bins only widen the
/// candidate search).
const MARGIN: f64 = 1.3;
/// Spare room in the rows and inner rows, which size the model's work
/// (ANI's angular terms grow with the square of the inner rows), so it is
/// kept small: an overflow costs only a rerun back to the last check.
const ROW_MARGIN: f64 = 1.05;

/// Bins of a periodic cell are this much wider than the cutoff (where the
/// cell is wide enough): room for the cell to shrink.
const CELL_MARGIN: f64 = 1.1;

/// Spare room in the rows of the stored (skin) list: it sizes only the
/// per-step filtering, not the model's work.
const OUTER_MARGIN: f64 = 1.15;

/// Å beyond the cutoff a cell grid's stored list reaches (clamped for
/// periodic cells narrower than cutoff + skin).
pub const DEFAULT_SKIN: f64 = 1.0;

/// Largest member (atoms) listed densely: all its atoms are candidates.
pub const DENSE_MAX_ATOMS: usize = 256;

/// The boundary shared by the members of a batch.
#[derive(Debug)]
pub enum Boundary<'a> {
    /// Isolated molecules.
    Free,
    /// One cell per member: [R, 3, 3], rows a, b, c (Å).
    Periodic(&'a Tensor),
}

/// How candidates are found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Grid {
    /// Every atom of the member; members are contiguous blocks of this many rows.
    Dense { atoms: i64 },
    /// A cell list: bins per member along each axis and atoms a bin holds.
    Cells { bins: [i64; 3], max_per_bin: i64 },
}

/// Everything that fixes the list's tensor shapes: stored in checkpoints,
/// so a continued run builds exactly the lists of an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListShape {
    /// Å, descending: the list's cutoff, then the inner cutoffs.
    pub cutoffs: Vec<f64>,
    /// Å: the stored list reaches cutoff + skin (cell grids; 0 for dense
    /// grids and in checkpoints written before skins).
    #[serde(default)]
    pub skin: f64,
    pub grid: Grid,
    /// Entries per row (K).
    pub capacity: i64,
    /// Entries per row of the stored list (cell grids; 0 in checkpoints
    /// written before skins: then the row capacity).
    #[serde(default)]
    pub outer_capacity: i64,
    /// Slots per row of each inner list.
    pub inner_capacities: Vec<i64>,
    /// Dense grids whose rows have room for every atom of the member
    /// (capacity = atoms): a row's entries are its candidates, in place,
    /// those beyond the cutoff unused (see [`NeighborList::refine`]).
    /// False in checkpoints written before it: they go on with compacted
    /// rows, as they were written.
    #[serde(default)]
    pub whole_rows: bool,
}

impl ListShape {
    /// Whether rows are whole: asked for, and the capacity is the
    /// member's atoms (a shape given by hand may say otherwise).
    pub fn rows_whole(&self) -> bool {
        self.whole_rows && matches!(self.grid, Grid::Dense { atoms } if atoms == self.capacity)
    }

    /// Index of the fullest bin in a list's `seen` counts: after the row
    /// and the inner rows; the shrink flag and the stored row follow it.
    fn seen_bin(&self) -> usize {
        self.cutoffs.len()
    }
}

#[derive(Debug)]
pub struct NeighborList {
    pub shape: ListShape,
    periodic: bool,
    n_members: i64,
    /// Device constants an update needs (made at allocation: a host-to-
    /// device copy cannot be part of a captured CUDA graph).
    consts: Constants,
    /// [4 + inner] int64, raised in place by every update: the largest
    /// row and inner rows (together first, so one kernel raises them),
    /// then the fullest bin (0 for dense), whether a periodic cell shrank
    /// below its bins (0 / 1) and the largest stored row, met since the
    /// last clean check. The bin's index: [`ListShape::seen_bin`].
    seen: Tensor,
    /// [] float64: the largest squared displacement (Å²) of an atom from
    /// where the stored list was built, met by a refine since the last
    /// clean check.
    moved: Tensor,
}

/// The stored list of a cell grid: every pair within cutoff + skin of the
/// positions it was built from, each row sorted by (neighbour, image).
#[derive(Debug)]
pub struct Outer {
    /// [N, Ko] int64 neighbour row (the row itself where unused).
    neighbors: Tensor,
    /// [N, Ko, 3] float64 shift n·H (n the entry's integer lattice image,
    /// H the member's cell at the build): the pair vector is
    /// (x_j − x_i) + shift for the positions as given; None for free
    /// members. A cell that changes makes the list stale (the engine
    /// rebuilds it first), so the shift stays right until the next build.
    shift: Option<Tensor>,
    /// [N, Ko] bool.
    mask: Tensor,
    /// [N, Ko] int64 flat index of the reverse entry, N · Ko where unused.
    reverse: Tensor,
    /// [N, 3] float64 positions it was built from.
    reference: Tensor,
}

impl Outer {
    /// Copy `fresh` into these tensors (same shapes), so a captured step
    /// that reads them sees the new list.
    pub fn refresh(&mut self, fresh: &Outer) {
        self.neighbors.copy_(&fresh.neighbors);
        if let (Some(a), Some(b)) = (&mut self.shift, &fresh.shift) {
            a.copy_(b);
        }
        self.mask.copy_(&fresh.mask);
        self.reverse.copy_(&fresh.reverse);
        self.reference.copy_(&fresh.reference);
    }

    /// Whether `fresh` has the shapes of this list (so it can be copied in).
    pub fn same_shape(&self, fresh: &Outer) -> bool {
        self.neighbors.size() == fresh.neighbors.size()
            && self.shift.is_some() == fresh.shift.is_some()
    }

    /// The tensors a captured step reads (their addresses must not change).
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.neighbors, &self.mask, &self.reverse, &self.reference];
        v.extend(self.shift.as_ref());
        v
    }
}

#[derive(Debug)]
struct Constants {
    /// [3] int64 bins per axis (cell grids; [1, 1, 1] for dense).
    bins: Tensor,
    /// [27, 3] int64 bin offsets.
    offsets: Tensor,
    /// [3] float64: the vector unused entries get, (2 cutoff, 0, 0).
    far: Tensor,
    /// [] float64 0: what unused entries' gradients become (a constant,
    /// not a fill at every step).
    zero: Tensor,
    /// [3] int64: weights of an image's components in a row's sort key.
    image_code: Tensor,
    /// Dense grids: the candidates of every row ([N, n] rows of its
    /// member, then the row N − 1 past the member's last atom: a real row,
    /// so distances need no padding row, and never valid), which of them
    /// are real and not the row itself, and each row's index within its
    /// member ([N]): the same at every update.
    dense: Option<(Tensor, Tensor, Tensor)>,
    /// Index ranges and fill-in values of this shape (see [`Indices`]).
    indices: Indices,
    /// Whole rows ([`ListShape::whole_rows`]): [N, K] int64 each entry's
    /// reverse entry (N · K where the candidate is not real), the same at
    /// every update; an entry's neighbour is its candidate.
    whole: Option<Tensor>,
    /// Dense grids whose members all have the grid's `atoms` atoms (one
    /// molecule × R, the common case): with whole rows, a member's entries
    /// are an n × n square, entry (i, j) seen from j is (j, i), and the
    /// refine takes differences by broadcasting instead of gathers (see
    /// [`Pairs::differences`]).
    regular: bool,
}

/// The reverse entries of whole rows (see [`Constants::whole`]) from a
/// dense grid's candidates, or None for other lists.
fn whole_row_reverse(
    shape: &ListShape,
    dense: Option<&(Tensor, Tensor, Tensor)>,
) -> Option<Tensor> {
    let (cand, valid, local) = dense?;
    if !shape.rows_whole() {
        return None;
    }
    let (n, k) = (cand.size()[0], cand.size()[1]);
    // Entry c of row i is candidate c; seen from j = cand[i, c], the pair
    // is j's candidate local[i].
    Some((cand * k + local.unsqueeze(1)).where_scalarother(valid, n * k))
}

/// The index ranges 0..len an update needs (rows, row and slot capacities,
/// candidates per row) and the values its `where`s fill in, made once per
/// list shape. Each `arange` or scalar made inside an update is a kernel
/// of every step, and a small molecule's step is a few hundred kernels; a
/// length or value the shape did not foresee (a capacity set after
/// allocation) is made on the spot.
#[derive(Debug)]
struct Indices {
    ranges: Vec<Tensor>,
    /// (value, [] int64 tensor) pairs.
    scalars: Vec<(i64, Tensor)>,
    /// (k, [`Indices::entry_base`]) pairs.
    bases: Vec<(i64, Tensor)>,
    rows: i64,
    device: Device,
}

impl Indices {
    /// Ranges and values for `rows` rows of a list of `shape`.
    fn new(shape: &ListShape, rows: i64, device: Device) -> Indices {
        let mut lengths = vec![rows, shape.capacity, shape.outer_capacity];
        lengths.extend(&shape.inner_capacities);
        lengths.push(match shape.grid {
            Grid::Dense { atoms } => atoms,
            Grid::Cells { max_per_bin, .. } => 27 * max_per_bin,
        });
        lengths.sort_unstable();
        lengths.dedup();
        // The spare column and the sentinels N · K of the row capacities.
        let mut values = vec![0, rows * shape.capacity, rows * shape.outer_capacity];
        values.dedup();
        let mut idx = Indices {
            ranges: lengths
                .into_iter()
                .filter(|&len| len > 0)
                .map(|len| Tensor::arange(len, (Kind::Int64, device)))
                .collect(),
            scalars: values
                .into_iter()
                .map(|v| (v, Tensor::full([], v, (Kind::Int64, device))))
                .collect(),
            bases: Vec::new(),
            rows,
            device,
        };
        let mut bases = vec![shape.capacity, shape.outer_capacity];
        bases.dedup();
        idx.bases = bases
            .into_iter()
            .map(|k| (k, entry_base(&idx.get(rows), k)))
            .collect();
        idx
    }

    /// [len] int64 0, 1, ..., len − 1.
    fn get(&self, len: i64) -> Tensor {
        match self.ranges.iter().find(|r| r.size()[0] == len) {
            Some(r) => r.shallow_clone(),
            None => Tensor::arange(len, (Kind::Int64, self.device)),
        }
    }

    /// [N, 1] int64 row · k − 1: the flat entry of row i's running count
    /// c is row · k + c − 1 (`k` a row capacity of the shape).
    fn entry_base(&self, k: i64) -> Tensor {
        match self.bases.iter().find(|(v, _)| *v == k) {
            Some((_, t)) => t.shallow_clone(),
            None => entry_base(&self.get(self.rows), k),
        }
    }

    /// [] int64 `value`: the fill-in of a `where` (a scalar argument is
    /// a fill kernel of its own at every call). 0 and the sentinels
    /// rows · capacity are made once.
    fn scalar(&self, value: i64) -> Tensor {
        match self.scalars.iter().find(|(v, _)| *v == value) {
            Some((_, t)) => t.shallow_clone(),
            None => Tensor::full([], value, (Kind::Int64, self.device)),
        }
    }
}

impl Constants {
    /// Tables of `shape` for the rows of `batch` ([N] int64, the member of
    /// each row; members are contiguous blocks of rows).
    fn new(shape: &ListShape, batch: &Tensor) -> Constants {
        let device = batch.device();
        let bins = match shape.grid {
            Grid::Cells { bins, .. } => bins,
            Grid::Dense { .. } => [1; 3],
        };
        let mut regular = false;
        let dense = match shape.grid {
            Grid::Dense { atoms } => {
                // Row i (member r, its atom a) sees the rows of member r:
                // first_r .. first_r + count_r, then padding up to n.
                let opts_i = (Kind::Int64, device);
                let n_rows = batch.size()[0];
                let rows = Tensor::arange(n_rows, opts_i);
                let counts =
                    Tensor::zeros([n_rows.max(1)], opts_i).index_add(0, batch, &batch.ones_like());
                let starts = counts.cumsum(0, Kind::Int64) - &counts;
                let first = starts.index_select(0, batch);
                let local = &rows - &first;
                let cols = Tensor::arange(atoms, opts_i).unsqueeze(0);
                let inside = cols.lt_tensor(&counts.index_select(0, batch).unsqueeze(1));
                let cand = (first.unsqueeze(1) + &cols).where_scalarother(&inside, n_rows - 1);
                let valid = cols.ne_tensor(&local.unsqueeze(1)).logical_and(&inside);
                // One host read, at allocation: whether any row is padded.
                regular = n_rows > 0 && inside.all().int64_value(&[]) != 0;
                Some((cand, valid, local))
            }
            Grid::Cells { .. } => None,
        };
        let whole = whole_row_reverse(shape, dense.as_ref());
        Constants {
            whole,
            regular,
            bins: Tensor::from_slice(&bins).to_device(device),
            offsets: offsets(device),
            far: Tensor::from_slice(&[2.0 * shape.cutoffs[0], 0.0, 0.0]).to_device(device),
            zero: Tensor::zeros([], (Kind::Double, device)),
            image_code: Tensor::from_slice(&[1i64 << 20, 1 << 10, 1]).to_device(device),
            dense,
            indices: Indices::new(shape, batch.size()[0], device),
        }
    }
}

/// One build of the list (device tensors).
#[derive(Debug)]
pub struct Pairs {
    /// [N, K] int64: neighbour row, or the row itself where unused.
    pub neighbors: Tensor,
    /// [N, K, 3] float64 image shifts (Å); None for dense lists (all zero).
    pub shifts: Option<Tensor>,
    /// [N, K] bool: entries in use.
    pub mask: Tensor,
    /// [N, K] int64: flat index (row · K + entry) of the reverse entry, or
    /// N · K where unused.
    pub reverse: Tensor,
    /// Whole rows of equal members (R members of n atoms, K = n): [N, K, 3]
    /// float64 x_j − x_i for the positions the list was refined for, every
    /// entry (unused ones too). The refine needs them for its distances
    /// anyway; [`Pairs::vectors`] and [`Pairs::forces`] then take them and
    /// the square's transpose instead of two gathers over [N, K, 3] each
    /// (at alanine dipeptide × 4096 those passes were most of a step's
    /// list and force assembly).
    pub differences: Option<Tensor>,
    /// Per inner cutoff: [N, K_c] int64 entry indices into the row (0 where unused).
    pub inner_slots: Vec<Tensor>,
    /// Per inner cutoff: [N, K_c] bool.
    pub inner_masks: Vec<Tensor>,
    /// [3] float64: the vector of unused entries.
    far: Tensor,
    /// [] float64 0.
    zero: Tensor,
}

impl Pairs {
    /// Pair vectors x_j − x_i + shift, [N, K, 3], computed in the kind of
    /// `positions` (the positions the list was refined for) and returned in
    /// `kind`; unused entries get (2 cutoff, 0, 0).
    pub fn vectors(&self, positions: &Tensor, kind: Kind) -> Tensor {
        if let Some(d) = &self.differences {
            // The same values (positions are float64 where the engine
            // calls this): x_j − x_i in float64, rounded once to `kind`.
            let far = self.far.to_kind(kind);
            return d.to_kind(kind).where_self(&self.mask.unsqueeze(2), &far);
        }
        let n = positions.size()[0];
        let k = self.neighbors.size()[1];
        let xj = positions
            .index_select(0, &self.neighbors.view([-1]))
            .view([n, k, 3]);
        let mut v = xj - positions.unsqueeze(1);
        if let Some(s) = &self.shifts {
            v += s.to_kind(positions.kind());
        }
        v.where_self(&self.mask.unsqueeze(2), &self.far.to_kind(positions.kind()))
            .to_kind(kind)
    }

    /// Forces from `h` = −dE/dv per entry ([N, K, 3]): with g = dE/dv,
    /// F_i = Σ_k g_ik − Σ_k g[reverse_ik] (the pair as seen from its
    /// neighbour) = Σ_k (h[reverse_ik] − h_ik), summed in a fixed order.
    /// Unused entries count as zero.
    pub fn forces(&self, h: &Tensor) -> Tensor {
        let h = h.where_self(&self.mask.unsqueeze(2), &self.zero);
        let n = h.size()[0];
        let k = h.size()[1];
        if self.differences.is_some() {
            // A square of whole rows: entry (i, j)'s reverse is (j, i), so
            // F_i = Σ_j h_ji − Σ_j h_ij, a column sum minus a row sum.
            let sq = h.view([n / k, k, k, 3]);
            let f = sq.sum_dim_intlist(1, false, h.kind()) - sq.sum_dim_intlist(2, false, h.kind());
            return f.view([n, 3]);
        }
        let flat = with_padding_row(&h.reshape([n * k, 3]));
        let from_others = flat
            .index_select(0, &self.reverse.view([-1]))
            .view([n, k, 3]);
        (from_others - &h).sum_dim_intlist(1, false, h.kind())
    }
}

/// `rows` [N, ...] with a row of zeros appended, so that the padding index N
/// of a neighbour table selects something harmless (masked out after).
pub fn with_padding_row(rows: &Tensor) -> Tensor {
    let mut one = rows.size();
    one[0] = 1;
    Tensor::cat(
        &[
            rows.shallow_clone(),
            Tensor::zeros(one.as_slice(), (rows.kind(), rows.device())),
        ],
        0,
    )
}

/// [N, 1] int64 rows · k − 1 (`rows` 0..N).
fn entry_base(rows: &Tensor, k: i64) -> Tensor {
    rows.unsqueeze(1) * k - 1
}

/// [N, cap] bool: the first `counts[i]` slots of each row (all of them
/// where `counts[i]` ≥ cap; `slots` = 0..cap).
fn first_slots(counts: &Tensor, slots: &Tensor) -> Tensor {
    slots.unsqueeze(0).lt_tensor(&counts.unsqueeze(1))
}

/// Squared lengths of the differences `d` ([N, C, 3], or [N, 27, M, 3] by
/// bin offset), as [N, C] float64, and whether each lies within `cutoff`
/// and is `valid` ([N, C] bool).
fn squared_within(d: &Tensor, valid: &Tensor, cutoff: f64) -> (Tensor, Tensor) {
    let d2 = d
        .square()
        .sum_dim_intlist(-1, false, Kind::Double)
        .view(valid.size().as_slice());
    let within = d2.lt(cutoff * cutoff).logical_and(valid);
    (d2, within)
}

/// [N, W] int64 running count along each row of `mask` ([N, W] bool):
/// entry c counts the row's true entries up to and including c.
///
/// PyTorch's scan along the innermost dimension costs about 3-6 ns per row
/// on a GPU whatever the width up to a few hundred: 576 µs of a 0.77 ms
/// list build at [90112, 22] (alanine dipeptide × 4096) on an H100. Its
/// scan along the outer dimension (of the transpose: one thread per row,
/// W dependent steps) took that list build to 0.23 ms, but is slower where
/// rows are few for their width: 47 against 14 µs at [4480, 140]
/// (chignolin × 32's candidates), 319 against 99 µs at [24000, 324], and a
/// water box's list build (rows of 2,079 candidates) went from 11.5 to
/// 13.1 ms (benches/list_build.py, benches/results/list_count_NVIDIA-H100_2026-12-06).
/// So the transpose is taken only where rows outnumber 512 × W.
fn running_count(mask: &Tensor) -> Tensor {
    let (n, w) = (mask.size()[0], mask.size()[1]);
    if n < 512 * w {
        return mask.cumsum(1, Kind::Int64);
    }
    mask.tr()
        .contiguous()
        .cumsum(0, Kind::Int64)
        .tr()
        .contiguous()
}

/// Per-member minimum or maximum ("amin" / "amax") of each coordinate of
/// `x` ([N, 3] float64; `batch` [N] the member of each row): [R, 3].
/// (scatter_reduce: exact in any order, no host sync.)
fn member_extreme(x: &Tensor, batch: &Tensor, n_members: i64, which: &str) -> Tensor {
    let index = batch.unsqueeze(1).expand([-1, 3], false);
    Tensor::zeros([n_members, 3], (Kind::Double, x.device()))
        .internal_scatter_reduce(0, &index, x, which, false)
}

/// Inverses of lower-triangular cells ([R, 3, 3], rows a, b, c: the form
/// every cell is stored in) by their closed form. Not `inverse()`: on a GPU
/// it checks the factorisation on the host, which a captured graph cannot.
fn lower_triangular_inverse(h: &Tensor) -> Tensor {
    let at = |i: i64, j: i64| h.select(1, i).select(1, j);
    let (a, b, c, d, e, f) = (at(0, 0), at(1, 0), at(1, 1), at(2, 0), at(2, 1), at(2, 2));
    let zero = a.zeros_like();
    let rows = [
        [a.reciprocal(), zero.shallow_clone(), zero.shallow_clone()],
        [-(&b / (&a * &c)), c.reciprocal(), zero.shallow_clone()],
        [
            (&b * &e - &c * &d) / (&a * &c * &f),
            -(&e / (&c * &f)),
            f.reciprocal(),
        ],
    ];
    let rows: Vec<Tensor> = rows.into_iter().map(|r| Tensor::stack(&r, 1)).collect();
    Tensor::stack(&rows, 1)
}

/// Atoms in each of `n_bins` bins. (Not `bincount`: on a GPU it reads the
/// largest index back to the host, which a captured graph cannot do;
/// integer additions are exact in any order.)
fn count_bins(global: &Tensor, n_bins: i64) -> Tensor {
    Tensor::zeros([n_bins], (Kind::Int64, global.device())).index_add(
        0,
        global,
        &global.ones_like(),
    )
}

/// The 27 bin offsets (−1, 0, 1)³, [27, 3] int64; offset o and 26 − o are opposite.
fn offsets(device: Device) -> Tensor {
    let v: Vec<i64> = (0..27)
        .flat_map(|i| [i / 9 - 1, (i / 3) % 3 - 1, i % 3 - 1])
        .collect();
    Tensor::from_slice(&v).view([27, 3]).to_device(device)
}

/// Candidates of every row before the cutoff test.
struct Candidates {
    /// [N, C] int64 candidate row (N where there is none, if `padded`).
    cand: Tensor,
    /// Whether `cand` holds N (a cell grid's empty slots): distances then
    /// need a padding row.
    padded: bool,
    /// [N, C] bool: a real candidate (not padding, not the atom itself).
    valid: Tensor,
    /// [N, 3] float64: the positions distances are taken between (wrapped
    /// into the cell for periodic bins, as given otherwise).
    xw: Tensor,
    geometry: Geometry,
    /// Where the same pair sits among the neighbour's candidates.
    reverse: Reverse,
    /// Cell grids: [] int64 the fullest bin, and [] bool whether a
    /// periodic cell is narrower than its bins (it shrank).
    bins_seen: Option<(Tensor, Tensor)>,
}

/// How a candidate's vector is made from the positions `xw`.
enum Geometry {
    /// x_j − x_i.
    Plain,
    /// Periodic bins: x_j + image·H − x_i for wrapped x. [N, 27, 3] float64
    /// image·H of each bin offset seen from each atom and [N, 27, 3] float64
    /// the integer image itself; [N, 3] float64 each atom's wrap in whole
    /// cells (x wrapped = x + wrap·H).
    Bins {
        image_shift: Tensor,
        image: Tensor,
        wrap_cells: Tensor,
    },
    /// Stored entries: (x_j − x_i) + shift, [N, C, 3] float64 shift = n·H.
    Entries { shift: Tensor },
}

/// The candidate index, in the neighbour's row, of the pair seen from the
/// neighbour.
enum Reverse {
    /// Dense: the row's own index within its member ([N]).
    Dense { local: Tensor },
    /// Cells: the opposite bin offset, in the slot the row's atom has in its
    /// own bin ([N], clamped to the bin capacity `m`).
    Cells { m: i64, slot: Tensor },
    /// Stored entries: [N, C] flat index (row · C + entry) of the reverse
    /// entry, N · C where there is none.
    Entries { flat: Tensor },
}

/// The first entries within a cutoff of each row, picked from candidates.
struct Picked {
    neighbors: Tensor,
    mask: Tensor,
    reverse: Tensor,
    /// [N, K] int64: the candidate behind each entry (where unused: 0, or
    /// for a dense grid the row's own candidate; a view, not contiguous).
    picked: Tensor,
    /// [N] int64: candidates within the cutoff per row, kept or not.
    found: Tensor,
}

impl NeighborList {
    /// Fix the grid and capacities for `positions` ([N, 3]) of `n_members`
    /// members (`batch` [N] int64 member of each row; members are
    /// contiguous blocks of rows; `dense` = Some(n), n the largest member's
    /// atoms, allows the dense grid for free members, None asks for cells),
    /// within `cutoffs` (Å, descending; the first
    /// is the list's), with a stored list reaching `skin` Å further (cell
    /// grids). Copies a few numbers to the host.
    pub fn allocate(
        positions: &Tensor,
        batch: &Tensor,
        n_members: usize,
        dense: Option<usize>,
        boundary: &Boundary,
        cutoffs: &[f64],
        skin: f64,
    ) -> Result<NeighborList> {
        let nothing_seen = Tensor::zeros(
            [3 + cutoffs.len() as i64],
            (Kind::Int64, positions.device()),
        );
        Self::sized(
            positions,
            batch,
            n_members,
            dense,
            boundary,
            cutoffs,
            skin,
            &nothing_seen,
        )
    }

    /// A list of a known shape (from a checkpoint) for the rows of `batch`.
    pub fn with_shape(
        mut shape: ListShape,
        batch: &Tensor,
        n_members: usize,
        boundary: &Boundary,
    ) -> NeighborList {
        let device = batch.device();
        if shape.outer_capacity == 0 {
            shape.outer_capacity = shape.capacity;
        }
        let n = 3 + shape.cutoffs.len() as i64;
        NeighborList {
            periodic: matches!(boundary, Boundary::Periodic(_)),
            n_members: n_members as i64,
            consts: Constants::new(&shape, batch),
            shape,
            seen: Tensor::zeros([n], (Kind::Int64, device)),
            moved: Tensor::zeros([], (Kind::Double, device)),
        }
    }

    /// Allocate again for the current positions, with room for at least
    /// what earlier updates met (call after an overflow). The row and
    /// inner capacities, which set how the model's sums are blocked, change
    /// only if they were exceeded: a stored list that ran short (or went
    /// stale) is resized without changing any result.
    pub fn grow(
        &mut self,
        positions: &Tensor,
        batch: &Tensor,
        n_members: usize,
        dense: Option<usize>,
        boundary: &Boundary,
    ) -> Result<()> {
        let cutoffs = self.shape.cutoffs.clone();
        let seen = Vec::<i64>::try_from(self.seen.to_device(Device::Cpu))
            .map_err(|e| Error::Invalid(format!("neighbour counts: {e}")))?;
        let rows_short = seen[0] > self.shape.capacity
            || self
                .shape
                .inner_capacities
                .iter()
                .enumerate()
                .any(|(c, &cap)| seen[1 + c] > cap);
        let old = self.shape.clone();
        *self = Self::sized(
            positions, batch, n_members, dense, boundary, &cutoffs, old.skin, &self.seen,
        )?;
        if !rows_short {
            self.set_row_capacities(old.capacity, old.inner_capacities, old.whole_rows);
        } else if old.rows_whole() && self.shape.grid == old.grid {
            // Whole rows cannot run short (they record no row counts):
            // only inner rows did. The rows stay whole.
            let inner = self.shape.inner_capacities.clone();
            self.set_row_capacities(old.capacity, inner, true);
        }
        Ok(())
    }

    /// Set the row and inner capacities (K, K_c) a list was measured with
    /// elsewhere (a checkpoint, a test), and whether its rows were whole
    /// (see [`ListShape::rows_whole`]).
    pub fn set_row_capacities(
        &mut self,
        capacity: i64,
        inner_capacities: Vec<i64>,
        whole_rows: bool,
    ) {
        self.shape.capacity = capacity;
        self.shape.inner_capacities = inner_capacities;
        self.shape.whole_rows = whole_rows;
        self.fit_indices();
    }

    /// Make the index ranges, values and whole-row reverse entries of the
    /// shape as it now is.
    fn fit_indices(&mut self) {
        let r = &self.consts.indices;
        self.consts.indices = Indices::new(&self.shape, r.rows, r.device);
        self.consts.whole = whole_row_reverse(&self.shape, self.consts.dense.as_ref());
    }

    /// The list's reach: cutoff plus skin.
    fn reach(&self) -> f64 {
        self.shape.cutoffs[0] + self.shape.skin
    }

    /// Whether the list keeps a stored (skin) list between builds: cell
    /// grids with a skin (without one, every force call builds its list).
    pub fn stores(&self) -> bool {
        matches!(self.shape.grid, Grid::Cells { .. }) && self.shape.skin > 0.0
    }

    #[allow(clippy::too_many_arguments)]
    fn sized(
        positions: &Tensor,
        batch: &Tensor,
        n_members: usize,
        dense: Option<usize>,
        boundary: &Boundary,
        cutoffs: &[f64],
        skin: f64,
        seen: &Tensor,
    ) -> Result<NeighborList> {
        let cutoff = *cutoffs
            .first()
            .ok_or_else(|| Error::Invalid("no cutoff".into()))?;
        if cutoffs.iter().any(|c| !(c.is_finite() && *c > 0.0))
            || cutoffs.windows(2).any(|w| w[1] > w[0])
        {
            return Err(Error::Invalid(format!(
                "neighbour-list cutoffs {cutoffs:?} Å: expected positive values, the largest first"
            )));
        }
        if !(skin.is_finite() && skin >= 0.0) {
            return Err(Error::Invalid(format!(
                "neighbour-list skin {skin} Å: expected a value of 0 or more"
            )));
        }
        let x = positions.to_kind(Kind::Double);
        let n = x.size()[0];
        let r = n_members as i64;
        let seen_host = Vec::<i64>::try_from(seen.to_device(Device::Cpu))
            .map_err(|e| Error::Invalid(format!("neighbour counts: {e}")))?;
        let room = |measured: i64, seen: i64, extra: i64| {
            (MARGIN * measured.max(seen) as f64).ceil() as i64 + extra
        };
        let row_room = |measured: i64, seen: i64, extra: i64| {
            (ROW_MARGIN * measured.max(seen) as f64).ceil() as i64 + extra
        };
        let periodic = matches!(boundary, Boundary::Periodic(_));
        let mut skin = skin;
        let grid = match (boundary, dense) {
            (Boundary::Free, Some(atoms)) if atoms <= DENSE_MAX_ATOMS => {
                skin = 0.0;
                Grid::Dense {
                    atoms: atoms as i64,
                }
            }
            (Boundary::Periodic(cells), _) => {
                let cells = Cell::all_from_tensor(cells)?;
                for cell in &cells {
                    for (axis, w) in cell.perpendicular_widths().into_iter().enumerate() {
                        if w < cutoff {
                            return Err(Error::Invalid(format!(
                                "a periodic cell's perpendicular width along {} is {w:.3} Å, less than the cutoff ({cutoff} Å); use a larger cell (a supercell)",
                                ["a", "b", "c"][axis]
                            )));
                        }
                        // The stored list reaches no further than a cell is wide.
                        skin = skin.min(w - cutoff);
                    }
                }
                let mut bins = [i64::MAX; 3];
                for cell in &cells {
                    for (b, w) in bins.iter_mut().zip(cell.perpendicular_widths()) {
                        // Bins a tenth wider than the reach where the cell
                        // allows, so a barostat can shrink the cell a little
                        // before the bins are too narrow (an overflow).
                        let b_room = (w / (CELL_MARGIN * (cutoff + skin))).floor() as i64;
                        *b = (*b).min(b_room.max(1));
                    }
                }
                Grid::Cells {
                    bins,
                    max_per_bin: n.max(1),
                }
            }
            (Boundary::Free, _) => {
                let lo = member_extreme(&x, batch, r, "amin");
                let hi = member_extreme(&x, batch, r, "amax");
                let extent = Vec::<f64>::try_from(
                    (hi - lo).amax([0].as_slice(), false).to_device(Device::Cpu),
                )
                .map_err(|e| Error::Invalid(format!("positions: {e}")))?;
                let mut bins = [1; 3];
                for (b, e) in bins.iter_mut().zip(extent) {
                    // Room for the molecule to spread by a third.
                    *b = ((MARGIN * e / (cutoff + skin)).ceil() as i64 + 1).max(1);
                }
                Grid::Cells {
                    bins,
                    max_per_bin: n.max(1),
                }
            }
        };
        let shape = ListShape {
            cutoffs: cutoffs.to_vec(),
            skin,
            grid,
            capacity: 1,
            outer_capacity: 0,
            inner_capacities: vec![1; cutoffs.len() - 1],
            whole_rows: false,
        };
        let mut list = NeighborList {
            consts: Constants::new(&shape, batch),
            shape,
            periodic,
            n_members: r,
            seen: seen.zeros_like(),
            moved: Tensor::zeros([], (Kind::Double, x.device())),
        };
        // Measure: bins first (their count alone), then the stored rows
        // with bins of room enough, then the rows and inner rows.
        let most = |t: &Tensor| t.max().int64_value(&[]);
        if let Grid::Cells { bins, .. } = grid {
            let fullest = most(&list.bin_counts(&x, batch, boundary));
            let max_per_bin = room(fullest, seen_host[list.shape.seen_bin()], 2).min(n.max(1));
            list.shape.grid = Grid::Cells { bins, max_per_bin };
            let c = list.candidates(&x, batch, boundary);
            let (_, within) = list.within(&c, list.reach());
            let widest = most(&within.sum_dim_intlist(1, false, Kind::Int64))
                .max(seen_host[seen_host.len() - 1]);
            list.shape.outer_capacity = ((OUTER_MARGIN * widest as f64).ceil() as i64 + 2).max(1);
        }
        let outer = list.build(&x, batch, boundary);
        let c = list.refine_candidates(outer.as_ref(), &x, batch, boundary);
        let (d2, within) = list.within(&c, cutoff);
        let widest = most(&within.sum_dim_intlist(1, false, Kind::Int64));
        list.shape.capacity = row_room(widest, seen_host[0], 2).max(1);
        let picked = list.pick(&c, &within, list.shape.capacity);
        let (_, inner_counts) =
            list.inner_lists(&d2.gather(1, &picked.picked, false), &picked.mask);
        for (i, widest) in inner_counts.iter().enumerate() {
            list.shape.inner_capacities[i] = row_room(most(widest), seen_host[1 + i], 1).max(1);
        }
        if let Grid::Dense { atoms } = grid {
            // Rows with room for the whole member anyway: compacting them
            // would save the model nothing.
            if list.shape.capacity >= atoms {
                list.shape.capacity = atoms;
                list.shape.whole_rows = true;
            }
        }
        list.fit_indices();
        let _ = list.seen.shallow_clone().fill_(0);
        Ok(list)
    }

    /// Build the list for `positions`: same shapes as allocated, no host
    /// sync; raises the `seen` counts (in place). (A cell grid's stored
    /// list is built and refined at once.)
    pub fn update(&self, positions: &Tensor, batch: &Tensor, boundary: &Boundary) -> Pairs {
        let outer = self.build(positions, batch, boundary);
        self.refine(outer.as_ref(), positions, batch, boundary)
    }

    /// A cell grid's stored list for `positions` (None for a dense grid,
    /// whose candidates are fixed): no host sync; raises the `seen` counts
    /// of bins and stored rows (in place).
    pub fn build(&self, positions: &Tensor, batch: &Tensor, boundary: &Boundary) -> Option<Outer> {
        if !matches!(self.shape.grid, Grid::Cells { .. }) {
            return None;
        }
        let x = positions.to_kind(Kind::Double);
        let n = x.size()[0];
        let ko = self.shape.outer_capacity;
        let opts_i = (Kind::Int64, x.device());
        let c = self.candidates(&x, batch, boundary);
        let (d2, within) = self.within(&c, self.reach());
        let p = self.pick(&c, &within, ko);
        // Rows and inner rows as a refine at these positions will count
        // them, but from all candidates: a stored list that ran short must
        // not hide rows that overflow too (both grow at the same check).
        let mut counts = Vec::new();
        for rc in &self.shape.cutoffs {
            counts.push(
                d2.lt(rc * rc)
                    .logical_and(&c.valid)
                    .sum_dim_intlist(1, false, Kind::Int64)
                    .max(),
            );
        }
        self.raise_rows(&Tensor::stack(&counts, 0));
        // Integer image of each entry relative to the positions as given:
        // the bin offset's image plus the two atoms' wraps.
        let image = match &c.geometry {
            Geometry::Bins {
                image, wrap_cells, ..
            } => {
                let offset = p.picked.floor_divide_scalar(c.cand.size()[1] / 27);
                let img = image.gather(1, &offset.unsqueeze(2).expand([n, ko, 3], false), false);
                let wj = wrap_cells
                    .index_select(0, &p.neighbors.view([-1]))
                    .view([n, ko, 3]);
                Some(
                    (img + wj - wrap_cells.unsqueeze(1))
                        * p.mask.unsqueeze(2).to_kind(Kind::Double),
                )
            }
            _ => None,
        };
        // Canonical order: by neighbour, then image (each component in
        // [-512, 511], far beyond any unwrapped drift); unused entries last.
        let mut key = &p.neighbors * (1i64 << 30);
        if let Some(img) = &image {
            let code = (img.to_kind(Kind::Int64).clamp(-512, 511) + 512) * &self.consts.image_code;
            key += code.sum_dim_intlist(2, false, Kind::Int64);
        }
        let key = key.where_scalarother(&p.mask, i64::MAX);
        let (_, perm) = key.sort_stable(true, 1, false);
        let gather3 = |t: &Tensor| t.gather(1, &perm.unsqueeze(2).expand([n, ko, 3], false), false);
        // New place of each old entry, as a flat index, for the reverse
        // entries (N · Ko, unused, stays).
        let rows_ko = self.consts.indices.get(n).unsqueeze(1) * ko;
        let new_place = Tensor::zeros([n, ko], opts_i).scatter_(
            1,
            &perm,
            &self
                .consts
                .indices
                .get(ko)
                .unsqueeze(0)
                .expand([n, ko], false),
        ) + &rows_ko;
        let new_place = Tensor::cat(
            &[new_place.view([-1]), Tensor::full([1], n * ko, opts_i)],
            0,
        );
        let reverse = new_place
            .index_select(0, &p.reverse.gather(1, &perm, false).view([-1]))
            .view([n, ko]);
        if let Some((fullest_bin, cell_shrank)) = &c.bins_seen {
            self.raise_seen(
                self.shape.seen_bin() as i64,
                &Tensor::stack(
                    &[
                        fullest_bin.shallow_clone(),
                        cell_shrank.to_kind(Kind::Int64),
                    ],
                    0,
                ),
            );
        }
        self.raise_seen(self.seen.size()[0] - 1, &p.found.max().unsqueeze(0));
        Some(Outer {
            neighbors: p.neighbors.gather(1, &perm, false),
            shift: match (image.as_ref().map(gather3), boundary) {
                (Some(image), Boundary::Periodic(cells)) => {
                    Some(image.bmm(&cells.to_kind(Kind::Double).index_select(0, batch)))
                }
                _ => None,
            },
            mask: p.mask.gather(1, &perm, false),
            reverse,
            reference: x.copy(),
        })
    }

    /// The pairs within the cutoff for `positions`, picked from `outer`
    /// (a cell grid's stored list; None builds it first) or from a dense
    /// grid's candidates: no host sync; raises the `seen` row counts and
    /// `moved` (in place).
    pub fn refine(
        &self,
        outer: Option<&Outer>,
        positions: &Tensor,
        batch: &Tensor,
        boundary: &Boundary,
    ) -> Pairs {
        if matches!(self.shape.grid, Grid::Cells { .. }) && outer.is_none() {
            return self.update(positions, batch, boundary);
        }
        if let Some(whole) = &self.consts.whole {
            return self.refine_whole_rows(whole, positions, batch, boundary);
        }
        let x = positions.to_kind(Kind::Double);
        let n = x.size()[0];
        let k = self.shape.capacity;
        let c = self.refine_candidates(outer, &x, batch, boundary);
        let (d2, within) = self.within(&c, self.shape.cutoffs[0]);
        let p = self.pick(&c, &within, k);
        let shifts = match &c.geometry {
            Geometry::Entries { shift } => Some(
                shift.gather(1, &p.picked.unsqueeze(2).expand([n, k, 3], false), false)
                    * p.mask.unsqueeze(2).to_kind(Kind::Double),
            ),
            _ => None,
        };
        let (inner, inner_counts) = self.inner_lists(&d2.gather(1, &p.picked, false), &p.mask);
        let mut found = vec![p.found.shallow_clone()];
        found.extend(inner_counts);
        self.raise_rows(&Tensor::stack(&found, 1).amax([0].as_slice(), false));
        if let Some(o) = outer {
            let d = (&x - &o.reference)
                .square()
                .sum_dim_intlist(1, false, Kind::Double)
                .max();
            let mut m = self.moved.shallow_clone();
            m.copy_(&m.maximum(&d));
        }
        let (inner_slots, inner_masks): (Vec<Tensor>, Vec<Tensor>) = inner.into_iter().unzip();
        Pairs {
            neighbors: p.neighbors,
            shifts,
            mask: p.mask,
            reverse: p.reverse,
            differences: None,
            inner_slots,
            inner_masks,
            far: self.consts.far.shallow_clone(),
            zero: self.consts.zero.shallow_clone(),
        }
    }

    /// [`NeighborList::refine`] of whole rows: entry c of a row is its
    /// member's candidate c, used where within the cutoff, so neighbours
    /// and reverse entries are the candidates and a table made once, and
    /// an update is the distances, the mask and the inner lists (no
    /// compaction; rows cannot overflow).
    fn refine_whole_rows(
        &self,
        reverse: &Tensor,
        positions: &Tensor,
        batch: &Tensor,
        boundary: &Boundary,
    ) -> Pairs {
        let x = positions.to_kind(Kind::Double);
        let (n, k) = (reverse.size()[0], reverse.size()[1]);
        let c = self.candidates(&x, batch, boundary);
        let (d2, mask, differences) = if self.consts.regular {
            // Equal members: row i of member r lists the member's atoms in
            // order, so x_j − x_i is a broadcast of [R, n, 3] (no gather);
            // the distances are those `within` computes, bit for bit.
            let xr = x.view([n / k, k, 3]);
            let d = (xr.unsqueeze(1) - xr.unsqueeze(2)).view([n, k, 3]);
            let (d2, mask) = squared_within(&d, &c.valid, self.shape.cutoffs[0]);
            (d2, mask, Some(d))
        } else {
            let (d2, mask) = self.within(&c, self.shape.cutoffs[0]);
            (d2, mask, None)
        };
        let (inner, inner_counts) = self.inner_lists(&d2, &mask);
        if !inner_counts.is_empty() {
            self.raise_seen(
                1,
                &Tensor::stack(&inner_counts, 1).amax([0].as_slice(), false),
            );
        }
        let (inner_slots, inner_masks): (Vec<Tensor>, Vec<Tensor>) = inner.into_iter().unzip();
        let idx = &self.consts.indices;
        Pairs {
            // Unused entries name the row itself, as the contract says.
            neighbors: c.cand.where_self(&mask, &idx.get(n).unsqueeze(1)),
            shifts: None,
            reverse: reverse.where_self(&mask, &idx.scalar(n * k)),
            mask,
            differences,
            inner_slots,
            inner_masks,
            far: self.consts.far.shallow_clone(),
            zero: self.consts.zero.shallow_clone(),
        }
    }

    /// What ran out of room since the last check, if anything (one small
    /// host copy), and the largest displacement (Å) from a stored list's
    /// positions met since then. When nothing ran out, the record starts
    /// afresh, so what a later [`NeighborList::grow`] makes room for
    /// depends only on the steps since the last check (a continued run,
    /// which starts at a check, grows its lists exactly as an
    /// uninterrupted one).
    pub fn check(&self) -> (Option<String>, f64) {
        let Ok(seen) = Vec::<i64>::try_from(self.seen.to_device(Device::Cpu)) else {
            return (None, 0.0);
        };
        let moved = self.moved.double_value(&[]).sqrt();
        let mut what = Vec::new();
        if seen[0] > self.shape.capacity {
            what.push(format!(
                "{} neighbours in a row (room for {})",
                seen[0], self.shape.capacity
            ));
        }
        if let Grid::Cells { max_per_bin, .. } = self.shape.grid {
            let bin = self.shape.seen_bin();
            if seen[bin] > max_per_bin {
                what.push(format!(
                    "{} atoms in a bin (room for {max_per_bin})",
                    seen[bin]
                ));
            }
            if seen[bin + 1] > 0 {
                what.push("a periodic cell shrank below the list's bins".to_string());
            }
            let stored = seen[seen.len() - 1];
            if stored > self.shape.outer_capacity {
                what.push(format!(
                    "{stored} neighbours within {} Å in the stored list (room for {})",
                    self.reach(),
                    self.shape.outer_capacity
                ));
            }
            if self.stores() && moved > 0.5 * self.shape.skin {
                what.push(format!(
                    "an atom moved {moved:.3} Å since the list was built (half the skin is {} Å)",
                    0.5 * self.shape.skin
                ));
            }
        }
        for (c, &cap) in self.shape.inner_capacities.iter().enumerate() {
            if seen[1 + c] > cap {
                what.push(format!(
                    "{} neighbours within {} Å (room for {cap})",
                    seen[1 + c],
                    self.shape.cutoffs[c + 1]
                ));
            }
        }
        if what.is_empty() {
            let _ = self.seen.shallow_clone().fill_(0);
            let _ = self.moved.shallow_clone().fill_(0.0);
            return (None, moved);
        }
        (Some(what.join(", ")), moved)
    }

    /// Raise `seen[at ..]` to at least `values` ([k] int64), in place on
    /// the device.
    fn raise_seen(&self, at: i64, values: &Tensor) {
        let _ = self
            .seen
            .narrow(0, at, values.size()[0])
            .clamp_min_tensor_(values);
    }

    /// Raise the recorded row counts: `counts` = [rows, inner rows...].
    fn raise_rows(&self, counts: &Tensor) {
        self.raise_seen(0, counts);
    }

    /// The largest displacement (Å) from a stored list's positions met
    /// since the last clean check (one host copy).
    pub fn moved(&self) -> f64 {
        self.moved.double_value(&[]).sqrt()
    }

    /// What ran out of room since the last check, if anything (see
    /// [`NeighborList::check`]).
    pub fn overflow(&self) -> Option<String> {
        self.check().0
    }

    /// Atoms in each bin of a cell grid ([bins of all members]).
    fn bin_counts(&self, x: &Tensor, batch: &Tensor, boundary: &Boundary) -> Tensor {
        let b = self.binning(x, batch, boundary);
        count_bins(&b.global, b.n_bins)
    }

    /// Bin of every atom (global index over members), the number of bins,
    /// each atom's bin coordinates, its wrapped position and wrap in whole
    /// cells, and each atom's cell ([N, 3, 3], periodic).
    fn binning(&self, x: &Tensor, batch: &Tensor, boundary: &Boundary) -> Binning {
        let Grid::Cells { bins, .. } = self.shape.grid else {
            unreachable!("binning is for cell grids")
        };
        let [n0, n1, n2] = bins;
        let nb = &self.consts.bins;
        let r = self.n_members;
        let (bin, xw, wrap_cells, h) = match boundary {
            Boundary::Periodic(cells) => {
                let cells = cells.to_kind(Kind::Double);
                let h = cells.index_select(0, batch);
                let h_inv = lower_triangular_inverse(&cells).index_select(0, batch);
                let f = x.unsqueeze(1).bmm(&h_inv).squeeze_dim(1); // x = f H
                let floor = f.floor();
                let fw = &f - &floor;
                // Clamped both ways: a non-finite position (a blow-up,
                // reported at the next check) must not index outside the grid.
                let bin = (&fw * nb.to_kind(Kind::Double))
                    .floor()
                    .to_kind(Kind::Int64)
                    .clamp_min(0)
                    .clamp_max_tensor(&(nb - 1));
                let xw = fw.unsqueeze(1).bmm(&h).squeeze_dim(1);
                // Non-finite wraps (a blow-up) are zeroed: they only feed
                // images of a list the next check throws away.
                let wrap = (-floor).nan_to_num(0.0, 0.0, 0.0);
                (bin, xw, Some(wrap), Some(h))
            }
            Boundary::Free => {
                let lo = member_extreme(x, batch, r, "amin").index_select(0, batch);
                let bin = ((x - lo) / self.reach())
                    .floor()
                    .to_kind(Kind::Int64)
                    .clamp_min(0)
                    .clamp_max_tensor(&(nb - 1));
                (bin, x.shallow_clone(), None, None)
            }
        };
        let per_member = n0 * n1 * n2;
        let lin = (bin.select(-1, 0) * n1 + bin.select(-1, 1)) * n2 + bin.select(-1, 2);
        Binning {
            global: batch * per_member + lin,
            n_bins: r * per_member,
            bin,
            xw,
            wrap_cells,
            h,
        }
    }

    /// The candidates a refine filters: a stored list's entries, or a dense
    /// grid's fixed candidates.
    fn refine_candidates(
        &self,
        outer: Option<&Outer>,
        x: &Tensor,
        batch: &Tensor,
        boundary: &Boundary,
    ) -> Candidates {
        let Some(o) = outer else {
            return self.candidates(x, batch, boundary);
        };
        let shift = o.shift.as_ref().map(|s| s.shallow_clone());
        Candidates {
            cand: o.neighbors.shallow_clone(),
            padded: false,
            valid: o.mask.shallow_clone(),
            xw: x.shallow_clone(),
            geometry: match shift {
                Some(shift) => Geometry::Entries { shift },
                None => Geometry::Plain,
            },
            reverse: Reverse::Entries {
                flat: o.reverse.shallow_clone(),
            },
            bins_seen: None,
        }
    }

    fn candidates(&self, x: &Tensor, batch: &Tensor, boundary: &Boundary) -> Candidates {
        let device = x.device();
        let n = x.size()[0];
        let opts_i = (Kind::Int64, device);
        match self.shape.grid {
            Grid::Dense { .. } => {
                let (cand, valid, local) = self
                    .consts
                    .dense
                    .as_ref()
                    .expect("dense tables of a dense grid");
                Candidates {
                    cand: cand.shallow_clone(),
                    padded: false,
                    valid: valid.shallow_clone(),
                    xw: x.shallow_clone(),
                    geometry: Geometry::Plain,
                    reverse: Reverse::Dense {
                        local: local.shallow_clone(),
                    },
                    bins_seen: None,
                }
            }
            Grid::Cells {
                bins,
                max_per_bin: m,
            } => {
                let b = self.binning(x, batch, boundary);
                let nb = &self.consts.bins;
                let [_, n1, n2] = bins;
                let per_member = bins.iter().product::<i64>();
                let bin_counts = count_bins(&b.global, b.n_bins);
                // Rank of each atom within its bin: stable sort by bin.
                let (sorted, order) = b.global.sort_stable(true, 0, false);
                let starts = bin_counts.cumsum(0, Kind::Int64) - &bin_counts;
                let rows = self.consts.indices.get(n);
                let rank_sorted = &rows - starts.index_select(0, &sorted);
                let rank =
                    Tensor::zeros([n], opts_i).index_put(&[Some(order)], &rank_sorted, false);
                // Bin table [n_bins, M] of atom indices, N where empty; atoms
                // past the capacity overwrite the last slot (`seen` says so).
                let table = Tensor::full([b.n_bins * m], n, opts_i)
                    .index_put(&[Some(&b.global * m + rank.clamp_max(m - 1))], &rows, false)
                    .view([b.n_bins, m]);
                let nbr = b.bin.unsqueeze(1) + &self.consts.offsets; // [N,27,3]
                let (wrapped, image, bin_ok) = if self.periodic {
                    let wrapped = nbr.remainder_tensor(nb);
                    let image = (&nbr - &wrapped).floor_divide(nb);
                    (wrapped, image, Tensor::ones([n, 27], (Kind::Bool, device)))
                } else {
                    let ok = nbr.ge(0).logical_and(&nbr.lt_tensor(nb)).all_dim(-1, false);
                    let wrapped = nbr.clamp_min(0).clamp_max_tensor(&(nb - 1));
                    (wrapped, nbr.zeros_like(), ok)
                };
                let lin = (wrapped.select(-1, 0) * n1 + wrapped.select(-1, 1)) * n2
                    + wrapped.select(-1, 2);
                let nbr_global = batch.unsqueeze(1) * per_member + lin; // [N,27]
                let c = 27 * m;
                let cand = table.index_select(0, &nbr_global.view([-1])).view([n, c]);
                let per_offset = |t: Tensor| {
                    let mut size = t.size();
                    size.insert(2, m);
                    let mut flat = size.clone();
                    flat.remove(2);
                    flat[1] = c;
                    t.unsqueeze(2)
                        .expand(size.as_slice(), false)
                        .reshape(flat.as_slice())
                };
                let image_zero = per_offset(image.eq(0).all_dim(-1, false));
                let self_pair = cand.eq_tensor(&rows.unsqueeze(1)).logical_and(&image_zero);
                let valid = cand
                    .lt(n)
                    .logical_and(&per_offset(bin_ok))
                    .logical_and(&self_pair.logical_not());
                // Image shifts per bin offset; distances between wrapped
                // positions (`build` turns a kept entry's bin image and the
                // two atoms' wraps into its image for the positions as given).
                let geometry = match (&b.h, b.wrap_cells) {
                    (Some(h), Some(wrap_cells)) => {
                        let image = image.to_kind(Kind::Double);
                        Geometry::Bins {
                            image_shift: image.bmm(h),
                            image,
                            wrap_cells,
                        }
                    }
                    _ => Geometry::Plain,
                };
                let cell_shrank = match boundary {
                    Boundary::Periodic(cells) => {
                        // The distance between the planes f_k = 0 and 1 is
                        // 1 / |column k of H⁻¹|.
                        let widths = lower_triangular_inverse(&cells.to_kind(Kind::Double))
                            .square()
                            .sum_dim_intlist(1, false, Kind::Double)
                            .sqrt()
                            .reciprocal();
                        (widths / nb.to_kind(Kind::Double)).lt(self.reach()).any()
                    }
                    Boundary::Free => Tensor::zeros([], (Kind::Bool, device)),
                };
                Candidates {
                    cand,
                    padded: true,
                    valid,
                    xw: b.xw,
                    geometry,
                    reverse: Reverse::Cells {
                        m,
                        slot: rank.clamp_max(m - 1),
                    },
                    bins_seen: Some((bin_counts.max(), cell_shrank)),
                }
            }
        }
    }

    /// Squared distance of every candidate ([N, C] float64) and whether it
    /// lies within `cutoff` ([N, C] bool).
    fn within(&self, c: &Candidates, cutoff: f64) -> (Tensor, Tensor) {
        let n = c.xw.size()[0];
        let width = c.cand.size()[1];
        let xj = if c.padded {
            with_padding_row(&c.xw)
        } else {
            c.xw.shallow_clone()
        }
        .index_select(0, &c.cand.view([-1]));
        let d = match &c.geometry {
            // [N, 27, M, 3]: each bin offset's image shift broadcast over its slots.
            Geometry::Bins { image_shift, .. } => {
                xj.view([n, 27, width / 27, 3]) + image_shift.unsqueeze(2) - c.xw.view([n, 1, 1, 3])
            }
            // The order of `Pairs::vectors`: (x_j − x_i) + shift.
            Geometry::Entries { shift } => xj.view([n, width, 3]) - c.xw.unsqueeze(1) + shift,
            Geometry::Plain => xj.view([n, width, 3]) - c.xw.unsqueeze(1),
        };
        squared_within(&d, &c.valid, cutoff)
    }

    /// Keep the first `k` candidates within the cutoff of each row, in
    /// candidate order (a running count gives each its entry; no sort), and
    /// find each kept entry's reverse entry.
    fn pick(&self, c: &Candidates, within: &Tensor, k: i64) -> Picked {
        let n = c.cand.size()[0];
        let width = c.cand.size()[1];
        let opts_i = (Kind::Int64, c.cand.device());
        let idx = &self.consts.indices;
        // [N, C] running count of candidates within the cutoff: a kept
        // candidate's entry is its count − 1, and the last column counts
        // the row's candidates within the cutoff.
        let running = running_count(within);
        let found = if width > 0 {
            running.select(1, width - 1)
        } else {
            Tensor::zeros([n], opts_i)
        };
        let keep = within.logical_and(&running.le(k));
        // Column (entry + 1) of each kept candidate; the others go to a
        // spare column 0.
        let column = running.where_self(&keep, &idx.scalar(0));
        // The candidate behind each entry, [N, K]: all per-entry
        // quantities are gathered at this size, not per candidate. Unused
        // entries hold 0, or for a dense grid the row's own candidate, so
        // that they name the row itself as the contract asks.
        let mut unused = match &c.reverse {
            // (A new tensor: the scatter writes into it.)
            Reverse::Dense { local } => local.unsqueeze(1).repeat([1, k + 1]),
            _ => Tensor::zeros([n, k + 1], opts_i),
        };
        let picked = unused
            .scatter_(
                1,
                &column,
                &idx.get(width).unsqueeze(0).expand([n, width], false),
            )
            .narrow(1, 1, k);
        let mask = first_slots(&found, &idx.get(k));
        let rows = idx.get(n);
        let neighbors = match &c.reverse {
            Reverse::Dense { .. } => c.cand.gather(1, &picked, false),
            _ => c
                .cand
                .gather(1, &picked, false)
                .where_self(&mask, &rows.unsqueeze(1)),
        };
        // Reverse entry: the entry the neighbour's row gave the candidate
        // that is this pair seen from the neighbour, if it kept it.
        let flat_entry = (idx.entry_base(k) + &running).where_self(&keep, &idx.scalar(n * k));
        let select = |at: Tensor| {
            flat_entry
                .view([-1])
                .index_select(0, &at.view([-1]))
                .view([n, k])
        };
        let reverse = match &c.reverse {
            // An unused entry names the row itself, whose own candidate is
            // never kept: N · K already.
            Reverse::Dense { local } => select(&neighbors * width + local.unsqueeze(1)),
            Reverse::Cells { m, slot } => select(
                &neighbors * width + (26 - picked.floor_divide_scalar(*m)) * *m + slot.unsqueeze(1),
            )
            .where_self(&mask, &idx.scalar(n * k)),
            Reverse::Entries { flat } => {
                let f = flat.gather(1, &picked, false);
                let ok = mask.logical_and(&f.lt(n * width));
                select(f.clamp_max(n * width - 1)).where_self(&ok, &idx.scalar(n * k))
            }
        };
        Picked {
            neighbors,
            mask,
            reverse,
            picked,
            found,
        }
    }

    /// The inner slot lists (slots, masks) of the entries with squared
    /// distances `d2` in use where `mask` ([N, K] each), and each row's
    /// count within each inner cutoff ([N] each, uncapped).
    #[allow(clippy::type_complexity)]
    fn inner_lists(&self, d2: &Tensor, mask: &Tensor) -> (Vec<(Tensor, Tensor)>, Vec<Tensor>) {
        let mut lists = Vec::new();
        let mut counts = Vec::new();
        if self.shape.cutoffs.len() < 2 {
            return (lists, counts);
        }
        let (n, k) = (mask.size()[0], mask.size()[1]);
        let opts_i = (Kind::Int64, mask.device());
        let idx = &self.consts.indices;
        for (ci, &cap) in self.shape.inner_capacities.iter().enumerate() {
            let rc = self.shape.cutoffs[ci + 1];
            let inside = d2.lt(rc * rc).logical_and(mask);
            // Column (slot + 1) of each entry inside, spare column 0 for the
            // others; entries past the capacity land in columns the narrow
            // drops (the count says so), which costs fewer passes than
            // masking them out.
            let running = running_count(&inside);
            let column = running.where_self(&inside, &idx.scalar(0));
            let entries = idx.get(k).unsqueeze(0).expand([n, k], false);
            let slots = Tensor::zeros([n, k.max(cap) + 1], opts_i)
                .scatter_(1, &column, &entries)
                .narrow(1, 1, cap)
                .contiguous();
            // Entries inside per row: the running count's last column.
            let found = running.select(1, k - 1);
            lists.push((slots, first_slots(&found, &idx.get(cap))));
            counts.push(found);
        }
        (lists, counts)
    }
}

/// What [`NeighborList::binning`] finds.
struct Binning {
    global: Tensor,
    n_bins: i64,
    bin: Tensor,
    /// [N, 3] float64: positions wrapped into the cell (periodic), as given otherwise.
    xw: Tensor,
    /// [N, 3] float64 whole cells added by the wrap (periodic).
    wrap_cells: Option<Tensor>,
    /// [N, 3, 3] float64 each atom's cell (periodic).
    h: Option<Tensor>,
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::{running_count, Grid, Indices, ListShape};

    fn shape() -> ListShape {
        ListShape {
            cutoffs: vec![5.2, 3.5],
            skin: 0.0,
            grid: Grid::Dense { atoms: 22 },
            capacity: 21,
            outer_capacity: 21,
            inner_capacities: vec![9],
            whole_rows: false,
        }
    }

    /// Both ways of counting (many short rows by the transpose, others
    /// along the rows) give the running count.
    #[test]
    fn running_counts_count_along_rows() {
        tch::manual_seed(9);
        for (n, w) in [(1100, 2), (10, 5), (600, 1), (3, 0)] {
            let mask = Tensor::rand([n, w], (Kind::Float, Device::Cpu)).lt(0.4);
            let want = mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
            let got = running_count(&mask);
            assert!(got.is_contiguous() && got.equal(&want), "[{n}, {w}]");
        }
    }

    /// The shape's ranges, values and entry bases are what they stand for,
    /// and lengths or values it did not foresee are made on the spot.
    #[test]
    fn index_tables_answer_foreseen_and_unforeseen_sizes() {
        let idx = Indices::new(&shape(), 44, Device::Cpu);
        for len in [44, 21, 9, 22, 5] {
            assert!(
                idx.get(len)
                    .equal(&Tensor::arange(len, (Kind::Int64, Device::Cpu))),
                "0..{len}"
            );
        }
        for v in [0, 21, 9, 44 * 21, 7] {
            assert_eq!(idx.scalar(v).size(), Vec::<i64>::new());
            assert_eq!(idx.scalar(v).int64_value(&[]), v);
        }
        for k in [21, 4] {
            let want = Tensor::arange(44, (Kind::Int64, Device::Cpu)).unsqueeze(1) * k - 1;
            assert!(idx.entry_base(k).equal(&want), "bases of k = {k}");
        }
    }
}
