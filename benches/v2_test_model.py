#!/usr/bin/env python3
"""A small v2 (neighbour-list) TorchScript test model for the benchmark scripts.

    python benches/v2_test_model.py /tmp/morse_nl.pt     # write it
    python benches/v2_test_model.py /tmp/morse_nl.pt --check   # and compare with pair_list.py

It honours "Interface v2: pairs from the engine" (models/README.md):
cutoffs() = [5.2, 3.5] like ANI, forward_pairs, prepare + forward_pairs_prepared
(no host sync, static shapes), supported_elements() = [1, 6, 7, 8], metadata().
It stands in for models/ani1x_nl.pt where that file is not built yet. Not a
physical model:

  per entry (i, j, |v| = d):  Morse as models/morse_test.pt (D 0.8 eV, a 1.8/A,
      r_e = sum of covalent radii, quintic switch off between 1.15 and 1.45 r_e)
      + 0.01 exp(-(d - 1)) fc(d; 5.2)   (a weak tail over the whole row);
      half of each entry goes to atom i (the list is full)
  per atom: 3 eV * relu(coordination - usual valence)^2 (as morse_test)
  angular (inner slots, 3.5 A): 0.02 * sum_{p,q} fc_p fc_q cos^2(theta_pq)
  fc(d; rc) = 0.5 cos(pi min(d / rc, 1)) + 0.5 (exactly 0 at and beyond rc)

Structure energies are summed through a padded [S, Nmax] layout made by
prepare() (index_copy, whose backward is a gather): no atomic adds over atoms.
"""

import json
import math
import os
import sys
from typing import List

import torch

COVALENT_RADII = {1: 0.31, 6: 0.76, 7: 0.71, 8: 0.66}
MAX_NEIGHBOURS = {1: 1.0, 6: 4.0, 7: 3.0, 8: 2.0}


class MorseNL(torch.nn.Module):
    def __init__(self):
        super().__init__()
        radii = torch.zeros(9, dtype=torch.float64)
        valence = torch.zeros(9, dtype=torch.float64)
        for z, r in COVALENT_RADII.items():
            radii[z] = r
            valence[z] = MAX_NEIGHBOURS[z]
        self.register_buffer("radii", radii)
        self.register_buffer("valence", valence)
        self.elements: List[int] = sorted(COVALENT_RADII)
        self.rc = 5.2
        self.rc_inner = 3.5
        self.meta = json.dumps({"name": "morse_nl_test", "interface": 2,
                                "description": "v2 toy pair + angular potential for benchmarks (not physical)",
                                "energy_unit": "eV", "length_unit": "angstrom"})
        # prepared state
        self.p_radius = torch.zeros(0, dtype=torch.float64)
        self.p_valence = torch.zeros(0, dtype=torch.float64)
        self.p_layout = torch.zeros(0, dtype=torch.long)
        self.p_structures = 0
        self.p_width = 0
        self.prepared = False

    @torch.jit.export
    def cutoffs(self) -> List[float]:
        return [self.rc, self.rc_inner]

    @torch.jit.export
    def supported_elements(self) -> List[int]:
        return self.elements

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    @torch.jit.export
    def is_prepared(self) -> bool:
        return self.prepared

    def _layout(self, z: torch.Tensor, batch: torch.Tensor):
        bad: List[int] = []
        values: List[int] = torch.unique(z).tolist()
        for v in values:
            if v not in self.elements:
                bad.append(v)
        if len(bad) > 0:
            raise RuntimeError("morse_nl_test: unsupported atomic numbers " + str(bad))
        n = z.shape[0]
        s = int(batch.max().item()) + 1
        counts = torch.bincount(batch, minlength=s)
        width = int(counts.max().item())
        order = torch.argsort(batch, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=z.device)
        local = rank - (torch.cumsum(counts, 0) - counts)[batch]
        layout = batch * width + local
        radii = self.radii.to(z.device)
        valence = self.valence.to(z.device)
        return radii[z], valence[z], layout, s, width

    @torch.jit.export
    def prepare(self, atomic_numbers: torch.Tensor, batch: torch.Tensor) -> None:
        self.prepared = False
        radius, valence, layout, s, width = self._layout(atomic_numbers, batch)
        self.p_radius, self.p_valence, self.p_layout = radius, valence, layout
        self.p_structures, self.p_width = s, width
        self.prepared = True

    def _energy(self, radius: torch.Tensor, valence: torch.Tensor, layout: torch.Tensor,
                s: int, width: int, neighbors: torch.Tensor, vectors: torch.Tensor,
                mask: torch.Tensor, inner_slots: List[torch.Tensor],
                inner_masks: List[torch.Tensor]) -> torch.Tensor:
        dt = vectors.dtype
        d = torch.sqrt((vectors * vectors).sum(2))  # masked entries: 2 rc
        r_e = (radius.unsqueeze(1) + radius[neighbors]).to(dt)
        x = 1.0 - torch.exp(-1.8 * (d - r_e))
        t = torch.clamp((d / r_e - 1.15) / 0.3, 0.0, 1.0)
        switch = 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)
        fc = 0.5 * torch.cos(math.pi * torch.clamp(d / self.rc, max=1.0)) + 0.5
        pair = 0.8 * (x * x - 1.0) * switch + 0.01 * torch.exp(1.0 - d) * fc
        zero = torch.zeros((), dtype=dt, device=vectors.device)
        pair = torch.where(mask, pair, zero)
        cn = torch.where(mask, switch, zero).sum(1)
        excess = torch.relu(cn - valence.to(dt))
        e_atom = 0.5 * pair.sum(1) + 3.0 * excess * excess
        slots, smask = inner_slots[0], inner_masks[0]
        va = torch.gather(vectors, 1, slots.unsqueeze(2).expand(-1, -1, 3))
        da = torch.where(smask, torch.gather(d, 1, slots), 2.0 * self.rc)
        fa = 0.5 * torch.cos(math.pi * torch.clamp(da / self.rc_inner, max=1.0)) + 0.5
        fa = torch.where(smask, fa, zero)
        cos = torch.bmm(va, va.transpose(1, 2)) / (da.unsqueeze(2) * da.unsqueeze(1))
        e_atom = e_atom + 0.02 * (fa.unsqueeze(2) * fa.unsqueeze(1) * cos * cos).sum((1, 2))
        padded = torch.zeros(s * width, dtype=torch.float64, device=vectors.device)
        padded = padded.index_copy(0, layout, e_atom.to(torch.float64))
        return padded.view(s, width).sum(1)

    @torch.jit.export
    def forward_pairs(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                      neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                      inner_slots: List[torch.Tensor], inner_masks: List[torch.Tensor]) -> torch.Tensor:
        radius, valence, layout, s, width = self._layout(atomic_numbers, batch)
        return self._energy(radius, valence, layout, s, width, neighbors, vectors, mask,
                            inner_slots, inner_masks)

    @torch.jit.export
    def forward_pairs_prepared(self, neighbors: torch.Tensor, vectors: torch.Tensor,
                               mask: torch.Tensor, inner_slots: List[torch.Tensor],
                               inner_masks: List[torch.Tensor]) -> torch.Tensor:
        if not self.prepared:
            raise RuntimeError("morse_nl_test: forward_pairs_prepared before prepare")
        return self._energy(self.p_radius, self.p_valence, self.p_layout, self.p_structures,
                            self.p_width, neighbors, vectors, mask, inner_slots, inner_masks)

    def forward(self, atomic_numbers: torch.Tensor, batch: torch.Tensor, neighbors: torch.Tensor,
                vectors: torch.Tensor, mask: torch.Tensor, inner_slots: List[torch.Tensor],
                inner_masks: List[torch.Tensor]) -> torch.Tensor:
        return self.forward_pairs(atomic_numbers, batch, neighbors, vectors, mask,
                                  inner_slots, inner_masks)


