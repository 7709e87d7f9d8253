//! Neighbour lists on the device, for free and periodic members, built by
//! binning (an O(N) cell list) with every shape fixed, so an update is
//! capturable in a CUDA graph and never waits for the host.
//!
//! As in jax-md's partition module: [`NeighborList::allocate`] runs on the
//! host once (it looks at the data to fix the number of bins and the
//! capacities, per bin and per atom); [`NeighborList::update`] rebuilds the
//! list for new positions with the same shapes and raises a device-side
//! overflow flag when a capacity was exceeded. The flag is read where
//! observables are pulled ([`NeighborList::overflowed`]); an overflowed
//! list must be reallocated (never used: pairs would be missing).
//!
//! Pairs never cross members. The list is full (each pair appears for both
//! atoms). For atom i, entry k names atom j = `neighbors[i, k]` and a
//! vector `shifts[i, k]` such that x_j − x_i + shift is the pair vector of
//! the image within the cutoff, with x the positions as given (unwrapped).
//!
//! Binning: periodic members bin their wrapped fractional coordinates, with
//! nb_k = floor(w_k / cutoff) bins along lattice direction k (w_k the
//! perpendicular width), so every image within the cutoff lies in one of
//! the 27 neighbouring bins; the bin offset gives the image, so a small
//! cell's several images of one atom are distinct entries. Free members bin
//! x − (the member's lowest corner) in cubes of the cutoff, clamped to the
//! grid fixed at allocation: an atom beyond it falls into an edge bin,
//! which keeps every pair findable (at worst it overflows that bin).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::system::cell::Cell;

/// Spare room in the capacities chosen at allocation.
const MARGIN: f64 = 1.3;

/// The boundary shared by the members of a batch.
#[derive(Debug)]
pub enum Boundary<'a> {
    /// Isolated molecules.
    Free,
    /// One cell per member: [R, 3, 3], rows a, b, c (Å).
    Periodic(&'a Tensor),
}

#[derive(Debug)]
pub struct NeighborList {
    pub cutoff: f64,
    n_members: i64,
    /// Bins per member along each axis.
    bins: [i64; 3],
    /// Atoms a bin holds.
    pub max_per_bin: i64,
    /// Neighbours an atom holds.
    pub max_neighbors: i64,
    periodic: bool,
    /// [N, K] int64: neighbour atom, or N where there is none.
    pub neighbors: Tensor,
    /// [N, K, 3] float64 (Å).
    pub shifts: Tensor,
    /// [N, K] bool: entries in use.
    pub mask: Tensor,
    /// [] bool: a capacity was exceeded in the last update.
    pub overflow: Tensor,
}

/// `rows` [N, 3] with a row of zeros appended, so that the padding index N
/// of a neighbour table selects something harmless (masked out after).
pub fn with_padding_row(rows: &Tensor) -> Tensor {
    Tensor::cat(
        &[rows.shallow_clone(), rows.zeros_like().narrow(0, 0, 1)],
        0,
    )
}

/// The 27 bin offsets (−1, 0, 1)³, [27, 3] int64.
fn offsets(device: Device) -> Tensor {
    let v: Vec<i64> = (0..27)
        .flat_map(|i| [i / 9 - 1, (i / 3) % 3 - 1, i % 3 - 1])
        .collect();
    Tensor::from_slice(&v).view([27, 3]).to_device(device)
}

