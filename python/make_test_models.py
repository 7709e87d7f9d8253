"""Export the small TorchScript models used by tests and examples.

    python python/make_test_models.py            # writes models/ and tests/data/

models/morse_test.pt
    A pairwise Morse potential that honours the mlff-md model interface:
    forward(atomic_numbers int64[N], positions float[N,3] (Å), batch int64[N])
    -> energies[n_structures] (eV). Every pair of atoms *within one structure*
    interacts with D_e = 0.8 eV, a = 1.8 1/Å and r_e = the sum of the two
    elements' covalent radii, switched off smoothly (C2, quintic) between
    1.15 r_e and 1.45 r_e, so only bonded-distance pairs attract and a molecule
    keeps its bonds instead of collapsing into a cluster. It is a toy (no
    angle terms, no dispersion), but it is smooth, cheap, real TorchScript,
    handles any mix of molecules in one batch, and works in float32 and float64.
    A coordination penalty 3 eV * (excess neighbours)^2 keeps atoms from
    binding more partners than their usual valence.
    It exports `supported_elements()` (the atomic numbers it has radii for)
    and `metadata()` (a JSON string), which mlff-md reads when present.

tests/data/bad_signature.pt, bad_shape.pt, nan_energy.pt
    Deliberately broken models for the error-handling tests.

tests/data/prepared_fails_after_2.pt
    oom_above_3.pt whose forward_prepared() raises an error other than
    running out of memory after two calls (the engine reports it).

tests/data/oom_always.pt
    OutOfMemoryAbove with max_structures = 0: forward() runs out of memory
    even for one structure (the engine stops halving at one member and
    reports it).

tests/data/charged_morse.pt
    The Morse toy model taking each structure's total charge (takes_charge()
    = True, forward(atomic_numbers, positions, batch, charge)): its energy is
    morse_test's plus 1 eV per elementary charge, so a test can see which
    charge reached which structure.

tests/data/lj_pairs_v2.pt
    A model of interface v2 (models/README.md): truncated Lennard-Jones
    (epsilon 0.0104 eV, sigma 3.4 A, cutoff 8.5 A) over the engine's pairs,
    float64, with cutoffs() = [8.5, 4.5]. Pairs closer than 4.5 A are summed
    from the inner slot list, the others from the full rows, so the total
    equals plain truncated Lennard-Jones only if the engine's inner slots
    list every close pair exactly once. It has prepare() and
    forward_pairs_prepared() (static shapes).
"""

import json
import os
import sys
from typing import List

import torch

import model_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Covalent radii in Å (Cordero et al., Dalton Trans. 2008) for H..Ar.
COVALENT_RADII = {
    1: 0.31, 2: 0.28, 3: 1.28, 4: 0.96, 5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66,
    9: 0.57, 10: 0.58, 11: 1.66, 12: 1.41, 13: 1.21, 14: 1.11, 15: 1.07,
    16: 1.05, 17: 1.02, 18: 1.06,
}

# Usual largest number of bonded neighbours (others: 4).
MAX_NEIGHBOURS = {1: 1, 2: 0, 7: 3, 8: 2, 9: 1, 10: 0, 17: 1, 18: 0}