def export(path: str) -> None:
    m = torch.jit.script(MorseNL())
    m.save(path)


def check(path: str) -> None:
    """Prepared vs general path, forces from pair_list.py vs finite differences."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import pair_list  # the other helper's reference of the engine's inputs

    m = torch.jit.load(path)
    torch.manual_seed(0)
    z = torch.tensor([8, 1, 1, 6, 1, 1, 1, 7, 1, 1])
    x = torch.tensor([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [3.0, 0.2, 0.1], [4.0, 0.4, 0.0],
                      [2.7, 1.2, 0.3], [2.8, -0.5, 0.9], [0.5, 3.1, 1.0], [1.3, 3.5, 1.2],
                      [0.4, 2.3, 1.7]], dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    e, f = pair_list.energies_and_forces(m, z, x, batch, dtype=torch.float64)
    e2, f2 = pair_list.energies_and_forces(m, z, x, batch, prepared=True, dtype=torch.float64)
    assert torch.equal(e, e2) and torch.equal(f, f2), "prepared != general"
    h = 1e-5
    fd = torch.zeros_like(x)
    for i in range(x.shape[0]):
        for a in range(3):
            xp, xm = x.clone(), x.clone()
            xp[i, a] += h
            xm[i, a] -= h
            ep, _ = pair_list.energies_and_forces(m, z, xp, batch, dtype=torch.float64)
            em, _ = pair_list.energies_and_forces(m, z, xm, batch, dtype=torch.float64)
            fd[i, a] = -(ep.sum() - em.sum()) / (2 * h)
    err = float((fd - f).abs().max())
    print(f"energies {e.tolist()}, |F - F_fd|max = {err:.2e} eV/A")
    assert err < 1e-6
    try:
        m.prepare(torch.tensor([8, 16]), torch.tensor([0, 0]))
        raise AssertionError("S accepted")
    except (RuntimeError, torch.jit.Error) as exc:
        assert "16" in str(exc)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/morse_nl.pt"
    export(out)
    print(f"wrote {out}")
    if "--check" in sys.argv:
        check(out)