impl NeighborList {
    /// Fix the bins and capacities for `positions` ([N, 3], any float kind)
    /// of `n_members` members (`batch` [N] int64, each member's atoms
    /// contiguous or not) within `cutoff` Å, and build the list. Copies a few
    /// numbers to the host.
    pub fn allocate(
        positions: &Tensor,
        batch: &Tensor,
        n_members: usize,
        boundary: &Boundary,
        cutoff: f64,
    ) -> Result<NeighborList> {
        if !(cutoff.is_finite() && cutoff > 0.0) {
            return Err(Error::Invalid(format!("neighbour-list cutoff {cutoff} Å")));
        }
        let x = positions.to_kind(Kind::Double);
        let r = n_members as i64;
        let (bins, periodic) = match boundary {
            Boundary::Periodic(cells) => {
                let mut bins = [i64::MAX; 3];
                for cell in Cell::all_from_tensor(cells)? {
                    for (b, w) in bins.iter_mut().zip(cell.perpendicular_widths()) {
                        *b = (*b).min(((w / cutoff).floor() as i64).max(1));
                    }
                }
                (bins, true)
            }
            Boundary::Free => {
                let lo = Tensor::zeros([r, 3], (Kind::Double, x.device()))
                    .index_reduce(0, batch, &x, "amin", false);
                let hi = Tensor::zeros([r, 3], (Kind::Double, x.device()))
                    .index_reduce(0, batch, &x, "amax", false);
                let extent = Vec::<f64>::try_from(
                    (hi - lo).amax([0].as_slice(), false).to_device(Device::Cpu),
                )
                .map_err(|e| Error::Invalid(format!("positions: {e}")))?;
                let mut bins = [1; 3];
                for (b, e) in bins.iter_mut().zip(extent) {
                    // Room for the molecule to spread by a third.
                    *b = ((MARGIN * e / cutoff).ceil() as i64 + 1).max(1);
                }
                (bins, false)
            }
        };
        let n = x.size()[0];
        let mut nl = NeighborList {
            cutoff,
            n_members: r,
            bins,
            max_per_bin: n.max(1),
            max_neighbors: 0,
            periodic,
            neighbors: Tensor::zeros([0], (Kind::Int64, x.device())),
            shifts: Tensor::zeros([0], (Kind::Double, x.device())),
            mask: Tensor::zeros([0], (Kind::Bool, x.device())),
            overflow: Tensor::zeros([], (Kind::Bool, x.device())),
        };
        // Measure, then size the capacities with some room and build.
        let (bin_counts, neighbor_counts) = nl.counts(&x, batch, boundary);
        let most = |t: &Tensor| t.max().int64_value(&[]) as f64;
        nl.max_per_bin = ((MARGIN * most(&bin_counts)).ceil() as i64 + 2).min(n.max(1));
        nl.max_neighbors = ((MARGIN * most(&neighbor_counts)).ceil() as i64 + 4).max(1);
        nl.update(&x, batch, boundary);
        Ok(nl)
    }

    /// Atoms per bin and neighbours per atom, uncapped (allocation only).
    fn counts(&self, x: &Tensor, batch: &Tensor, boundary: &Boundary) -> (Tensor, Tensor) {
        let built = self.build(x, batch, boundary, None);
        (
            built.bin_counts,
            built.within.sum_dim_intlist(1, false, Kind::Int64),
        )
    }

    /// Rebuild the list for new positions: same shapes, no host sync. Sets
    /// `overflow` when a bin or an atom ran out of room.
    pub fn update(&mut self, positions: &Tensor, batch: &Tensor, boundary: &Boundary) {
        let x = positions.to_kind(Kind::Double);
        let k = self.max_neighbors;
        let b = self.build(&x, batch, boundary, Some(k));
        self.neighbors = b.neighbors.expect("capped build");
        self.shifts = b.shifts.expect("capped build");
        self.mask = b.mask.expect("capped build");
        let mut overflow = b
            .bin_counts
            .max()
            .gt(self.max_per_bin)
            .logical_or(&b.within.sum_dim_intlist(1, false, Kind::Int64).max().gt(k));
        if let Boundary::Periodic(cells) = boundary {
            // A cell that shrank (a barostat) below bins of the cutoff's
            // width would hide pairs: that is an overflow too. The distance
            // between the planes f_k = 0 and 1 is 1 / |column k of H⁻¹|.
            let inv = cells.to_kind(Kind::Double).inverse();
            let widths = inv
                .square()
                .sum_dim_intlist(1, false, Kind::Double)
                .sqrt()
                .reciprocal();
            let bins = Tensor::from_slice(&self.bins)
                .to_device(x.device())
                .to_kind(Kind::Double);
            overflow = overflow.logical_or(&(widths / bins).lt(self.cutoff).any());
        }
        self.overflow = overflow;
    }

