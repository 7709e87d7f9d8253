"""Export static-shape ANI-1x / ANI-1ccx TorchScript models (CUDA-graph friendly).

    python python/export_ani_static.py  # writes models/ani1x_static.{pt,json},
                                        #        models/ani1ccx_static.{pt,json}

python/export_ani.py runs this script too (same options: --out DIR,
--update-hashes), so `make` exports these files with the dynamic ones. Same
weights (the NeuroChem parameter sets that export_ani.py extracts into
.cache/torchani/data), same energies as torchani; byte-reproducible and
checked against models/SHA256SUMS like export_ani.py. The stored tensors are
copies of the NeuroChem float32 values, except the first-layer weights, which
are multiplied by 0.25 or 2 in float64 and rounded to float32 (exact: powers
of two), and pi / cutoff, computed in Python float64 and rounded: none depends
on the CPU's vector units.

Interface (see models/README.md, "Static-shape variant"):

    forward(atomic_numbers int64[N], positions float[N, 3] (Angstrom),
            batch int64[N]) -> energies float64[S] (eV)
        General path, any batch and atom order; validates like models/ani1x.pt
        and may synchronise with the host. It does not touch the prepared state.
    prepare(atomic_numbers int64[N], batch int64[N]) -> None
        Validates once and stores everything that depends only on the
        composition (padded layout, one-hots, pair/triple index matrices,
        species groups, gathered network weights, self-energy sums) on the
        inputs' device.
    forward_prepared(positions float[N, 3]) -> energies float64[S] (eV)
        Positions in the prepared atom order. No host synchronisation in the
        forward pass or its backward: every shape comes from prepare(), there
        is no data-dependent indexing and no Python branch on tensor values,
        so forward + backward can be captured in a CUDA graph.
    is_prepared() -> bool
    supported_elements() -> List[int]       # [1, 6, 7, 8]
    metadata() -> str                       # JSON, also models/<name>.json

Math. The AEVs are torchani 2.9's ANI AEVs (ANIRadial / ANIAngular with the
cosine cutoff), computed over ALL intra-structure pairs and triples of a dense
padded [S, Nmax] layout instead of a neighbour list; pairs beyond a cutoff get
the cutoff function's exact zero. Diagonal (i == j) and padded pairs get a
constant (2 Rc)^2 added to their squared distance, which puts them beyond both
cutoffs: their terms are exactly zero, and every intermediate (sqrt, acos,
division) stays finite, so no NaN reaches the gradient.

  radial   G_R[i, c, f] = sum_{j != i, Z_j = c} 0.25 exp(-EtaR (r_ij - ShfR_f)^2) fc_R(r_ij)
  angular  G_A[i, q, a, z] = sum_{j < k, j, k != i, pair(Z_j, Z_k) = q}
             2 ((1 + cos(acos(0.95 cos t_ijk) - ShfZ_z)) / 2)^Zeta
             exp(-EtaA ((r_ij + r_ik) / 2 - ShfA_a)^2) fc_A(r_ij) fc_A(r_ik)
  fc(r) = 0.5 cos(min(pi r / Rc, pi)) + 0.5   (= 0 beyond Rc, zero gradient there)

torchani's clamp(r_ij r_ik, min=1e-10) guard is left out: distinct atoms are
never that close, and masked pairs sit at r >= 2 Rc.

Species sums are batched matmuls with one-hot matrices (deterministic, no
atomics); the triple quantities are gathered with a one-hot matmul too, as
pair quantities are reused by many triples. The constant factors 0.25 (radial)
and 2 (angular) are powers of two: they are folded exactly into the first-layer
weights, whose input rows are also permuted to the order in which the AEV is
assembled here (radial [f, c], angular [(a, z), q]).

The 8-member ensembles of the 4 species run as one batched matmul per layer
(see ANIStatic): hidden layers are zero-padded to the largest width over
species (the padded units stay exactly 0 through CELU, CELU(0) = 0), and atoms
are gathered, per species, into groups of equal size (chunks chosen by
prepare() to balance padding waste against the number of groups).

Determinism: besides the one-hot matmuls, only index_select gathers, each
reading a source element at most once except for padding and the constant-1
network input, whose gradients are exactly zero or discarded; the backward's
atomic adds therefore give bitwise reproducible forces on the GPU.
Precision: float32 throughout (self energies float64). Keep TF32 off (the
default): the one-hot matmuls copy values exactly only in full float32.

Cost scales as S * Nmax^3 (angular terms, and the [Nmax, Nmax] Gram matrices
per atom) in memory and time: right for MD of many small molecules
(alanine dipeptide, 22 atoms; molecules up to ~60 atoms). For proteins
(chignolin, Trp-cage) the neighbour-list model (models/ani1x.pt) is the one to use.
"""