class MorsePairModel(torch.nn.Module):
    def __init__(self, depth: float = 0.8, stiffness: float = 1.8):
        super().__init__()
        radii = torch.zeros(max(COVALENT_RADII) + 1, dtype=torch.float64)
        for z, r in COVALENT_RADII.items():
            radii[z] = r
        self.register_buffer("radii", radii)
        max_neighbours = torch.full((max(COVALENT_RADII) + 1,), 4.0, dtype=torch.float64)
        for z, n in MAX_NEIGHBOURS.items():
            max_neighbours[z] = n
        self.register_buffer("max_neighbours", max_neighbours)
        self.crowding = 3.0
        self.depth = depth
        self.stiffness = stiffness
        self.elements = sorted(COVALENT_RADII)
        self.meta = json.dumps(
            {
                "name": "morse_test",
                "description": "pairwise Morse toy potential for tests (not physical)",
                "energy_unit": "eV",
                "length_unit": "angstrom",
                "licence": "MIT",
            }
        )

    @torch.jit.export
    def supported_elements(self) -> list[int]:
        return self.elements

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        n_total = positions.shape[0]
        n_struct = int(batch.max().item()) + 1
        counts = torch.bincount(batch, minlength=n_struct)
        max_n = int(counts.max().item())
        first = torch.cumsum(counts, 0) - counts
        # Index of each atom within its structure, for any atom order: rank
        # the atoms by structure (stable), then subtract the structure's start.
        order = torch.argsort(batch, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n_total, device=positions.device)
        local = rank - first[batch]
        # Pad the flat batch into [S, max_n, 3]; index_put is out of place so
        # gradients flow back to `positions`.
        padded = positions.new_zeros((n_struct, max_n, 3)).index_put(
            (batch, local), positions
        )
        valid = torch.zeros((n_struct, max_n), dtype=torch.bool, device=positions.device)
        valid = valid.index_put((batch, local), torch.ones_like(batch, dtype=torch.bool))
        # Padding atoms get radius 1 so r_e never vanishes; their pairs are masked.
        radius = torch.ones((n_struct, max_n), dtype=positions.dtype, device=positions.device)
        radius = radius.index_put((batch, local), self.radii.to(positions.dtype)[atomic_numbers])

        diff = padded.unsqueeze(2) - padded.unsqueeze(1)
        upper = torch.triu(torch.ones((max_n, max_n), dtype=torch.bool, device=positions.device), 1)
        mask = valid.unsqueeze(2) & valid.unsqueeze(1) & upper
        r2 = (diff * diff).sum(-1)
        # Masked pairs get r = 1 so the sqrt has a finite gradient; their energy is zeroed.
        r = torch.sqrt(torch.where(mask, r2, torch.ones_like(r2)))
        r_e = radius.unsqueeze(2) + radius.unsqueeze(1)
        x = 1.0 - torch.exp(-self.stiffness * (r - r_e))
        # Quintic switch: 1 below 1.15 r_e, 0 beyond 1.45 r_e, C2 in between.
        t = torch.clamp((r / r_e - 1.15) / 0.3, 0.0, 1.0)
        switch = 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)
        pair = self.depth * (x * x - 1.0) * switch
        pair = torch.where(mask, pair, torch.zeros_like(pair))
        # Valence saturation: the switch counts neighbours; an atom with more
        # than its element's usual maximum pays a quadratic penalty, so atoms
        # cannot keep binding more partners and the molecule keeps its shape.
        neighbour = torch.where(mask, switch, torch.zeros_like(switch))
        coordination = neighbour.sum(2) + neighbour.sum(1)
        max_cn = torch.zeros((n_struct, max_n), dtype=positions.dtype, device=positions.device)
        max_cn = max_cn.index_put((batch, local), self.max_neighbours.to(positions.dtype)[atomic_numbers])
        excess = torch.relu(coordination - max_cn)
        penalty = self.crowding * (excess * excess)
        return pair.sum((1, 2)) + penalty.sum(1)


