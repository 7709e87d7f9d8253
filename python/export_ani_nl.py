"""Export neighbour-list ANI-1x / ANI-1ccx TorchScript models (model contract v2).

    python python/export_ani_nl.py      # writes models/ani1x_nl.{pt,json},
                                        #        models/ani1ccx_nl.{pt,json}

python/export_ani.py runs this script too (same options: --out DIR,
--update-hashes), so `make` exports these files with the others. Same weights
and packing as python/export_ani_static.py (python/ani_build.py), same
energies as torchani; byte-reproducible and checked against models/SHA256SUMS.

The engine owns the neighbour list (periodic images included) and hands the
model, per atom i, a row of K entries (neighbour j, vector x_j - x_i + shift,
mask) and the compact list of the row's entries within the angular cutoff
(models/README.md, "Interface v2: pairs from the engine"; python/pair_list.py
builds the same inputs in Python):

    cutoffs() -> [5.2, 3.5]                 # radial, angular cutoff (Angstrom)
    forward_pairs(atomic_numbers int64[N], batch int64[N], neighbors int64[N, K],
                  vectors float[N, K, 3], mask bool[N, K],
                  inner_slots [int64[N, Ka]], inner_masks [bool[N, Ka]])
        -> energies float64[S] (eV)
        General path: validates everything (may synchronise with the host).
    prepare(atomic_numbers int64[N], batch int64[N]) -> None
        Validates the composition once and stores what depends on it alone
        (species tables, network groups and their gathered weights, the
        [S, Nmax] energy-sum layout, self-energy sums) on the inputs' device.
        Nothing in it depends on K or Ka.
    forward_pairs_prepared(neighbors, vectors, mask, inner_slots, inner_masks)
        -> energies float64[S] (eV)
        No host synchronisation in forward or backward; every shape comes from
        prepare() and the shapes of the inputs (K, Ka may change per call).
    is_prepared() -> bool, supported_elements() -> [1, 6, 7, 8],
    metadata() -> str (JSON, also models/<name>.json)

forward_pairs runs the same computation as forward_pairs_prepared on a layout
it builds itself, so the two give bitwise identical energies and gradients.

Math: torchani 2.9's ANI AEVs (see export_ani_static.py), summed over the
engine's rows instead of all atom pairs. Per row i (an atom):

  radial   per entry: d = |v| (masked entries: d = 2 Rc_R), terms
           exp(-EtaR (d - ShfR_f)^2) fc_R(d)                          [N, K, 16]
           G_R = bmm(terms^T, onehot(species of the entry's atom))    [N, 16, 4]
  angular  the Ka slots' vectors and distances gathered from the row (gather
           along dim 1: each used entry read once; masked slots get
           d = 2 Rc_R); their Gram matrix bmm(va, va^T) [N, Ka, Ka] holds the
           dot products. All slot pairs p < q (T = Ka (Ka - 1) / 2, the same
           for every row, in colex order so that the pairs of a smaller Ka are
           a prefix): (d, fc_A, species) of p and of q by one bmm with a
           constant 0/1 matrix E [2, Ka, T] (exact copies), the dot products
           picked from the Gram matrix with a computed index (each once).
             ang[z, t] = ((1 + cos(acos(0.95 cos theta_t) - ShfZ_z)) / 2)^Zeta      [N, 8, T]
             rad[t, a] = exp(-EtaA ((d_p + d_q) / 2 - ShfA_a)^2) fc_A(d_p) fc_A(d_q) [N, T, 4]
           u[t, q, a] = rad[t, a] if q is the species pair of the slot pair t,
           else 0 (zeros, then a scatter to distinct places)      [N, T, 10, 4]
           G_A = bmm(ang, u) = sum_t ang[z, t] rad[t, a] [q_t = q]    [N, 8, 10 x 4]
  fc(r) = 0.5 cos(min(pi r / Rc, pi)) + 0.5   (exactly 0, zero gradient,
          at and beyond Rc: entries of a neighbour-list skin cost nothing)

The constant factors of the terms (0.25 radial, 2 angular) are folded into the
first-layer weights (ani_build.py), whose angular input columns are permuted
to this AEV's order (z, q, a): nl_first_layer().

Masked entries and slots (and entries beyond a cutoff) give exact zeros;
masked ones sit at d = 2 Rc_R, which keeps every sqrt, division and acos
finite (|cos| <= 1 for a masked slot, whose vector is entry 0 of the row
but whose length is taken as 2 Rc_R >= |entry 0|), so no NaN reaches the
gradient. torchani's clamp(r_ij r_ik, min=1e-10) guard is left out (distinct
atoms are never that close).

Networks: as the static model (export_ani_static.py, ANIStatic): the 8
members of the 4 species run as one batched matmul per layer, atoms grouped
per species by prepare(), activations transposed, biases folded in. The AEV
rows [N, 388] (AEV, then a constant 1 and zero-weight padding) are gathered
into group order (index_select of whole rows) and read transposed by the
first bmm. The output layer (one output row) is a product and a sum over
the features, not a bmm (written so on 2026-12-05 against a slow batched GEMV
kernel, cuBLAS gemmSN, in an H200 profile; an H100 profile with each
kernel's operator later showed that kernel to be the angular bmm of u, and
this form no faster in MD: benches/results/md_exports_NVIDIA-H100_2026-12-05).
The per-structure sum reads the atoms' outputs into a padded
[S, Nmax x members] layout and sums them with the weights 1/8 (0 for
padding) the same way; the self energies are summed in float64 by
prepare(). Energies are float64 eV.

Determinism: no index_add or scatter-add over atoms or pairs in the forward
pass. The backward runs through bmm, elementwise ops, the gathers along the
row (their backward adds each used entry's gradient once; masked slots read
entry 0 and add exact zeros), the scatter of u (backward: a gather) and
index_selects whose indices are read once (the Gram dot products, the AEV
rows; padding reads add exact zeros). So repeated calls give bitwise
identical energies and gradients on a GPU (checked on an H200, also under
CUDA graph replay). Keep TF32 off: the 0/1 matmuls copy values exactly only
in full float32. Precision: float32 (vectors of another floating dtype are
cast inside; the gradient flows back in their dtype), self energies float64.

Cost: O(N K) radial and O(N Ka^2) angular work and memory; the largest
tensor is u, [N, T, 40] floats (T = Ka (Ka - 1) / 2), kept for the backward.
All T slot pairs are computed for every row, used or not: keep the inner
capacity Ka close to the largest row's count (the used fraction is about
1/3 for peptides at a tight Ka).
"""

