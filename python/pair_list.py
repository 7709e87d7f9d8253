"""What the engine hands a v2 model (models/README.md, "Interface v2: pairs from
the engine"), built in plain PyTorch: a reference for checks and benchmarks,
and an example for calling or wrapping a v2 model from Python.

    pairs = build_pairs(positions, batch, model.cutoffs(), cells=None)
    vectors = pairs["vectors"].requires_grad_()
    e = model.forward_pairs(atomic_numbers, batch, pairs["neighbors"], vectors,
                            pairs["mask"], pairs["inner_slots"], pairs["inner_masks"])
    (g,) = torch.autograd.grad(e.sum(), vectors)
    forces = forces_from_vector_grad(g, pairs["neighbors"], pairs["mask"])
    virial = virial_from_vector_grad(g, vectors, pairs["mask"], batch, len(e))

or simply `energies, forces = energies_and_forces(model, z, x, batch, cells)`
(prepared=True: prepare() + forward_pairs_prepared, the engine's static path).

build_pairs is brute force over all atom pairs of each structure and every
periodic image that can lie within the cutoff (small cells need several
images; an atom can see images of itself), in float64; the vectors are
rounded once to the model's dtype, as the engine does. It is O(N^2) per
structure: fine for checks (a 1,000-atom water box takes about 2 s), not
for production (the engine uses a cell list on the device).
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch


def _images(cell: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Integer image shifts n (rows [n_a, n_b, n_c]) that can bring two atoms
    with fractional coordinates in [0, 1) within `cutoff`: |n_x| <=
    ceil(cutoff / h_x), h_x the distance between lattice planes x."""
    volume = float(torch.det(cell).abs())
    a, b, c = cell
    heights = [volume / float(torch.linalg.cross(b, c).norm()),
               volume / float(torch.linalg.cross(c, a).norm()),
               volume / float(torch.linalg.cross(a, b).norm())]
    reps = [int(math.ceil(cutoff / h)) for h in heights]
    ranges = [torch.arange(-r, r + 1, dtype=torch.float64) for r in reps]
    return torch.cartesian_prod(*ranges).view(-1, 3)