class ChargedMorse(torch.nn.Module):
    """morse_test plus 1 eV per elementary charge of the structure."""

    def __init__(self):
        super().__init__()
        self.base = MorsePairModel()

    @torch.jit.export
    def takes_charge(self) -> bool:
        return True

    @torch.jit.export
    def supported_elements(self) -> list[int]:
        return self.base.supported_elements()

    def forward(self, atomic_numbers: torch.Tensor, positions: torch.Tensor,
                batch: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        e = self.base(atomic_numbers, positions, batch)
        return e + charge.to(e.dtype)


class BadSignature(torch.nn.Module):
    def forward(self, positions: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return (positions * positions).sum()


class BadShape(torch.nn.Module):
    """Returns per-atom energies instead of per-structure ones."""

    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        return (positions * positions).sum(-1)


class IntegerEnergy(torch.nn.Module):
    """Returns int64 energies."""

    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        n_struct = int(batch.max().item()) + 1
        return torch.zeros(n_struct, dtype=torch.long).index_add(0, batch, atomic_numbers)


class NoGradEnergy(torch.nn.Module):
    """Energies that do not depend on the positions (no gradient)."""

    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        n_struct = int(batch.max().item()) + 1
        return torch.zeros(n_struct, dtype=positions.dtype)


class OutOfMemoryAbove(torch.nn.Module):
    """The Morse test model, failing as the CUDA caching allocator does
    (same message) when asked for more than `max_structures` structures at
    once through forward(), and on every forward_prepared() call after the
    first `prepared_calls`: lets CPU tests drive the engine's OOM handling
    (halving chunks, falling back from the prepared path)."""

    def __init__(self, max_structures: int = 3, prepared_calls: int = 2):
        super().__init__()
        self.inner = MorsePairModel()
        self.max_structures = max_structures
        self.prepared_calls = prepared_calls
        self.calls = 0
        self.z = torch.zeros(0, dtype=torch.long)
        self.batch = torch.zeros(0, dtype=torch.long)

    def _oom(self):
        raise RuntimeError(
            "CUDA out of memory. Tried to allocate 20.00 GiB (test model: OutOfMemoryAbove)"
        )

    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        if int(batch.max().item()) + 1 > self.max_structures:
            self._oom()
        return self.inner(atomic_numbers, positions, batch)

    @torch.jit.export
    def prepare(self, atomic_numbers: torch.Tensor, batch: torch.Tensor):
        self.z = atomic_numbers
        self.batch = batch
        self.calls = 0

    @torch.jit.export
    def forward_prepared(self, positions: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.prepared_calls:
            self._oom()
        return self.inner(self.z, positions, self.batch)


class PreparedFailsAfter(OutOfMemoryAbove):
    """OutOfMemoryAbove whose forward_prepared() fails for another reason
    (not memory) after its first `prepared_calls` calls: the engine must
    report it, not fall back to forward() as it does on running out of
    memory."""

    def _oom(self):
        raise RuntimeError("forward_prepared broke (test model: PreparedFailsAfter)")


class NanAfter(torch.nn.Module):
    """The Morse test model until its `calls`-th call; from then on the
    energy (and so the forces) of structure 1 is NaN: a member that blows up
    mid-run, at a known point, for the engine's blow-up handling."""

    def __init__(self, calls: int = 20):
        super().__init__()
        self.inner = MorsePairModel()
        self.after = calls
        self.calls = 0

    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        self.calls += 1
        e = self.inner(atomic_numbers, positions, batch)
        if self.calls >= self.after:
            poison = torch.zeros_like(e)
            poison[1] = float("nan")
            e = e + poison
        return e


class NanEnergy(torch.nn.Module):
    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        n_struct = int(batch.max().item()) + 1
        e = torch.zeros(n_struct, dtype=positions.dtype).index_add(
            0, batch, (positions * positions).sum(-1)
        )
        return e * float("nan")


class LennardJonesPairsV2(torch.nn.Module):
    """Interface v2 test model (see the module docstring)."""

    def __init__(self, epsilon: float = 0.0104, sigma: float = 3.4, cutoff: float = 8.5,
                 inner: float = 4.5):
        super().__init__()
        self.epsilon = epsilon
        self.sigma = sigma
        self.cutoff = cutoff
        self.inner = inner
        self.n_prepared = 0
        self.prepared_batch = torch.zeros(0, dtype=torch.long)

    @torch.jit.export
    def cutoffs(self) -> List[float]:
        return [self.cutoff, self.inner]

    def _pair(self, r2: torch.Tensor, use: torch.Tensor) -> torch.Tensor:
        safe = torch.where(use, r2, torch.ones_like(r2))
        s6 = (self.sigma * self.sigma / safe) ** 3
        return torch.where(use, 4.0 * self.epsilon * (s6 * s6 - s6), torch.zeros_like(r2))

    def _energies(self, batch: torch.Tensor, n_struct: int, vectors: torch.Tensor,
                  mask: torch.Tensor, inner_slots: List[torch.Tensor],
                  inner_masks: List[torch.Tensor]) -> torch.Tensor:
        r2 = (vectors * vectors).sum(-1)
        outer = mask & (r2 < self.cutoff * self.cutoff) & (r2 >= self.inner * self.inner)
        per_atom = self._pair(r2, outer).sum(1)
        r2_in = torch.gather(r2, 1, inner_slots[0])
        close = inner_masks[0] & (r2_in < self.inner * self.inner)
        per_atom = per_atom + self._pair(r2_in, close).sum(1)
        return torch.zeros(n_struct, dtype=vectors.dtype).index_add(0, batch, 0.5 * per_atom)

    @torch.jit.export
    def forward_pairs(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                      neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                      inner_slots: List[torch.Tensor],
                      inner_masks: List[torch.Tensor]) -> torch.Tensor:
        n_struct = int(batch.max().item()) + 1
        return self._energies(batch, n_struct, vectors, mask, inner_slots, inner_masks)

    @torch.jit.export
    def prepare(self, atomic_numbers: torch.Tensor, batch: torch.Tensor) -> None:
        self.n_prepared = int(batch.max().item()) + 1
        self.prepared_batch = batch.clone()

    @torch.jit.export
    def forward_pairs_prepared(self, neighbors: torch.Tensor, vectors: torch.Tensor,
                               mask: torch.Tensor, inner_slots: List[torch.Tensor],
                               inner_masks: List[torch.Tensor]) -> torch.Tensor:
        return self._energies(self.prepared_batch, self.n_prepared, vectors, mask,
                              inner_slots, inner_masks)

    def forward(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                inner_slots: List[torch.Tensor],
                inner_masks: List[torch.Tensor]) -> torch.Tensor:
        return self.forward_pairs(atomic_numbers, batch, neighbors, vectors, mask,
                                  inner_slots, inner_masks)


class OutOfMemoryPairsAbove(LennardJonesPairsV2):
    """The v2 Lennard-Jones test model, failing as the CUDA caching
    allocator does (same message) whenever one call holds more than
    `max_atoms` atoms. A model of pairs is evaluated whole (no chunks), so
    this drives the callers' own out-of-memory handling (the screen halves
    its batches)."""

    def __init__(self, max_atoms: int = 80):
        super().__init__()
        self.max_atoms = max_atoms

    def _check(self, n: int):
        if n > self.max_atoms:
            raise RuntimeError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (test model: OutOfMemoryPairsAbove)"
            )

    @torch.jit.export
    def forward_pairs(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                      neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                      inner_slots: List[torch.Tensor],
                      inner_masks: List[torch.Tensor]) -> torch.Tensor:
        self._check(atomic_numbers.size(0))
        n_struct = int(batch.max().item()) + 1
        return self._energies(batch, n_struct, vectors, mask, inner_slots, inner_masks)

    @torch.jit.export
    def forward_pairs_prepared(self, neighbors: torch.Tensor, vectors: torch.Tensor,
                               mask: torch.Tensor, inner_slots: List[torch.Tensor],
                               inner_masks: List[torch.Tensor]) -> torch.Tensor:
        self._check(self.prepared_batch.size(0))
        return self._energies(self.prepared_batch, self.n_prepared, vectors, mask,
                              inner_slots, inner_masks)


def save(module: torch.nn.Module, path: str) -> None:
    # Byte-reproducible (python/model_files.py): regenerating the committed
    # files changes them only when a model's code or constants change.
    scripted = torch.jit.script(module)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    prefix = os.path.splitext(os.path.basename(path))[0]
    with open(path, "wb") as f:
        f.write(model_files.save_canonical(scripted, prefix))
    print(f"wrote {os.path.relpath(path, ROOT)}")


def self_check(path: str) -> None:
    """The exported model gives the same energies batched and one by one, and
    forces that match finite differences."""
    model = torch.jit.load(path)
    torch.manual_seed(0)
    pos = (torch.rand(7, 3, dtype=torch.float64) * 3.0)
    z = torch.tensor([8, 1, 1, 6, 1, 1, 1])
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    e = model(z, pos, batch)
    e0 = model(z[:3], pos[:3], torch.zeros(3, dtype=torch.long))
    e1 = model(z[3:], pos[3:], torch.zeros(4, dtype=torch.long))
    assert torch.allclose(e, torch.cat([e0, e1])), (e, e0, e1)
    # Interleaved atom order gives the same energies.
    perm = torch.tensor([3, 0, 4, 1, 5, 2, 6])
    assert torch.allclose(model(z[perm], pos[perm], batch[perm]), e)
    p = pos.clone().requires_grad_(True)
    f = -torch.autograd.grad(model(z, p, batch).sum(), p)[0]
    h = 1e-6
    for i, k in [(0, 0), (4, 2)]:
        dp = torch.zeros_like(pos)
        dp[i, k] = h
        fd = -(model(z, pos + dp, batch).sum() - model(z, pos - dp, batch).sum()) / (2 * h)
        assert abs(fd - f[i, k]) < 1e-6 * max(1.0, abs(float(fd))), (fd, f[i, k])


def main() -> int:
    morse = os.path.join(ROOT, "models", "morse_test.pt")
    save(MorsePairModel(), morse)
    self_check(morse)
    data = os.path.join(ROOT, "tests", "data")
    save(BadSignature(), os.path.join(data, "bad_signature.pt"))
    save(BadShape(), os.path.join(data, "bad_shape.pt"))
    save(NanEnergy(), os.path.join(data, "nan_energy.pt"))
    save(IntegerEnergy(), os.path.join(data, "int_energy.pt"))
    save(NoGradEnergy(), os.path.join(data, "no_grad_energy.pt"))
    save(OutOfMemoryAbove(), os.path.join(data, "oom_above_3.pt"))
    save(PreparedFailsAfter(), os.path.join(data, "prepared_fails_after_2.pt"))
    save(OutOfMemoryAbove(max_structures=0), os.path.join(data, "oom_always.pt"))
    save(NanAfter(), os.path.join(data, "nan_after_20_calls.pt"))
    save(LennardJonesPairsV2(), os.path.join(data, "lj_pairs_v2.pt"))
    save(OutOfMemoryPairsAbove(), os.path.join(data, "oom_pairs_above_80.pt"))
    save(ChargedMorse(), os.path.join(data, "charged_morse.pt"))
    with open(os.path.join(data, "not_torchscript.pt"), "w") as f:
        f.write("this is not a TorchScript archive\n")
    print("self-check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