import json
import math
import sys
from typing import List, Tuple

import torch

import ani_build
import export_ani
from export_ani import HARTREE_TO_EV, MAX_Z, NL_MODELS

# prepare() splits each species' atoms into groups of K rows; a group costs
# about as much as this many rows (as in export_ani_static.py).
GROUP_COST_ROWS = 32
# prepare() stores the slot-pair tables for up to this many inner slots; a
# larger Ka builds them in the call (a few more small kernels, same values).
PAIR_TABLE_SLOTS = 64

NL_NOTE = (
    "Neighbour-list variant, model contract v2: the engine passes each atom's neighbour "
    "row (indices, vectors x_j - x_i + shift, mask; periodic images included) and the "
    "row's entries within the angular cutoff as slot lists; cutoffs() = [radial, angular]. "
    "forward_pairs(...) is the general path; prepare(atomic_numbers, batch) once, then "
    "forward_pairs_prepared(neighbors, vectors, mask, inner_slots, inner_masks) has no host "
    "synchronisation in forward or backward (CUDA-graph capturable) and is bitwise "
    "reproducible. Forces from dE/dvectors (see models/README.md)."
)
COST_SCALING = (
    "time and memory ~ N * (16 K + 40 Ka (Ka - 1) / 2) for N atoms, K neighbour entries per "
    "row (within 5.2 A) and Ka inner slots (within 3.5 A): linear in N at fixed density; "
    "every slot pair of every row is computed, used or not, so keep Ka close to the largest "
    "row. For periodic systems and large molecules (chignolin, Trp-cage, water boxes)"
)


class _PackedLayer(torch.nn.Module):
    """A dense layer after the first for all species and members, transposed and
    zero-padded: weight [n_species, n_members, out, in] (ani_build.extract)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)

    def gathered(self, group_species: torch.Tensor) -> torch.Tensor:
        """Weights of each group's species: [n_groups * n_members, out, in]."""
        w = self.weight.index_select(0, group_species.to(self.weight.device))
        return w.reshape(-1, w.size(2), w.size(3))


