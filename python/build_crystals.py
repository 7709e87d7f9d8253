"""Write the committed crystal structures in systems/crystals/ (PDB with
CRYST1), for the periodic-materials model (models/sevennet_0.pt):

    python python/build_crystals.py

  si_diamond_64.pdb  Si diamond, 2x2x2 conventional cells (64 atoms,
                     a = 5.431 A, cell 10.862 A: wider than twice SevenNet-0's
                     5 A cutoff, as the engine requires), every coordinate
                     displaced by a uniform random amount of up to 0.05 A
                     (Python's random.Random(2026), so the file is the same
                     on every machine) so that forces are not zero.
  si_diamond_512.pdb Si diamond, 4x4x4 conventional cells (512 atoms, cell
                     21.724 A), rattled the same way (random.Random(2027)):
                     configs/materials_nvt.toml and the GPU benchmark.

Standard library only. Provenance: systems/README.md.
"""

import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "systems", "crystals")

A_SI = 5.431  # A, silicon's lattice constant at room temperature
RATTLE = 0.05  # A
SEED = 2026


def diamond(a, reps, element, rng):
    """Atoms of the diamond structure: 8 per conventional cell, rattled."""
    fcc = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
    basis = fcc + [(x + 0.25, y + 0.25, z + 0.25) for x, y, z in fcc]
    atoms = []
    for i in range(reps):
        for j in range(reps):
            for k in range(reps):
                for x, y, z in basis:
                    pos = [a * (c + n) for c, n in zip((x, y, z), (i, j, k))]
                    atoms.append((element, [p + rng.uniform(-RATTLE, RATTLE) for p in pos]))
    return atoms


def pdb(atoms, box, title):
    lines = [f"REMARK   1 {title}",
             f"CRYST1{box:9.3f}{box:9.3f}{box:9.3f}{90.0:7.2f}{90.0:7.2f}{90.0:7.2f} P 1           1"]
    for n, (element, (x, y, z)) in enumerate(atoms, start=1):
        name = element.upper()
        lines.append(f"HETATM{n:5d} {name:<4} {name:>3} A{n:4d}    "
                     f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def main():
    os.makedirs(OUT, exist_ok=True)
    for reps, seed in [(2, SEED), (4, SEED + 1)]:
        atoms = diamond(A_SI, reps, "Si", random.Random(seed))
        path = os.path.join(OUT, f"si_diamond_{len(atoms)}.pdb")
        title = f"Si diamond {reps}x{reps}x{reps}, rattled 0.05 A (python/build_crystals.py)"
        with open(path, "w") as f:
            f.write(pdb(atoms, reps * A_SI, title))
        print(f"wrote {os.path.relpath(path, ROOT)} ({len(atoms)} atoms)")


if __name__ == "__main__":
    main()
