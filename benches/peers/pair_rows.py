"""A pair list -> a v2 (neighbour-list) model's energies, as a TorchSim user
would write it around a mlff-md model file (models/README.md, "Interface v2").

Shared by the TorchSim peers (peers/torchsim_md.py, torchsim_screen.py). The
caller builds the pairs with TorchSim's own neighbour list and the vectors
from its positions (autograd on); this module pads them into the contract's
rows and calls the model.
"""

from __future__ import annotations

import torch


def rows_from_pairs(n: int, i: torch.Tensor, j: torch.Tensor, vec: torch.Tensor,
                    rc: float, inner: list[float]):
    """A full pair list (centre i, neighbour j, vector x_j - x_i + shift, any
    order) -> the v2 inputs: neighbors [n, K], vectors [n, K, 3] (keeps the
    autograd graph of `vec`), mask, inner_slots / inner_masks [n, K_c]. K and
    K_c are the longest rows of this step (host syncs, as TorchSim does)."""
    dev = vec.device
    counts = torch.bincount(i, minlength=n)
    k = max(int(counts.max()), 1) if n else 1
    order = torch.argsort(i, stable=True)
    i, j, vec = i[order], j[order], vec[order]
    col = torch.arange(i.shape[0], device=dev) - (torch.cumsum(counts, 0) - counts)[i]
    neighbors = torch.arange(n, device=dev).view(n, 1).repeat(1, k)
    neighbors[i, col] = j
    mask = torch.zeros(n, k, dtype=torch.bool, device=dev)
    mask[i, col] = True
    pad = torch.tensor([2.0 * rc, 0.0, 0.0], dtype=vec.dtype, device=dev)
    vectors = pad.expand(n, k, 3).index_put((i, col), vec)  # out of place: gradient flows to vec
    d = vectors.detach().norm(dim=2)
    slots, masks = [], []
    for rc_c in inner:
        within = mask & (d < rc_c)
        kc = max(int(within.sum(1).max()), 1)
        r, kk = torch.nonzero(within, as_tuple=True)  # row-major: k increasing in a row
        c = within.cumsum(1)[r, kk] - 1
        sl = torch.zeros(n, kc, dtype=torch.long, device=dev)
        sl[r, c] = kk
        sm = torch.zeros(n, kc, dtype=torch.bool, device=dev)
        sm[r, c] = True
        slots.append(sl)
        masks.append(sm)
    return neighbors, vectors, mask, slots, masks


def pair_energies(model, z: torch.Tensor, b: torch.Tensor, prepared: bool, i: torch.Tensor,
                  j: torch.Tensor, vec: torch.Tensor, cutoffs: list[float]):
    """Energies [S] of a v2 model for atoms z (int64) in systems b (int64) from a
    full pair list (see rows_from_pairs), and the capacities used [K, K_c...].
    prepared: the model's prepare(z, b) was called for this composition, so
    forward_pairs_prepared runs; else forward_pairs (validates every call)."""
    nbr, vectors, mask, slots, masks = rows_from_pairs(z.shape[0], i, j, vec, cutoffs[0],
                                                       cutoffs[1:])
    capacity = [nbr.shape[1]] + [s.shape[1] for s in slots]
    if prepared:
        return model.forward_pairs_prepared(nbr, vectors, mask, slots, masks), capacity
    return model.forward_pairs(z, b, nbr, vectors, mask, slots, masks), capacity