import json
import math
import sys
from typing import List, Tuple

import torch

import ani_build
import export_ani
from export_ani import HARTREE_TO_EV, MAX_Z, STATIC_MODELS

# prepare() splits each species' atoms into groups of K rows; a group costs
# about as much as this many rows (the weights of 8 networks are read once per
# group; one row costs one row of the 8 networks' matmuls).
GROUP_COST_ROWS = 32

STATIC_NOTE = (
    "Static-shape variant for CUDA graphs: call prepare(atomic_numbers, batch) once "
    "(validates, stores the composition-dependent layout on the inputs' device), then "
    "forward_prepared(positions) -> float64[S] eV has only static shapes and no host "
    "synchronisation in forward or backward. forward(atomic_numbers, positions, batch) "
    "works for any batch as in the dynamic model. AEVs use all intra-structure pairs and "
    "triples of a dense padded [S, Nmax] layout (smooth cutoff masks, no neighbour list)."
)
COST_SCALING = (
    "time and memory ~ S * Nmax^3 (angular terms over all triples, Nmax = largest "
    "structure): fine for alanine dipeptide (22 atoms) and molecules up to ~60 atoms; "
    "use the neighbour-list model (ani1x.pt / ani1ccx.pt) for proteins such as "
    "chignolin or Trp-cage"
)


class _Layer(torch.nn.Module):
    """A dense layer after the first, for all species and members, transposed
    and zero-padded to the widest species: weight [n_species, n_members, out,
    in]. The bias sits in the column of the previous layer's constant-one
    unit (see ANIStatic)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)

    def gathered(self, group_species: torch.Tensor) -> torch.Tensor:
        """Weights of each group's species: [n_groups * n_members, out, in]."""
        w = self.weight.index_select(0, group_species.to(self.weight.device))
        return w.reshape(-1, w.size(2), w.size(3))