class ANINeighbourList(torch.nn.Module):
    """ANI ensemble on the engine's neighbour list (see the module docstring)."""

    # prepared state (typed here so TorchScript accepts assignments in prepare())
    p_ws: List[torch.Tensor]

    def __init__(self, consts: dict, w_first: torch.Tensor, layers: List[torch.Tensor],
                 atomic_numbers: List[int], self_energies: List[float], meta: str):
        super().__init__()
        index = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        for i, z in enumerate(atomic_numbers):
            index[z] = i
        self.register_buffer("species_index", index)
        self.register_buffer("self_energies", torch.tensor(self_energies, dtype=torch.float64))
        ns = len(atomic_numbers)
        n_pairs = int(consts["n_pairs"])
        # species code ns a + b of a slot pair -> index of its species pair
        # (torchani's triu_index: the unordered pair {a, b})
        self.register_buffer("pair_index", consts["triu_index"].reshape(-1).clone().long())
        self.register_buffer("shf_r", consts["shf_r"].clone().view(1, 1, -1))
        self.register_buffer("shf_a", consts["shf_a"].clone().view(1, 1, -1))
        self.register_buffer("shf_z", consts["shf_z"].clone().view(1, -1, 1))
        self.register_buffer("w_first", w_first)
        self.layers = torch.nn.ModuleList([_PackedLayer(w) for w in layers])
        self.elements: List[int] = list(atomic_numbers)
        self.n_species: int = ns
        self.n_pairs: int = n_pairs
        self.n_rad: int = int(consts["shf_r"].numel())
        self.n_shf_a: int = int(consts["shf_a"].numel())
        self.n_feat: int = int(consts["n_feat"])
        self.n_in: int = int(w_first.size(2))  # AEV + constant 1 + padding
        self.n_members: int = int(consts["n_members"])
        self.h_first: int = int(w_first.size(1)) // int(consts["n_members"])
        self.rc: List[float] = [float(consts["rc_r"]), float(consts["rc_a"])]
        # pi / cutoff in Python float64, as torchani's `d * (pi / cutoff)`
        self.k_r: float = math.pi / float(consts["rc_r"])
        self.k_a: float = math.pi / float(consts["rc_a"])
        self.eta_r: float = float(consts["eta_r"])
        self.eta_a: float = float(consts["eta_a"])
        self.zeta: float = float(consts["zeta"])
        self.celu_alpha: float = float(consts["celu_alpha"])
        # squared distance given to masked entries and slots: r = 2 Rc_R, beyond
        # both cutoffs and at least as long as any entry the engine passes
        self.pad_d2: float = 4.0 * float(consts["rc_r"]) ** 2
        self.pad_d: float = 2.0 * float(consts["rc_r"])
        self.group_cost: int = GROUP_COST_ROWS
        self.table_slots: int = PAIR_TABLE_SLOTS
        self.hartree_to_ev: float = HARTREE_TO_EV
        self.meta = meta

        # prepared state
        self.prepared: bool = False
        self.p_n_atoms: int = 0
        self.p_n_struct: int = 0
        self.p_n_groups: int = 0
        self.p_group_size: int = 0
        self.p_atom_table: torch.Tensor = torch.zeros(0)
        self.p_rows: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self.p_ones: torch.Tensor = torch.zeros(0)
        self.p_slot_rows: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self.p_slot_w: torch.Tensor = torch.zeros(0)
        self.p_sae_ev: torch.Tensor = torch.zeros(0, dtype=torch.float64)
        self.p_w1: torch.Tensor = torch.zeros(0)
        self.p_ws = []
        self.p_pair_e: torch.Tensor = torch.zeros(0)
        self.p_pair_pq: torch.Tensor = torch.zeros(0, dtype=torch.long)

    @torch.jit.export
    def cutoffs(self) -> List[float]:
        return [self.rc[0], self.rc[1]]

    @torch.jit.export
    def supported_elements(self) -> List[int]:
        return self.elements

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    @torch.jit.export
    def is_prepared(self) -> bool:
        return self.prepared

    # ------------------------------------------------------------------
    # composition -> static layout (host code, syncs allowed)
    # ------------------------------------------------------------------

    def _pair_tables(self, ka: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """Slot pairs p < q of ka slots in colex order ((0,1), (0,2), (1,2), (0,3),
        ...: the pairs of fewer slots are a prefix): E [2, ka, T] with
        E[0, r, t] = (p_t == r), E[1, r, t] = (q_t == r), and pq [2, T]."""
        tri = torch.tril_indices(ka, ka, -1, device=device)  # rows q > columns p
        pq = torch.stack([tri[1], tri[0]])
        r = torch.arange(ka, device=device).view(1, ka, 1)
        e = (r == pq.view(2, 1, -1)).to(torch.float32)
        return e, pq

    def _layout(self, atomic_numbers: torch.Tensor, batch: torch.Tensor):
        n = atomic_numbers.size(0)
        if atomic_numbers.dim() != 1 or batch.dim() != 1 or batch.size(0) != n:
            raise RuntimeError("atomic_numbers and batch must be 1-D tensors of equal length")
        if n == 0:
            raise RuntimeError("ANI model: empty input (no atoms)")
        if atomic_numbers.is_floating_point() or batch.is_floating_point():
            raise RuntimeError("atomic_numbers and batch must be integer tensors")
        device = atomic_numbers.device
        if device != self.w_first.device:
            raise RuntimeError(
                "ANI neighbour-list model: inputs on {}, model on {} (move the model "
                "first)".format(device, self.w_first.device))
        cpu = torch.device("cpu")
        z = atomic_numbers.to(device=cpu, dtype=torch.long)
        b = batch.to(device=cpu, dtype=torch.long)
        species_index = self.species_index.to(cpu)
        z_ok = (z >= 0) & (z <= 118)
        species = species_index[torch.where(z_ok, z, torch.zeros_like(z))]
        species = torch.where(z_ok, species, torch.full_like(species, -1))
        stats: List[int] = torch.stack([b.min(), b.max(), (species < 0).sum()]).tolist()
        if stats[0] < 0:
            raise RuntimeError("batch indices must be >= 0")
        if stats[2] > 0:
            bad: List[int] = torch.unique(z[species < 0]).tolist()
            raise RuntimeError(
                "ANI model supports only H, C, N, O (atomic numbers {}); got unsupported "
                "atomic number(s) {}".format(self.elements, bad)
            )
        n_struct = stats[1] + 1
        counts = torch.bincount(b, minlength=n_struct)
        order = torch.argsort(b, stable=True)
        first = torch.cumsum(counts, 0) - counts
        rank_sorted = torch.arange(n) - first[b[order]]
        local = torch.zeros_like(b).index_put((order,), rank_sorted)
        n_max = int(counts.max())
        n_slots = n_struct * n_max
        slot = b * n_max + local  # slot of each atom in the padded [S, Nmax] layout
        real = torch.zeros(n_slots, dtype=torch.bool).index_put((slot,), torch.ones(n, dtype=torch.bool))
        ns = self.n_species
        # per atom: one-hot of its species (radial sums) and its species index
        # as a float (species pairs of the angular slots)
        atom_table = torch.cat([
            (species.view(-1, 1) == torch.arange(ns).view(1, ns)).to(torch.float32),
            species.view(-1, 1).to(torch.float32)], 1)  # [N, ns + 1]

        # Species groups of K atoms (one bmm per layer for all groups and
        # members): K minimises rows + GROUP_COST_ROWS * groups.
        atoms_of: List[torch.Tensor] = []
        n_of: List[int] = []
        for c in range(ns):
            idx = torch.nonzero(species == c).flatten()
            atoms_of.append(idx)
            n_of.append(idx.size(0))
        k = ani_build.group_size(n_of, self.group_cost)
        m = self.n_members
        group_atoms_l: List[torch.Tensor] = []
        group_species_l: List[int] = []
        row_of_atom = torch.zeros(n, dtype=torch.long)
        g = 0
        for c in range(ns):
            idx = atoms_of[c]
            start = 0
            while start < n_of[c]:
                chunk = idx[start:start + k]
                nc = chunk.size(0)
                # padding columns read atom 0; their outputs are never used
                group_atoms_l.append(torch.cat([chunk, torch.zeros(k - nc, dtype=torch.long)]))
                group_species_l.append(c)
                row_of_atom = row_of_atom.index_put((chunk,), g * m * k + torch.arange(nc))
                g += 1
                start += k
        n_groups = g
        # The network input's rows: the atoms in group order; padding columns
        # read atom 0 (their outputs get weight 0, so their gradients are 0)
        rows = torch.cat(group_atoms_l)  # [groups * K]
        group_species = torch.tensor(group_species_l, dtype=torch.long)
        # network input columns after the AEV: the constant 1 (biases), then
        # zero-weight padding
        ones = torch.ones(1, self.n_in - self.n_feat)
        # Network output y is [groups, members, K]: member r of atom a is
        # y[row_of_atom[a] + r * K]. Energy sum over the padded [S, Nmax]
        # layout: padded slots read row 0 with weight 0, atoms 1/M.
        row_of_slot = torch.zeros(n_slots, dtype=torch.long).index_put((slot,), row_of_atom)
        slot_rows = (row_of_slot.view(-1, 1) + torch.arange(m).view(1, -1) * k).view(-1)
        slot_w = (real.to(torch.float32) / m).view(n_struct, n_max, 1).expand(
            n_struct, n_max, m).reshape(n_struct, n_max * m, 1)
        sae = torch.zeros(n_slots, dtype=torch.float64).index_put(
            (slot,), self.self_energies.to(cpu)[species])
        sae_ev = sae.view(n_struct, n_max).sum(1) * self.hartree_to_ev

        w1 = self.w_first.index_select(0, group_species.to(self.w_first.device)).to(device)
        ws: List[torch.Tensor] = []
        for layer in self.layers:
            ws.append(layer.gathered(group_species).to(device))
        return (n, n_struct, n_groups, k, atom_table.to(device), rows.to(device),
                slot_rows.to(device), slot_w.to(device), sae_ev.to(device),
                ones.to(device), w1, ws)

    @torch.jit.export
    def prepare(self, atomic_numbers: torch.Tensor, batch: torch.Tensor) -> None:
        """Validate the composition and store its layout (once per composition)."""
        self.prepared = False
        lay = self._layout(atomic_numbers, batch)
        pair_e, pair_pq = self._pair_tables(self.table_slots, atomic_numbers.device)
        self.p_n_atoms = lay[0]
        self.p_n_struct = lay[1]
        self.p_n_groups = lay[2]
        self.p_group_size = lay[3]
        self.p_atom_table = lay[4]
        self.p_rows = lay[5]
        self.p_slot_rows = lay[6]
        self.p_slot_w = lay[7]
        self.p_sae_ev = lay[8]
        self.p_ones = lay[9]
        self.p_w1 = lay[10]
        self.p_ws = lay[11]
        self.p_pair_e = pair_e
        self.p_pair_pq = pair_pq
        self.prepared = True

    # ------------------------------------------------------------------
    # input checks (shapes only: no host synchronisation)
    # ------------------------------------------------------------------

    def _check_pairs(self, n: int, neighbors: torch.Tensor, vectors: torch.Tensor,
                     mask: torch.Tensor, inner_slots: List[torch.Tensor],
                     inner_masks: List[torch.Tensor]):
        if neighbors.dim() != 2 or neighbors.size(0) != n:
            raise RuntimeError(
                "neighbors must have shape [N, K] with N = {} atoms, got {}".format(
                    n, neighbors.shape))
        kk = neighbors.size(1)
        if vectors.dim() != 3 or vectors.size(0) != n or vectors.size(1) != kk \
                or vectors.size(2) != 3:
            raise RuntimeError("vectors must have shape [N, K, 3] = [{}, {}, 3], got {}".format(
                n, kk, vectors.shape))
        if not vectors.is_floating_point():
            raise RuntimeError("vectors must be a floating-point tensor")
        if mask.dim() != 2 or mask.size(0) != n or mask.size(1) != kk \
                or mask.dtype != torch.bool:
            raise RuntimeError("mask must be a bool tensor of shape [N, K] = [{}, {}]".format(
                n, kk))
        if len(inner_slots) != 1 or len(inner_masks) != 1:
            raise RuntimeError(
                "ANI takes one inner range (cutoffs() = {}): inner_slots and inner_masks "
                "must hold one tensor each, got {} and {}".format(
                    self.rc, len(inner_slots), len(inner_masks)))
        slots = inner_slots[0]
        slot_mask = inner_masks[0]
        if slots.dim() != 2 or slots.size(0) != n:
            raise RuntimeError("inner_slots[0] must have shape [N, Ka], got {}".format(
                slots.shape))
        if slot_mask.dim() != 2 or slot_mask.size(0) != n \
                or slot_mask.size(1) != slots.size(1) or slot_mask.dtype != torch.bool:
            raise RuntimeError("inner_masks[0] must be a bool tensor of the shape of "
                               "inner_slots[0] {}".format(slots.shape))
        dev = vectors.device
        if neighbors.device != dev or mask.device != dev or slots.device != dev \
                or slot_mask.device != dev:
            raise RuntimeError("neighbors, vectors, mask and inner lists must be on one device")
        return neighbors.to(torch.long), slots.to(torch.long), slot_mask

    # ------------------------------------------------------------------
    # the computation (no host synchronisation)
    # ------------------------------------------------------------------

    def _angular_factors(self, v: torch.Tensor, d: torch.Tensor, ent: torch.Tensor,
                         slots: torch.Tensor, slot_mask: torch.Tensor, pair_e: torch.Tensor,
                         pair_pq: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per slot pair t = (p, q) of each row, from the entries' vectors v
        [N, K, 3], distances d [N, K] and species table rows ent [N, K, ns + 1]:
        the angular factors ang [N, Z, T], the radial factors [N, T, A] (with
        both cutoff functions) and the species pair [N, T] (0 to pairs - 1).
        Every per-pair value comes from a product with the 0/1 pair table
        or an index_select of distinct elements, so the backward pass has no
        colliding (atomic, order-dependent) additions and is deterministic.
        (A method of its own so that a variant can sum the factors its own
        way: python/ani_nl_triton.py.)"""
        ns = self.n_species
        n = slots.size(0)
        ka = slots.size(1)
        n_t = ka * (ka - 1) // 2
        # the slots' vectors and distances gathered from the row, the
        # Gram matrix of the vectors (dot products of slot pairs p < q)
        va = torch.gather(v, 1, slots.unsqueeze(2).expand(n, ka, 3))  # [N, Ka, 3]
        gram = torch.bmm(va, va.transpose(1, 2))  # [N, Ka, Ka]
        da = torch.where(slot_mask, torch.gather(d, 1, slots), self.pad_d)
        fc_a = 0.5 * torch.cos(torch.clamp(da * self.k_a, max=math.pi)) + 0.5
        sa = torch.gather(ent.select(2, ns), 1, slots)  # species of each slot
        if ka <= pair_e.size(1):
            e = pair_e.narrow(1, 0, ka).narrow(2, 0, n_t)
            pq = pair_pq.narrow(1, 0, n_t)
        else:
            e, pq = self._pair_tables(ka, v.device)
        # (d, fc, species) of slot p and of slot q of every pair: [2, 3, N, T]
        x = torch.stack([da, fc_a, sa]).view(1, 3 * n, ka)
        # (unbind, not indexing: its backward is one stack, not a zero-filled
        # copy per element)
        pqv = torch.bmm(x.expand(2, 3 * n, ka), e).view(6, n, n_t).unbind(0)
        d_p, fc_p, s_p, d_q, fc_q, s_q = pqv[0], pqv[1], pqv[2], pqv[3], pqv[4], pqv[5]
        dot = gram.view(n, ka * ka).index_select(1, torch.add(pq[1], pq[0], alpha=ka))
        theta = torch.acos(0.95 * (dot / (d_p * d_q)))
        ang = ((1 + torch.cos(theta.unsqueeze(1) - self.shf_z)) / 2) ** self.zeta  # [N, Z, T]
        t_a = (d_p + d_q).unsqueeze(2) / 2 - self.shf_a
        rad_a = torch.exp((t_a * t_a) * (-self.eta_a)) * (fc_p * fc_q).unsqueeze(2)
        code = torch.add(s_q, s_p, alpha=ns).to(torch.long)
        pair = self.pair_index.index_select(0, code.view(-1)).view(n, n_t)
        return ang, rad_a, pair

    def _angular(self, v: torch.Tensor, d: torch.Tensor, ent: torch.Tensor,
                 slots: torch.Tensor, slot_mask: torch.Tensor, pair_e: torch.Tensor,
                 pair_pq: torch.Tensor) -> torch.Tensor:
        """Angular AEV [N, Z, pairs x A]: the factors of _angular_factors
        summed over the slot pairs into each pair's species pair."""
        ang, rad_a, pair = self._angular_factors(v, d, ent, slots, slot_mask, pair_e, pair_pq)
        na = self.n_shf_a
        npr = self.n_pairs
        n = pair.size(0)
        n_t = pair.size(1)
        # the radial factors [N, T, A] placed in the column of each pair's
        # species pair q: u[i, t, q, a] (zero elsewhere); a scatter to distinct
        # places, whose backward is a gather. Then one bmm sums over the pairs.
        q = pair.view(n, n_t, 1, 1)
        u = torch.zeros([n, n_t, npr, na], dtype=v.dtype, device=v.device).scatter_(
            2, q.expand(n, n_t, 1, na), rad_a.unsqueeze(2))
        aev_a = torch.bmm(ang, u.view(n, n_t, npr * na))  # [N, Z, pairs x A]
        return aev_a

    def _energies(self, neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                  slots: torch.Tensor, slot_mask: torch.Tensor, n_struct: int,
                  n_groups: int, group_size: int, atom_table: torch.Tensor,
                  rows: torch.Tensor, slot_rows: torch.Tensor, slot_w: torch.Tensor,
                  sae_ev: torch.Tensor, ones: torch.Tensor, w1: torch.Tensor,
                  ws: List[torch.Tensor], pair_e: torch.Tensor,
                  pair_pq: torch.Tensor) -> torch.Tensor:
        ns = self.n_species
        n = neighbors.size(0)
        kk = neighbors.size(1)
        v = vectors.to(torch.float32)

        # per entry: species one-hot and species (no gradient)
        ent = atom_table.index_select(0, neighbors.reshape(-1)).view(n, kk, ns + 1)

        # radial: terms [N, K, 16], summed per neighbour species by a bmm
        d = torch.sqrt(torch.where(mask, (v * v).sum(2), self.pad_d2))  # [N, K]
        fc_r = 0.5 * torch.cos(torch.clamp(d * self.k_r, max=math.pi)) + 0.5
        t_r = d.unsqueeze(2) - self.shf_r
        rad = torch.exp((t_r * t_r) * (-self.eta_r)) * fc_r.unsqueeze(2)
        aev_r = torch.bmm(rad.transpose(1, 2), ent.narrow(2, 0, ns))  # [N, 16, ns]

        aev_a = self._angular(v, d, ent, slots, slot_mask, pair_e, pair_pq)  # [N, Z, pairs x A]

        aev = torch.cat([aev_r.reshape(n, -1), aev_a.view(n, -1),
                         ones.expand(n, ones.size(1))], 1)
        h = self._networks(aev, rows, n_groups, group_size, w1, ws)  # [groups * members, K]
        # [groups * members * K] -> [S, Nmax x members]; mean over members and
        # sum over the structure's atoms (a weighted sum, as above)
        y = h.view(-1).index_select(0, slot_rows).view(n_struct, -1)
        e_nn = (y * slot_w.view(n_struct, -1)).sum(1)  # Hartree, float32
        return torch.add(sae_ev, e_nn.to(torch.float64), alpha=self.hartree_to_ev)

    def _networks(self, aev: torch.Tensor, rows: torch.Tensor, n_groups: int, k: int,
                  w1: torch.Tensor, ws: List[torch.Tensor]) -> torch.Tensor:
        """The members' outputs [groups * members, k] (Hartree) of the AEV
        rows `rows` in species groups of k atoms. (python/network_triton.py
        runs the same with Triton kernels.)"""
        # Transposed: all species groups x members in one bmm per layer. The
        # AEV rows [N, features] are gathered in group order (each atom's row
        # once; padding columns read atom 0 and get weight 0) and read
        # transposed by the first bmm.
        h = aev.index_select(0, rows).view(n_groups, k, self.n_in).transpose(1, 2)
        h = torch.nn.functional.celu(torch.bmm(w1, h), alpha=self.celu_alpha)
        h = h.view(n_groups * self.n_members, self.h_first, k)
        n_layers = len(ws)
        for i in range(n_layers - 1):
            h = torch.nn.functional.celu(torch.bmm(ws[i], h), alpha=self.celu_alpha)
        # The output layer has one row: a weighted sum over the features,
        # written as a product and a sum (elementwise and reduction kernels)
        # rather than a bmm with one output row. (The batched GEMV kernel
        # this was first meant to avoid is the bmm of u above, by an H100
        # profile of each kernel's operator; models/README.md.)
        return (h * ws[n_layers - 1].transpose(1, 2)).sum(1)

    @torch.jit.export
    def forward_pairs_prepared(self, neighbors: torch.Tensor, vectors: torch.Tensor,
                               mask: torch.Tensor, inner_slots: List[torch.Tensor],
                               inner_masks: List[torch.Tensor]) -> torch.Tensor:
        """Energies (float64, eV) of the prepared structures; no host syncs."""
        if not self.prepared:
            raise RuntimeError("ANI neighbour-list model: call prepare(atomic_numbers, batch) "
                               "before forward_pairs_prepared")
        nb, slots, slot_mask = self._check_pairs(self.p_n_atoms, neighbors, vectors, mask,
                                                 inner_slots, inner_masks)
        if vectors.device != self.p_atom_table.device:
            raise RuntimeError("forward_pairs_prepared: inputs on {}, prepared on {}".format(
                vectors.device, self.p_atom_table.device))
        return self._energies(nb, vectors, mask, slots, slot_mask, self.p_n_struct,
                              self.p_n_groups, self.p_group_size, self.p_atom_table,
                              self.p_rows, self.p_slot_rows, self.p_slot_w,
                              self.p_sae_ev, self.p_ones, self.p_w1, self.p_ws,
                              self.p_pair_e, self.p_pair_pq)

    @torch.jit.export
    def forward_pairs(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                      neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                      inner_slots: List[torch.Tensor],
                      inner_masks: List[torch.Tensor]) -> torch.Tensor:
        """Energies (float64, eV); validates everything and leaves the prepared
        state alone."""
        n = atomic_numbers.size(0)
        nb, slots, slot_mask = self._check_pairs(n, neighbors, vectors, mask, inner_slots,
                                                 inner_masks)
        lay = self._layout(atomic_numbers.to(vectors.device), batch.to(vectors.device))
        kk = nb.size(1)
        ka = slots.size(1)
        if n * kk > 0:
            lim: List[int] = torch.stack([nb.min(), nb.max()]).tolist()
            if lim[0] < 0 or lim[1] >= n:
                raise RuntimeError("neighbors must be atom indices in [0, {})".format(n))
        if n * ka > 0:
            lim2: List[int] = torch.stack([slots.min(), slots.max()]).tolist()
            if lim2[0] < 0 or lim2[1] >= max(kk, 1):
                raise RuntimeError("inner_slots must be entry indices in [0, {})".format(kk))
        pair_e, pair_pq = self._pair_tables(ka, vectors.device)
        return self._energies(nb, vectors, mask, slots, slot_mask, lay[1], lay[2], lay[3],
                              lay[4], lay[5], lay[6], lay[7], lay[8], lay[9], lay[10],
                              lay[11], pair_e, pair_pq)


# --------------------------------------------------------------------------
# build from torchani
# --------------------------------------------------------------------------


def nl_first_layer(parts: dict) -> torch.Tensor:
    """ani_build's first-layer weights with the angular input columns reordered
    from (a, z), q (the static model's AEV) to z, q, a (this model's AEV:
    aev_a[i, z, q * A + a]); a pure permutation, no arithmetic."""
    consts = parts["consts"]
    w = parts["w_first"]
    nr = len(parts["symbols"]) * consts["shf_r"].numel()
    n_sa, n_sz = consts["shf_a"].numel(), consts["shf_z"].numel()
    n_pairs = consts["n_pairs"]
    src = list(range(w.shape[2]))
    for z in range(n_sz):
        for q in range(n_pairs):
            for a in range(n_sa):
                src[nr + (z * n_pairs + q) * n_sa + a] = nr + (a * n_sz + z) * n_pairs + q
    assert sorted(src) == list(range(w.shape[2]))
    return w[:, :, torch.tensor(src)].contiguous()


def build_nl(nl_name: str, torchani_version: str) -> ANINeighbourList:
    name = NL_MODELS[nl_name]
    parts = ani_build.extract(name)
    spec = parts["spec"]
    symbols, numbers = parts["symbols"], parts["numbers"]
    rad, angm = parts["rad"], parts["angm"]
    consts = parts["consts"]
    cutoffs = [float(rad.cutoff), float(angm.cutoff)]
    meta = {
        "name": nl_name,
        "description": spec["description"].split(" Gas phase")[0] + (
            " Trained on gas-phase molecules; periodic boundaries through the engine's "
            "neighbour list (contract v2); no long-range electrostatics or dispersion "
            "beyond the 5.2 A radial / 3.5 A angular AEV cutoffs."),
        "variant": "neighbour-list (contract v2)",
        "neighbour_list_note": NL_NOTE,
        "cost_scaling": COST_SCALING,
        "interface": [
            "cutoffs() -> List[float] (Angstrom: [radial, angular])",
            "forward_pairs(atomic_numbers int64[N], batch int64[N], neighbors int64[N,K], "
            "vectors float[N,K,3], mask bool[N,K], inner_slots [int64[N,Ka]], "
            "inner_masks [bool[N,Ka]]) -> float64[S] eV",
            "prepare(atomic_numbers int64[N], batch int64[N]) -> None",
            "forward_pairs_prepared(neighbors, vectors, mask, inner_slots, inner_masks) "
            "-> float64[S] eV (no host syncs)",
            "is_prepared() -> bool",
        ],
        "model_contract": 2,
        "cutoffs_angstrom": cutoffs,
        "dynamic_counterpart": name,
        "energy_unit": "eV",
        "length_unit": "angstrom",
        "energy_dtype": "float64",
        "compute_dtype": "float32 (vectors of other floating dtypes are cast to float32)",
        "supported_elements": numbers,
        "species_order": symbols,
        "ensemble_size": consts["n_members"],
        "network_widths": parts["dims"],
        "padded_network_widths": parts["padded"],
        "radial_cutoff_angstrom": cutoffs[0],
        "angular_cutoff_angstrom": cutoffs[1],
        "periodic": True,
        "hartree_to_ev": HARTREE_TO_EV,
        "level_of_theory": spec["level_of_theory"],
        "source": (
            f"NeuroChem parameter set {spec['resource']} from the torchani 2.0 wheel "
            f"({export_ani.WHEEL_NAME}, sha256 {export_ani.WHEEL_SHA256}), loaded with "
            f"torchani {torchani_version} (pyaev strategy) and re-implemented on the "
            f"engine's neighbour list by python/export_ani_nl.py"
        ),
        "licence": "MIT (torchani)",
        "reference": spec["reference"],
    }
    model = ANINeighbourList(consts, nl_first_layer(parts), parts["layers"], numbers,
                             parts["sae"], json.dumps(meta, indent=None, sort_keys=False))
    return model.eval()


def main(argv: List[str]) -> int:
    return export_ani.export_variant(argv, NL_MODELS, build_nl, "neighbour-list ANI models", "export_ani_nl")


if __name__ == "__main__":
    # Run main() of the module imported under its own name, so the scripted
    # classes are named __torch__.export_ani_nl.*, not __torch__.*.
    import export_ani_nl

    sys.exit(export_ani_nl.main(sys.argv[1:]))