def _structure_pairs(x: torch.Tensor, cell: Optional[torch.Tensor],
                     cutoff: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (i, j, vector) with |vector| < cutoff in one structure (local atom
    indices): vector = x_j - x_i + n . cell, i == j only for n != 0."""
    n = x.shape[0]
    if cell is None:
        shifts = torch.zeros(1, 3, dtype=torch.float64)
        xw = x
    else:
        # wrap into the cell: vectors between wrapped positions differ from
        # x_j - x_i by whole lattice vectors, so they are still x_j - x_i + shift
        frac = x @ torch.linalg.inv(cell)
        xw = x - torch.floor(frac) @ cell
        shifts = _images(cell, cutoff) @ cell
    ii, jj, vv = [], [], []
    for shift in shifts:
        vec = xw.unsqueeze(0) - xw.unsqueeze(1) + shift  # [i, j, 3]
        keep = (vec * vec).sum(2) < cutoff * cutoff
        if not bool(shift.abs().sum() > 0):
            keep &= ~torch.eye(n, dtype=torch.bool)
        i, j = torch.nonzero(keep, as_tuple=True)
        ii.append(i)
        jj.append(j)
        vv.append(vec[i, j])
    return torch.cat(ii), torch.cat(jj), torch.cat(vv)


def _rows(owner: torch.Tensor, n_rows: int, capacity: Optional[int],
          what: str) -> Tuple[torch.Tensor, int]:
    """Column of each item in its row (items stay in their order) and the row
    capacity (the longest row, or `capacity`, which must be at least that)."""
    counts = torch.bincount(owner, minlength=n_rows)
    longest = int(counts.max()) if n_rows else 0
    if capacity is None:
        capacity = longest
    elif capacity < longest:
        raise ValueError(f"{what} capacity {capacity} < longest row {longest}")
    order = torch.argsort(owner, stable=True)
    first = torch.cumsum(counts, 0) - counts
    col = torch.empty_like(owner)
    col[order] = torch.arange(len(owner)) - first[owner[order]]
    return col, capacity


def build_pairs(positions: torch.Tensor, batch: torch.Tensor, cutoffs: Sequence[float],
                cells=None, capacity: Optional[int] = None,
                inner_capacity: Optional[int] = None, skin: float = 0.0,
                dtype: torch.dtype = torch.float32) -> Dict[str, object]:
    """The v2 inputs for `positions` [N, 3] (Angstrom) and `batch` [N].

    cells: None (isolated structures), or per structure the rows a, b, c of
    its periodic cell ([S, 3, 3], or a list of [3, 3] or None for an isolated
    one). Every entry with |v| < cutoffs[0] + skin is
    listed (skin > 0 adds entries beyond the cutoff, as a Verlet skin does);
    inner range c lists the entries with |v| < cutoffs[c + 1] + skin.
    capacity / inner_capacity: K and K_c (default: the longest row). Returns
    neighbors int64[N, K], vectors dtype[N, K, 3], mask bool[N, K],
    inner_slots [int64[N, K_c]], inner_masks [bool[N, K_c]]. Unused entries:
    neighbors = i, vectors = (2 cutoffs[0], 0, 0), mask False; unused slots:
    0, masked. Entries of a row are ordered by image, then by neighbour.
    """
    x = positions.detach().to(torch.float64).cpu()
    batch = batch.detach().to(torch.long).cpu()
    n = x.shape[0]
    n_struct = int(batch.max()) + 1 if n else 0
    ii, jj, vv = [], [], []
    for s in range(n_struct):
        atoms = torch.nonzero(batch == s).flatten()
        cell = None if cells is None or cells[s] is None else \
            cells[s].detach().to(torch.float64).cpu()
        i, j, v = _structure_pairs(x[atoms], cell, cutoffs[0] + skin)
        ii.append(atoms[i])
        jj.append(atoms[j])
        vv.append(v)
    i = torch.cat(ii)
    j = torch.cat(jj)
    v = torch.cat(vv)
    col, k = _rows(i, n, capacity, "neighbour")
    neighbors = torch.arange(n).view(n, 1).repeat(1, k)
    vectors = torch.zeros(n, k, 3, dtype=torch.float64)
    vectors[:, :, 0] = 2 * cutoffs[0]
    mask = torch.zeros(n, k, dtype=torch.bool)
    neighbors[i, col] = j
    vectors[i, col] = v
    mask[i, col] = True
    d = vectors.norm(dim=2)
    inner_slots: List[torch.Tensor] = []
    inner_masks: List[torch.Tensor] = []
    caps = inner_capacity if isinstance(inner_capacity, (list, tuple)) else \
        [inner_capacity] * (len(cutoffs) - 1)
    for rc, cap in zip(cutoffs[1:], caps):
        ri, rk = torch.nonzero(mask & (d < rc + skin), as_tuple=True)  # k increasing
        ccol, kc = _rows(ri, n, cap, "inner")
        slots = torch.zeros(n, kc, dtype=torch.long)
        smask = torch.zeros(n, kc, dtype=torch.bool)
        slots[ri, ccol] = rk
        smask[ri, ccol] = True
        inner_slots.append(slots)
        inner_masks.append(smask)
    return {"neighbors": neighbors, "vectors": vectors.to(dtype), "mask": mask,
            "inner_slots": inner_slots, "inner_masks": inner_masks}


def forces_from_vector_grad(grad: torch.Tensor, neighbors: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
    """Forces [N, 3] from g = dE/dvectors [N, K, 3] (vectors[i, k] = x_j - x_i +
    shift, j = neighbors[i, k]):  F_i = sum_k g_ik - sum_{(j, k): neighbors[j, k] = i} g_jk.
    Accumulated in float64 (the engine uses fixed-order gathers instead of
    index_add; the values are the same up to rounding)."""
    g = torch.where(mask.unsqueeze(2), grad.to(torch.float64), torch.zeros((), dtype=torch.float64))
    forces = g.sum(1)
    return forces.index_add(0, neighbors.reshape(-1), g.reshape(-1, 3), alpha=-1.0)


def virial_from_vector_grad(grad: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                            batch: torch.Tensor, n_struct: int) -> torch.Tensor:
    """Virial W = -sum v (x) dE/dv per structure [S, 3, 3] (pressure
    P = (2 E_kin + tr W) / (3 V))."""
    g = torch.where(mask.unsqueeze(2), grad.to(torch.float64), torch.zeros((), dtype=torch.float64))
    w = -torch.einsum("nka,nkb->nab", vectors.detach().to(torch.float64), g)
    return torch.zeros(n_struct, 3, 3, dtype=torch.float64).index_add(0, batch, w)


def energies_and_forces(model, atomic_numbers: torch.Tensor, positions: torch.Tensor,
                        batch: torch.Tensor, cells=None,
                        prepared: bool = False, charge=None, **pair_options):
    """Energies [S] and forces [N, 3] (float64) of a v2 model, as the engine
    computes them: pairs from build_pairs (pair_options: capacity,
    inner_capacity, skin, dtype), one backward pass for dE/dvectors, forces
    assembled by forces_from_vector_grad. prepared=True calls
    model.prepare(atomic_numbers, batch) and forward_pairs_prepared instead
    of forward_pairs. charge ([S] total charges) is passed last to a model
    that takes it."""
    pairs = build_pairs(positions, batch, model.cutoffs(), cells, **pair_options)
    vectors = pairs["vectors"].requires_grad_(True)
    args = [pairs["neighbors"], vectors, pairs["mask"], pairs["inner_slots"],
            pairs["inner_masks"]] + ([] if charge is None else [charge])
    if prepared:
        model.prepare(atomic_numbers, batch)
        e = model.forward_pairs_prepared(*args)
    else:
        e = model.forward_pairs(atomic_numbers, batch, *args)
    (g,) = torch.autograd.grad(e.sum(), vectors)
    return e.detach(), forces_from_vector_grad(g, pairs["neighbors"], pairs["mask"])