class ANIStatic(torch.nn.Module):
    """Static-shape ANI ensemble (see the module docstring).

    Networks. Activations are kept transposed, [rows = groups x members,
    features, K atoms], so that every layer is one bmm W^T h with no copies:
    layer 1 is [groups, M * H1, F1] x [groups, F1, K] (all M members at
    once), the later layers [groups * M, H_out, H_in] x [groups * M, H_in, K].
    Biases are folded into the matmuls: the input carries a constant 1
    feature, and every hidden layer has one extra unit with weight 1 on the
    previous constant and bias 0, whose CELU output is exactly 1 (CELU(1) = 1);
    each layer's bias is the weight column of that constant. Zero-padded units
    and features have zero weights: padded units stay exactly 0 (CELU(0) = 0).
    """

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
        self.register_buffer("triu_index", consts["triu_index"].clone())
        self.register_buffer("shf_r", consts["shf_r"].clone())
        self.register_buffer("shf_a", consts["shf_a"].clone())
        self.register_buffer("shf_z", consts["shf_z"].clone())
        rc = [float(consts["rc_r"]), float(consts["rc_a"])]
        # pi / cutoff as float32, the factor torchani's
        # `0.5 * cos(d * (pi / cutoff)) + 0.5` computes with
        self.register_buffer("cutoff_k", torch.tensor([math.pi / r for r in rc],
                                                      dtype=torch.float32))
        self.register_buffer("w_first", w_first)
        self.layers = torch.nn.ModuleList([_Layer(w) for w in layers])
        self.elements: List[int] = list(atomic_numbers)
        self.n_species: int = len(atomic_numbers)
        self.n_pairs: int = int(consts["n_pairs"])
        self.n_rad: int = int(consts["shf_r"].numel())
        self.n_ang: int = int(consts["shf_a"].numel()) * int(consts["shf_z"].numel())
        self.n_feat: int = int(consts["n_feat"])
        self.n_in: int = int(w_first.size(2))  # AEV + constant 1 + padding
        self.n_members: int = int(consts["n_members"])
        self.h_first: int = int(w_first.size(1)) // int(consts["n_members"])
        self.eta_r: float = float(consts["eta_r"])
        self.eta_a: float = float(consts["eta_a"])
        self.zeta: float = float(consts["zeta"])
        self.celu_alpha: float = float(consts["celu_alpha"])
        # Added to the squared distance of i == j and padded pairs: puts them at
        # r >= 2 Rc, beyond both cutoffs.
        self.pad_offset: float = 4.0 * float(consts["rc_r"]) ** 2
        self.group_cost: int = GROUP_COST_ROWS
        self.hartree_to_ev: float = HARTREE_TO_EV
        self.meta = meta

        # prepared state
        self.prepared: bool = False
        self.p_n_atoms: int = 0
        self.p_n_struct: int = 0
        self.p_n_max: int = 0
        self.p_identity: bool = False
        self.p_n_groups: int = 0
        self.p_group_size: int = 0
        self.p_slot_src: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self.p_pair_off: torch.Tensor = torch.zeros(0)
        self.p_onehot: torch.Tensor = torch.zeros(0)
        self.p_pair_onehot: torch.Tensor = torch.zeros(0)
        self.p_gram_idx: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self.p_e_jk: torch.Tensor = torch.zeros(0)
        self.p_feat_idx: torch.Tensor = torch.zeros(0, dtype=torch.int)
        self.p_slot_rows: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self.p_slot_w: torch.Tensor = torch.zeros(0)
        self.p_sae_ev: torch.Tensor = torch.zeros(0, dtype=torch.float64)
        self.p_one: torch.Tensor = torch.zeros(0)
        self.p_w1: torch.Tensor = torch.zeros(0)
        self.p_ws = []

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
                "ANI static model: inputs on {}, model on {} (move the model first)".format(
                    device, self.w_first.device))
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
        identity = n_slots == n and bool((slot == torch.arange(n)).all())
        # Padded slots read atom 0's position; they take part in no term.
        slot_src = torch.zeros(n_slots, dtype=torch.long).index_put((slot,), torch.arange(n))
        slot_species = torch.full((n_slots,), -1, dtype=torch.long).index_put((slot,), species)
        real = slot_species >= 0
        sp2 = slot_species.view(n_struct, n_max)
        real2 = real.view(n_struct, n_max)
        ns = self.n_species
        onehot = (sp2.unsqueeze(2) == torch.arange(ns).view(1, 1, ns)).to(torch.float32)
        not_diag = ~torch.eye(n_max, dtype=torch.bool)
        valid = real2.unsqueeze(2) & real2.unsqueeze(1) & not_diag.unsqueeze(0)
        pair_off = torch.where(valid, torch.zeros(valid.shape),
                               torch.full(valid.shape, self.pad_offset)).to(torch.float32)
        # Angular pairs j < k: the same list for every centre i (pairs with
        # j == i or k == i have a zero cutoff factor).
        tri = torch.triu_indices(n_max, n_max, 1)
        jj = tri[0]
        kk = tri[1]
        n_p = jj.size(0)
        ar_n = torch.arange(n_max)
        # Gram matrix entries: squared distances (diagonal), then dot products j < k
        gram_idx = torch.cat([ar_n * (n_max + 1), jj * n_max + kk])
        # pair quantity -> (j, k, mean of j and k) of each angular pair
        ar_p = torch.arange(n_p)
        e_jk = torch.zeros(n_max, 3 * n_p)
        e_jk = e_jk.index_put((jj, ar_p), torch.ones(n_p))
        e_jk = e_jk.index_put((kk, ar_p + n_p), torch.ones(n_p))
        e_jk = e_jk.index_put((jj, ar_p + 2 * n_p), torch.full((n_p,), 0.5))
        e_jk = e_jk.index_put((kk, ar_p + 2 * n_p), torch.full((n_p,), 0.5))
        sj = sp2.index_select(1, jj)
        sk = sp2.index_select(1, kk)
        triu_index = self.triu_index.to(cpu)
        q = triu_index[sj.clamp(min=0), sk.clamp(min=0)]
        pvalid = (sj >= 0) & (sk >= 0)
        pair_onehot = ((q.unsqueeze(2) == torch.arange(self.n_pairs).view(1, 1, -1))
                       & pvalid.unsqueeze(2)).to(torch.float32)

        # Species groups of K atoms (one bmm per layer for all groups and
        # members): K minimises rows + GROUP_COST_ROWS * groups.
        slots_of: List[torch.Tensor] = []
        n_of: List[int] = []
        for c in range(ns):
            idx = torch.nonzero(slot_species == c).flatten()
            slots_of.append(idx)
            n_of.append(idx.size(0))
        k = ani_build.group_size(n_of, self.group_cost)
        m = self.n_members
        group_slots_l: List[torch.Tensor] = []
        group_species_l: List[int] = []
        row_of_slot = torch.zeros(n_slots, dtype=torch.long)
        g = 0
        for c in range(ns):
            idx = slots_of[c]
            start = 0
            while start < n_of[c]:
                chunk = idx[start:start + k]
                nc = chunk.size(0)
                # padding columns read slot 0; their outputs are never used
                group_slots_l.append(torch.cat([chunk, torch.zeros(k - nc, dtype=torch.long)]))
                group_species_l.append(c)
                row_of_slot = row_of_slot.index_put((chunk,), g * m * k + torch.arange(nc))
                g += 1
                start += k
        n_groups = g
        group_slots = torch.stack(group_slots_l)  # [groups, K]
        group_species = torch.tensor(group_species_l, dtype=torch.long)
        # Network input, transposed: [groups, n_in, K] gathered from the flat
        # [radial AEVs of all slots, angular AEVs of all slots, 1.0].
        nr = ns * self.n_rad
        na = self.n_pairs * self.n_ang
        one_at = n_slots * (nr + na)
        f = torch.arange(self.n_in).view(1, -1, 1)
        t = group_slots.view(n_groups, 1, k)
        feat_idx = torch.where(f < nr, t * nr + f, n_slots * nr + t * na + (f - nr))
        feat_idx = torch.where(f < nr + na, feat_idx, torch.full_like(feat_idx, one_at))
        feat_idx = feat_idx.reshape(-1).to(torch.int32)
        # Network output y is [groups, members, K]: member r of slot t is
        # y[row_of_slot[t] + r * K]; padded slots get weight 0, real ones 1/M.
        slot_rows = (row_of_slot.view(-1, 1) + torch.arange(m).view(1, -1) * k).view(-1)
        slot_w = (real.to(torch.float32) / m).view(n_struct, n_max, 1).expand(
            n_struct, n_max, m).reshape(n_struct, n_max * m, 1)
        sae = self.self_energies.to(cpu)[slot_species.clamp(min=0)]
        sae = torch.where(real, sae, torch.zeros_like(sae))
        sae_ev = sae.view(n_struct, n_max).sum(1) * self.hartree_to_ev

        w1 = self.w_first.index_select(0, group_species.to(self.w_first.device)).to(device)
        ws: List[torch.Tensor] = []
        for layer in self.layers:
            ws.append(layer.gathered(group_species).to(device))
        return (n, n_struct, n_max, identity, n_groups, k,
                slot_src.to(device), pair_off.to(device), onehot.to(device),
                pair_onehot.to(device), gram_idx.to(device), e_jk.to(device),
                feat_idx.to(device), slot_rows.to(device), slot_w.to(device),
                sae_ev.to(device), torch.ones(1, device=device), w1, ws)

    @torch.jit.export
    def prepare(self, atomic_numbers: torch.Tensor, batch: torch.Tensor) -> None:
        """Validate the composition and store its static layout (once before MD)."""
        self.prepared = False
        lay = self._layout(atomic_numbers, batch)
        self.p_n_atoms = lay[0]
        self.p_n_struct = lay[1]
        self.p_n_max = lay[2]
        self.p_identity = lay[3]
        self.p_n_groups = lay[4]
        self.p_group_size = lay[5]
        self.p_slot_src = lay[6]
        self.p_pair_off = lay[7]
        self.p_onehot = lay[8]
        self.p_pair_onehot = lay[9]
        self.p_gram_idx = lay[10]
        self.p_e_jk = lay[11]
        self.p_feat_idx = lay[12]
        self.p_slot_rows = lay[13]
        self.p_slot_w = lay[14]
        self.p_sae_ev = lay[15]
        self.p_one = lay[16]
        self.p_w1 = lay[17]
        self.p_ws = lay[18]
        self.prepared = True

    # ------------------------------------------------------------------
    # the static computation (no host synchronisation)
    # ------------------------------------------------------------------

    def _energies(self, positions: torch.Tensor, n_struct: int, n_max: int, identity: bool,
                  n_groups: int, group_size: int, slot_src: torch.Tensor,
                  pair_off: torch.Tensor, onehot: torch.Tensor, pair_onehot: torch.Tensor,
                  gram_idx: torch.Tensor, e_jk: torch.Tensor, feat_idx: torch.Tensor,
                  slot_rows: torch.Tensor, slot_w: torch.Tensor, sae_ev: torch.Tensor,
                  one: torch.Tensor, w1: torch.Tensor, ws: List[torch.Tensor]) -> torch.Tensor:
        s = n_struct
        n = n_max
        n_p = gram_idx.size(0) - n
        x = positions.to(torch.float32)
        if identity:
            xp = x.reshape(s, n, 3)
        else:
            xp = x.index_select(0, slot_src).view(s, n, 3)
        # vec[s, i, j] = x_j - x_i; the Gram matrix of each centre's vectors
        # holds the squared distances (diagonal) and the dot products (j < k).
        vec = (xp.unsqueeze(1) - xp.unsqueeze(2)).view(s * n, n, 3)
        gram = torch.bmm(vec, vec.transpose(1, 2))
        d2_dot = gram.view(s, n, n * n).index_select(2, gram_idx).split([n, n_p], 2)
        d = torch.sqrt(d2_dot[0] + pair_off)  # [S, N, N]
        dot = d2_dot[1]  # [S, N, P]
        # fc(r) = 0.5 cos(min(pi r / Rc, pi)) + 0.5 for both cutoffs at once:
        # torchani's value for r <= Rc, exactly 0 with zero gradient beyond
        fc = 0.5 * torch.cos(torch.clamp(d.unsqueeze(2) * self.cutoff_k.view(1, 1, 2, 1),
                                         max=math.pi)) + 0.5  # [S, N, 2, N]
        fc_ra = fc.unbind(2)

        # radial: terms [S, i, f, j]; sum over j per species by a one-hot bmm
        t_r = d.unsqueeze(2) - self.shf_r.view(1, 1, -1, 1)
        rad = torch.exp((t_r ** 2) * (-self.eta_r)) * fc_ra[0].unsqueeze(2)
        aev_r = torch.bmm(rad.view(s, n * self.n_rad, n), onehot)  # [S, N*R, species]

        # angular: (j, k, mean) of each pair j < k by one-hot matmuls
        d_jkm = torch.matmul(d, e_jk).view(s, n, 3, n_p).unbind(2)
        f_jk = torch.matmul(fc_ra[1], e_jk.narrow(1, 0, 2 * n_p)).view(s, n, 2, n_p).unbind(2)
        cos_t = dot / (d_jkm[0] * d_jkm[1])
        theta = torch.acos(0.95 * cos_t)
        ang = ((1 + torch.cos(theta.unsqueeze(2) - self.shf_z.view(1, 1, -1, 1))) / 2) ** self.zeta
        t_a = d_jkm[2].unsqueeze(2) - self.shf_a.view(1, 1, -1, 1)
        rad_a = torch.exp((t_a ** 2) * (-self.eta_a)) * (f_jk[0] * f_jk[1]).unsqueeze(2)
        terms = rad_a.unsqueeze(3) * ang.unsqueeze(2)  # [S, N, A, Z, P]
        aev_a = torch.bmm(terms.view(s, n * self.n_ang, n_p), pair_onehot)  # [S, N*A*Z, pairs]

        # networks, transposed: all species groups x members in one bmm per layer
        m = self.n_members
        k = group_size
        flat = torch.cat([aev_r.view(-1), aev_a.view(-1), one])
        h = flat.index_select(0, feat_idx).view(n_groups, self.n_in, k)
        h = torch.nn.functional.celu(torch.bmm(w1, h), alpha=self.celu_alpha)
        h = h.view(n_groups * m, self.h_first, k)
        n_layers = len(ws)
        for i in range(n_layers):
            h = torch.bmm(ws[i], h)
            if i < n_layers - 1:
                h = torch.nn.functional.celu(h, alpha=self.celu_alpha)
        # [groups * members * K] -> [S, slots x members]; mean over members and
        # sum over the structure's atoms in one bmm
        y = h.view(-1).index_select(0, slot_rows).view(s, 1, n * m)
        e_nn = torch.bmm(y, slot_w).view(s)  # Hartree, float32
        return torch.add(sae_ev, e_nn.to(torch.float64), alpha=self.hartree_to_ev)

    @torch.jit.export
    def forward_prepared(self, positions: torch.Tensor) -> torch.Tensor:
        """Energies (float64, eV) of the prepared structures; no host syncs."""
        if not self.prepared:
            raise RuntimeError(
                "ANI static model: call prepare(atomic_numbers, batch) before forward_prepared")
        if positions.dim() != 2 or positions.size(0) != self.p_n_atoms or positions.size(1) != 3:
            raise RuntimeError(
                "forward_prepared: positions must have shape [{}, 3] (the prepared atoms), "
                "got {}".format(self.p_n_atoms, positions.shape))
        if positions.device != self.p_pair_off.device:
            raise RuntimeError(
                "forward_prepared: positions on {}, prepared on {}".format(
                    positions.device, self.p_pair_off.device))
        return self._energies(positions, self.p_n_struct, self.p_n_max, self.p_identity,
                              self.p_n_groups, self.p_group_size, self.p_slot_src,
                              self.p_pair_off, self.p_onehot, self.p_pair_onehot,
                              self.p_gram_idx, self.p_e_jk, self.p_feat_idx,
                              self.p_slot_rows, self.p_slot_w, self.p_sae_ev,
                              self.p_one, self.p_w1, self.p_ws)

    def forward(self, atomic_numbers: torch.Tensor, positions: torch.Tensor,
                batch: torch.Tensor) -> torch.Tensor:
        n = atomic_numbers.size(0)
        if positions.dim() != 2 or positions.size(0) != n or positions.size(1) != 3:
            raise RuntimeError("positions must have shape [N, 3]")
        lay = self._layout(atomic_numbers.to(positions.device), batch.to(positions.device))
        return self._energies(positions, lay[1], lay[2], lay[3], lay[4], lay[5], lay[6],
                              lay[7], lay[8], lay[9], lay[10], lay[11], lay[12], lay[13],
                              lay[14], lay[15], lay[16], lay[17], lay[18])