    /// Whether the last update overflowed (one host copy).
    pub fn overflowed(&self) -> bool {
        self.overflow.int64_value(&[]) != 0
    }

    fn build(&self, x: &Tensor, batch: &Tensor, boundary: &Boundary, cap: Option<i64>) -> Built {
        let device = x.device();
        let n = x.size()[0];
        let [n0, n1, n2] = self.bins;
        let per_member = n0 * n1 * n2;
        let nb = Tensor::from_slice(&self.bins).to_device(device);
        let opts_i = (Kind::Int64, device);
        // Bin of every atom, positions used for distances, and each atom's
        // wrap offset (lattice vector from x to the wrapped position).
        let (bin, xw, cells_of_atom) = match boundary {
            Boundary::Periodic(cells) => {
                let cells = cells.to_kind(Kind::Double);
                // One inverse per member, then per atom: [N, 3, 3].
                let h = cells.index_select(0, batch);
                let h_inv = cells.inverse().index_select(0, batch);
                let f = x.unsqueeze(1).bmm(&h_inv).squeeze_dim(1); // x = f H
                let fw = &f - f.floor();
                let bin = (&fw * nb.to_kind(Kind::Double))
                    .floor()
                    .to_kind(Kind::Int64)
                    .clamp_max_tensor(&(&nb - 1));
                let xw = fw.unsqueeze(1).bmm(&h).squeeze_dim(1);
                (bin, xw, Some(h))
            }
            Boundary::Free => {
                let lo = Tensor::zeros([self.n_members, 3], (Kind::Double, device))
                    .index_reduce(0, batch, x, "amin", false)
                    .index_select(0, batch);
                let bin = ((x - lo) / self.cutoff)
                    .floor()
                    .to_kind(Kind::Int64)
                    .clamp_min(0)
                    .clamp_max_tensor(&(&nb - 1));
                (bin, x.shallow_clone(), None)
            }
        };
        let lin = |b: &Tensor| (b.select(-1, 0) * n1 + b.select(-1, 1)) * n2 + b.select(-1, 2);
        let global = batch * per_member + lin(&bin); // [N]
        let n_bins = self.n_members * per_member;
        let bin_counts = global.bincount::<Tensor>(None, n_bins);
        // Rank of each atom within its bin: stable sort by bin.
        let (sorted, order) = global.sort_stable(true, 0, false);
        let starts = bin_counts.cumsum(0, Kind::Int64) - &bin_counts;
        let rank_sorted = Tensor::arange(n, opts_i) - starts.index_select(0, &sorted);
        let rank = Tensor::zeros([n], opts_i).index_put(&[Some(order)], &rank_sorted, false);
        let m = self.max_per_bin;
        // Bin table [n_bins, M] of atom indices, N where empty; atoms past
        // the capacity overwrite the last slot (the overflow flag says so).
        let table = Tensor::full([n_bins * m], n, opts_i)
            .index_put(
                &[Some(&global * m + rank.clamp_max(m - 1))],
                &Tensor::arange(n, opts_i),
                false,
            )
            .view([n_bins, m]);
        // The 27 neighbouring bins of every atom.
        let nbr = bin.unsqueeze(1) + offsets(device); // [N,27,3]
        let (wrapped, image, bin_ok) = if self.periodic {
            let wrapped = nbr.remainder_tensor(&nb);
            let image = (&nbr - &wrapped).floor_divide(&nb);
            (wrapped, image, Tensor::ones([n, 27], (Kind::Bool, device)))
        } else {
            let ok = nbr
                .ge(0)
                .logical_and(&nbr.lt_tensor(&nb))
                .all_dim(-1, false);
            let wrapped = nbr.clamp_min(0).clamp_max_tensor(&(&nb - 1));
            (wrapped, nbr.zeros_like(), ok)
        };
        let nbr_global = batch.unsqueeze(1) * per_member + lin(&wrapped); // [N,27]
        let c = 27 * m;
        let cand = table.index_select(0, &nbr_global.view([-1])).view([n, c]); // [N,C]
                                                                               // Image shifts of each candidate, in Å: image · H.
        let shift = match &cells_of_atom {
            Some(h) => image.to_kind(Kind::Double).bmm(h), // [N,27,3]
            None => Tensor::zeros([n, 27, 3], (Kind::Double, device)),
        };
        let shift = shift
            .unsqueeze(2)
            .expand([n, 27, m, 3], false)
            .reshape([n, c, 3]);
        let image_zero = image
            .eq(0)
            .all_dim(-1, false)
            .unsqueeze(2)
            .expand([n, 27, m], false)
            .reshape([n, c]);
        let bin_ok = bin_ok
            .unsqueeze(2)
            .expand([n, 27, m], false)
            .reshape([n, c]);
        let padded = with_padding_row(&xw);
        let xj = padded.index_select(0, &cand.view([-1])).view([n, c, 3]);
        let d = &xj + &shift - xw.unsqueeze(1);
        let self_pair = cand
            .eq_tensor(&Tensor::arange(n, opts_i).unsqueeze(1))
            .logical_and(&image_zero);
        let within = d
            .square()
            .sum_dim_intlist(-1, false, Kind::Double)
            .lt(self.cutoff * self.cutoff)
            .logical_and(&cand.lt(n))
            .logical_and(&bin_ok)
            .logical_and(&self_pair.logical_not());
        let Some(k) = cap else {
            return Built {
                bin_counts,
                within,
                neighbors: None,
                shifts: None,
                mask: None,
            };
        };
        // Keep the first K candidates in use, in candidate order.
        let key = Tensor::arange(c, opts_i)
            .unsqueeze(0)
            .expand([n, c], false)
            .where_self(&within, &Tensor::full([1], c, opts_i));
        let (sorted_key, _) = key.sort(1, false);
        let k_eff = k.min(c);
        let first = sorted_key.narrow(1, 0, k_eff);
        let mask = first.lt(c);
        let pick = first.clamp_max(c - 1);
        let neighbors = cand
            .gather(1, &pick, false)
            .where_self(&mask, &Tensor::full([1], n, opts_i));
        // Shifts relative to the positions as given: the wrapped pair
        // vector is xw_j + s − xw_i = x_j − x_i + s + (w_j − w_i).
        let wrap = &xw - x; // [N,3]
        let wrap_padded = with_padding_row(&wrap);
        let s = shift.gather(1, &pick.unsqueeze(2).expand([n, k_eff, 3], false), false);
        let wj = wrap_padded
            .index_select(0, &neighbors.view([-1]))
            .view([n, k_eff, 3]);
        let shifts = (s + wj - wrap.unsqueeze(1)) * mask.unsqueeze(2).to_kind(Kind::Double);
        let (neighbors, shifts, mask) = if k_eff < k {
            let pad = k - k_eff;
            (
                Tensor::cat(&[neighbors, Tensor::full([n, pad], n, opts_i)], 1),
                Tensor::cat(
                    &[shifts, Tensor::zeros([n, pad, 3], (Kind::Double, device))],
                    1,
                ),
                Tensor::cat(&[mask, Tensor::zeros([n, pad], (Kind::Bool, device))], 1),
            )
        } else {
            (neighbors, shifts, mask)
        };
        Built {
            bin_counts,
            within,
            neighbors: Some(neighbors),
            shifts: Some(shifts),
            mask: Some(mask),
        }
    }
}

struct Built {
    bin_counts: Tensor,
    within: Tensor,
    neighbors: Option<Tensor>,
    shifts: Option<Tensor>,
    mask: Option<Tensor>,
}