# --------------------------------------------------------------------------
# build from torchani
# --------------------------------------------------------------------------


def build_static(static_name: str, torchani_version: str) -> ANIStatic:
    name = STATIC_MODELS[static_name]
    parts = ani_build.extract(name)
    spec = parts["spec"]
    symbols, numbers = parts["symbols"], parts["numbers"]
    rad, angm = parts["rad"], parts["angm"]
    consts, w_first, layers = parts["consts"], parts["w_first"], parts["layers"]
    n_members, padded, dims, sae = (consts["n_members"], parts["padded"], parts["dims"],
                                    parts["sae"])
    meta = {
        "name": static_name,
        "description": spec["description"],
        "variant": "static-shape",
        "static_shape_note": STATIC_NOTE,
        "cost_scaling": COST_SCALING,
        "interface": [
            "forward(atomic_numbers int64[N], positions float[N,3], batch int64[N]) -> float64[S] eV",
            "prepare(atomic_numbers int64[N], batch int64[N]) -> None",
            "forward_prepared(positions float[N,3]) -> float64[S] eV (no host syncs)",
            "is_prepared() -> bool",
        ],
        "dynamic_counterpart": name,
        "energy_unit": "eV",
        "length_unit": "angstrom",
        "energy_dtype": "float64",
        "compute_dtype": "float32 (positions of other floating dtypes are cast to float32)",
        "supported_elements": numbers,
        "species_order": symbols,
        "ensemble_size": n_members,
        "network_widths": dims,
        "padded_network_widths": padded,
        "radial_cutoff_angstrom": float(rad.cutoff),
        "angular_cutoff_angstrom": float(angm.cutoff),
        "periodic": False,
        "hartree_to_ev": HARTREE_TO_EV,
        "level_of_theory": spec["level_of_theory"],
        "source": (
            f"NeuroChem parameter set {spec['resource']} from the torchani 2.0 wheel "
            f"({export_ani.WHEEL_NAME}, sha256 {export_ani.WHEEL_SHA256}), loaded with "
            f"torchani {torchani_version} (pyaev strategy) and re-implemented with static "
            f"shapes by python/export_ani_static.py"
        ),
        "licence": "MIT (torchani)",
        "reference": spec["reference"],
    }
    model = ANIStatic(consts, w_first, layers, numbers, sae,
                      json.dumps(meta, indent=None, sort_keys=False))
    return model.eval()


def main(argv: List[str]) -> int:
    return export_ani.export_variant(argv, STATIC_MODELS, build_static, "static ANI models", "export_ani_static")


if __name__ == "__main__":
    # Run main() of the module imported under its own name, so the scripted
    # classes are named __torch__.export_ani_static.*, not __torch__.*.
    import export_ani_static

    sys.exit(export_ani_static.main(sys.argv[1:]))
