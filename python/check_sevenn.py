"""Check the exported SevenNet-0 model (models/sevennet_0.pt, contract v2;
python/export_sevenn.py) against sevenn's own ASE calculator on the CPU.

    python python/check_sevenn.py

The reference is sevenn.calculator.SevenNetCalculator (sevenn 0.13.0, eager
e3nn backend, device cpu) built from the same checkpoint, the one
export_sevenn.py extracts (hash-checked) from the sevenn wheel in
.cache/sevenn/; sevenn builds its own neighbour list (ASE's
primitive_neighbor_list, or matscipy's if installed). The export is called as
the engine calls it: inputs from python/pair_list.py (brute force, float64
vectors rounded once to float32), one backward pass for dE/dvectors, forces
assembled from it. Both see the same geometry: positions rounded to float32
(the engine's state), then handed to ASE as float64. A missing dependency
(sevenn, e3nn, ase and what sevenn imports; the wheel; the model file) is a
failure, not a skip; nothing is downloaded.

Systems (fixed seeds; rattled by a uniform displacement of up to RATTLE A per
coordinate):
  si64      systems/crystals/si_diamond_64.pdb: Si diamond, 2x2x2 conventional
            cells (64 atoms, a = 5.431 A, rattled; python/build_crystals.py),
            the structure tests/sevenn.rs runs in the engine
  nacl64    rock-salt NaCl, 2x2x2 conventional cells (64 atoms, a = 5.64 A)
  gan_tri   wurtzite GaN 3x3x2 (72 atoms), its hexagonal cell sheared into a
            triclinic one (all three angles off 90/120 degrees)
  si2_prim  the 2-atom primitive Si cell (60 degree rhombohedron, 3.84 A edges):
            every atom sees several images of each atom, itself included
  ethanol   systems/ethanol.xyz, isolated (no cell)
  water     the waters of systems/water/water_1k.pdb whose O lies in a 12 A
            corner of the box, in a 12 A cubic cell

Checks:
  interface   cutoffs() == [5.0], supported_elements() == the checkpoint's 89
              atomic numbers, metadata() is JSON equal to models/sevennet_0.json;
              the file's sha256 is the one models/SHA256SUMS lists
  reference   per system: energy to 1e-6 relative, forces to 1e-5 of the
              largest reference force component (max |F_export - F_sevenn| /
              max |F_sevenn|; the absolute maximum in eV/A is printed too);
              periodic systems: stress (-virial / volume) to 1e-5 of the largest
              reference component
  batch       si64, nacl64, gan_tri, si2_prim and ethanol in one call, atoms
              shuffled (fixed seed): energies 1e-6 relative, forces 1e-5 of the
              largest component, against each system alone (no interaction)
  cutoff      si64 with a 1 A skin (entries between 5 and 6 A) and 7 padding
              entries per row: the same energy (1e-6 relative) and forces, and
              exactly zero dE/dv for every entry at or beyond 5 A and every
              masked entry
  float64     float64 vectors give the float32 result exactly
  elements    Z = 84 (Po) and 100 (Fm), not in SevenNet-0 (it has 1-83 and 89-94),
              0 and 119 raise a RuntimeError naming them

Prints the observed maxima, then `check_sevenn: N passed, M failed`; exits 1
if anything failed.
"""

import json
import math
import os
import sys
import time

import torch

import export_sevenn
import model_files
import pair_list
import pdb_box
from check_ani import Checker
from deps import require
from model_files import ROOT

NAME = "sevennet_0"
MODEL_PATH = os.path.join(ROOT, "models", NAME + ".pt")
SEED = 20261126
RATTLE = 0.05
E_REL = 1e-6
F_REL = 1e-5
S_REL = 1e-5

MAXIMA = {}


def note_max(key, value):
    MAXIMA[key] = max(MAXIMA.get(key, 0.0), float(value))


class System:
    """Atomic numbers, float32 positions (the engine's state) and a cell
    ([3, 3] rows a, b, c, float64) or None."""

    def __init__(self, name, z, x, cell=None):
        self.name = name
        self.z = torch.as_tensor(z, dtype=torch.long)
        self.x = torch.as_tensor(x, dtype=torch.float64).to(torch.float32)
        self.cell = cell

    def __len__(self):
        return len(self.z)


def rattled(name, z, frac, cell, reps, seed):
    """A supercell reps of the cell (fractional coordinates frac), rattled."""
    g = torch.Generator().manual_seed(seed)
    frac = torch.as_tensor(frac, dtype=torch.float64)
    z = torch.as_tensor(z, dtype=torch.long)
    shifts = torch.cartesian_prod(*[torch.arange(r, dtype=torch.float64) for r in reps])
    xs = ((frac.unsqueeze(0) + shifts.unsqueeze(1)) / torch.tensor(reps, dtype=torch.float64))
    super_cell = cell * torch.tensor(reps, dtype=torch.float64).unsqueeze(1)
    x = xs.reshape(-1, 3) @ super_cell
    x = x + RATTLE * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1)
    return System(name, z.repeat(len(shifts)), x, super_cell)


def diamond_si():
    """The committed systems/crystals/si_diamond_64.pdb (python/build_crystals.py),
    the structure tests/sevenn.rs runs in the engine: its energy printed here
    is the reference that test holds the engine to."""
    z, x, cell = read_pdb_box("crystals/si_diamond_64.pdb")
    return System("si64 (systems/crystals/si_diamond_64.pdb: Si diamond 2x2x2, rattled, "
                  "64 atoms)", z, x, cell)


def rocksalt_nacl():
    base = torch.tensor([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]],
                        dtype=torch.float64)
    frac = torch.cat([base, base + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)])
    return rattled("nacl64 (rock-salt NaCl 2x2x2, 64 atoms)", [11] * 4 + [17] * 4, frac,
                   torch.eye(3, dtype=torch.float64) * 5.64, [2, 2, 2], SEED + 1)


def triclinic_gan():
    a, c, u = 3.19, 5.19, 0.377
    hexagonal = torch.tensor([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]],
                             dtype=torch.float64)
    shear = torch.tensor([[1.0, 0.04, -0.03], [0.02, 1.0, 0.05], [0.06, -0.04, 1.0]],
                         dtype=torch.float64)
    frac = torch.tensor([[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5],
                         [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]], dtype=torch.float64)
    return rattled("gan_tri (wurtzite GaN 3x3x2 sheared triclinic, 72 atoms)",
                   [31, 31, 7, 7], frac, hexagonal @ shear, [3, 3, 2], SEED + 2)


def primitive_si():
    a = 5.43
    cell = torch.tensor([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]],
                        dtype=torch.float64)
    return rattled("si2_prim (primitive Si, 2 atoms, self-images)", [14, 14],
                   [[0, 0, 0], [0.25, 0.25, 0.25]], cell, [1, 1, 1], SEED + 3)


def read_xyz(rel):
    symbols = {"H": 1, "C": 6, "N": 7, "O": 8}
    with open(os.path.join(ROOT, "systems", rel)) as f:
        lines = f.read().splitlines()
    n = int(lines[0])
    z, x = [], []
    for line in lines[2:2 + n]:
        parts = line.split()
        z.append(symbols[parts[0]])
        x.append([float(v) for v in parts[1:4]])
    return z, x


def read_pdb_box(rel):
    """Atoms and cell of systems/<rel> (python/pdb_box.py)."""
    return pdb_box.read_pdb_box(os.path.join(ROOT, "systems", rel), {"H": 1, "O": 8, "Si": 14})


def systems():
    z, x = read_xyz("ethanol.xyz")
    out = [diamond_si(), rocksalt_nacl(), triclinic_gan(), primitive_si(),
           System("ethanol (isolated, 9 atoms)", z, x, None)]
    path = os.path.join(ROOT, "systems", "water", "water_1k.pdb")
    if not os.path.isfile(path):
        raise AssertionError("systems/water/water_1k.pdb missing")
    z, x, cell = read_pdb_box("water/water_1k.pdb")
    z, x, cell = water_corner(z, x, cell, WATER_CORNER)
    out.append(System(f"water (the {len(z) // 3} waters of water_1k.pdb whose O lies in its "
                      f"{WATER_CORNER} A corner, in that cubic cell; {len(z)} atoms)", z, x, cell))
    return out


# Side (A) of the corner of the water box kept: about 60 waters. The whole
# 999-atom box costs sevenn and the export about 7.5 GB and a minute on one
# CPU thread; the corner checks the same code paths (O and H, periodic
# images, the cutoff) at a tenth of that.
WATER_CORNER = 12.0


def water_corner(z, x, cell, side):
    """The waters (O, H, H in file order) of a cubic box whose oxygen,
    wrapped into the box, lies in [0, side)^3, in a cubic cell of that side
    (molecules that cross its faces overlap their neighbours' images
    somewhat: both sides of the comparison see the same geometry)."""
    box = float(cell[0][0])
    keep_z, keep_x = [], []
    for m in range(0, len(z), 3):
        if z[m:m + 3] != [8, 1, 1]:
            raise AssertionError(f"water_1k.pdb: atoms {m}..{m + 2} are not O, H, H")
        o = [c % box for c in x[m]]
        if all(c < side for c in o):
            shift = [o[k] - x[m][k] for k in range(3)]
            keep_z += z[m:m + 3]
            keep_x += [[a[k] + shift[k] for k in range(3)] for a in x[m:m + 3]]
    return keep_z, keep_x, torch.eye(3, dtype=torch.float64) * side


# --------------------------------------------------------------------------
# export and reference
# --------------------------------------------------------------------------


def export_call(model, z, x, batch, cells, **pair_options):
    """Energies [S], forces [N, 3], virials [S, 3, 3] and the inputs/gradient
    of the export, called as the engine calls it."""
    pairs = pair_list.build_pairs(x, batch, model.cutoffs(), cells, **pair_options)
    vectors = pairs["vectors"].requires_grad_(True)
    e = model.forward_pairs(z, batch, pairs["neighbors"], vectors, pairs["mask"],
                            pairs["inner_slots"], pairs["inner_masks"])
    (g,) = torch.autograd.grad(e.sum(), vectors)
    f = pair_list.forces_from_vector_grad(g, pairs["neighbors"], pairs["mask"])
    w = pair_list.virial_from_vector_grad(g, vectors, pairs["mask"], batch, len(e))
    return e.detach(), f, w, pairs, g


def reference_calculator():
    require("ase", "check_sevenn")
    export_sevenn.require_sevenn("check_sevenn")
    from sevenn.calculator import SevenNetCalculator

    path = export_sevenn.checkpoint_path(download=False)
    return SevenNetCalculator(model=path, file_type="checkpoint", device="cpu")


def reference(calc, sysm):
    """sevenn's energy (eV), forces (eV/A) and stress (eV/A^3, 3x3, or None)."""
    from ase import Atoms

    pos = sysm.x.to(torch.float64).numpy()
    if sysm.cell is None:
        atoms = Atoms(numbers=sysm.z.numpy(), positions=pos, pbc=False)
    else:
        atoms = Atoms(numbers=sysm.z.numpy(), positions=pos, cell=sysm.cell.numpy(), pbc=True)
    atoms.calc = calc
    e = float(atoms.get_potential_energy())
    f = torch.tensor(atoms.get_forces(), dtype=torch.float64)
    s = None
    if sysm.cell is not None:
        s = torch.tensor(atoms.get_stress(voigt=False), dtype=torch.float64)
    return e, f, s


def force_error(f, ref):
    scale = float(ref.abs().max())
    diff = float((f - ref).abs().max())
    return diff, diff / max(scale, 1e-12), scale


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


def check_interface(model, cp_elements):
    assert model.cutoffs() == [5.0], model.cutoffs()
    assert model.supported_elements() == cp_elements, model.supported_elements()
    meta = json.loads(model.metadata())
    for key in ["name", "description", "energy_unit", "length_unit", "source", "licence",
                "reference", "variant", "energy_dtype"]:
        assert key in meta, f"metadata lacks {key}"
    assert meta["name"] == NAME and meta["energy_unit"] == "eV"
    assert meta["variant"] == "neighbour-list (contract v2)", meta["variant"]
    assert meta["licence"].startswith("MIT"), meta["licence"]
    with open(os.path.join(ROOT, "models", NAME + ".json")) as f:
        assert json.load(f) == meta, f"models/{NAME}.json differs from metadata()"
    sums = model_files.read_sums()
    digest = model_files.sha256(MODEL_PATH)
    assert sums.get(NAME + ".pt") == digest, (
        f"models/{NAME}.pt has sha256 {digest}, models/SHA256SUMS lists "
        f"{sums.get(NAME + '.pt') or '(no entry)'}")
    return f"{len(cp_elements)} elements, sha256 {digest[:16]}..."


def check_reference(model, calc, sysm, cache):
    batch = torch.zeros(len(sysm), dtype=torch.long)
    cells = None if sysm.cell is None else [sysm.cell]
    t0 = time.perf_counter()
    e, f, w, _, _ = export_call(model, sysm.z, sysm.x, batch, cells)
    t1 = time.perf_counter()
    e_ref, f_ref, s_ref = reference(calc, sysm)
    t2 = time.perf_counter()
    cache[sysm.name] = (e, f)
    e_rel = abs(float(e[0]) - e_ref) / abs(e_ref)
    f_abs, f_rel, f_scale = force_error(f, f_ref)
    note_max("reference energy rel", e_rel)
    note_max("reference force rel (of max |F|)", f_rel)
    note_max("reference force abs (eV/A)", f_abs)
    assert e_rel <= E_REL, f"energy {float(e[0])!r} vs sevenn {e_ref!r}: rel {e_rel:.2e}"
    assert f_rel <= F_REL, f"forces: max diff {f_abs:.2e} eV/A = {f_rel:.2e} of {f_scale:.3f}"
    detail = (f"E {float(e[0]):.6f} eV (sevenn {e_ref:.6f}, rel {e_rel:.1e}), "
              f"max|dF| {f_abs:.1e} eV/A = {f_rel:.1e} of max|F| {f_scale:.2f}")
    if s_ref is not None:
        volume = float(torch.det(sysm.cell).abs())
        s = -w[0] / volume
        s_abs = float((s - s_ref).abs().max())
        s_rel = s_abs / max(float(s_ref.abs().max()), 1e-12)
        note_max("reference stress rel (of max |sigma|)", s_rel)
        assert s_rel <= S_REL, f"stress: max diff {s_abs:.2e} eV/A^3 = {s_rel:.2e} of max"
        detail += f", stress rel {s_rel:.1e}"
    return detail + f"; export {t1 - t0:.2f} s, sevenn {t2 - t1:.2f} s"


def check_batch(model, members, cache):
    z = torch.cat([m.z for m in members])
    x = torch.cat([m.x for m in members])
    b = torch.cat([torch.full((len(m),), i, dtype=torch.long) for i, m in enumerate(members)])
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(SEED))
    cells = [m.cell for m in members]
    e, f, _, _, _ = export_call(model, z[perm], x[perm], b[perm], cells)
    forces = torch.empty_like(f)
    forces[perm] = f
    start = 0
    worst_e, worst_f = 0.0, 0.0
    for i, m in enumerate(members):
        e1, f1 = cache[m.name]
        e_rel = abs(float(e[i]) - float(e1[0])) / abs(float(e1[0]))
        _, f_rel, _ = force_error(forces[start:start + len(m)], f1)
        worst_e, worst_f = max(worst_e, e_rel), max(worst_f, f_rel)
        assert e_rel <= E_REL, f"{m.name}: batched energy rel {e_rel:.2e}"
        assert f_rel <= F_REL, f"{m.name}: batched forces rel {f_rel:.2e}"
        start += len(m)
    note_max("batch energy rel", worst_e)
    note_max("batch force rel (of max |F|)", worst_f)
    return (f"{len(members)} structures, {len(z)} atoms shuffled: energy rel {worst_e:.1e}, "
            f"forces {worst_f:.1e} of max|F|")


def check_cutoff(model, sysm, cache):
    batch = torch.zeros(len(sysm), dtype=torch.long)
    plain = pair_list.build_pairs(sysm.x, batch, [5.0], [sysm.cell])
    k = plain["neighbors"].shape[1]
    probe = pair_list.build_pairs(sysm.x, batch, [5.0], [sysm.cell], skin=1.0)
    cap = probe["neighbors"].shape[1] + 7
    e, f, _, pairs, g = export_call(model, sysm.z, sysm.x, batch, [sysm.cell],
                                    skin=1.0, capacity=cap)
    e1, f1 = cache[sysm.name]
    e_rel = abs(float(e[0]) - float(e1[0])) / abs(float(e1[0]))
    _, f_rel, _ = force_error(f, f1)
    r = pairs["vectors"].detach().norm(dim=2)
    outside = (r >= 5.0) | ~pairs["mask"]
    n_beyond = int((pairs["mask"] & (r >= 5.0)).sum())
    assert n_beyond > 0, "the skin added no entries beyond 5 A"
    g_out = float(g[outside].abs().max())
    assert g_out == 0.0, f"dE/dv of entries beyond the cutoff or masked: {g_out}"
    assert e_rel <= E_REL, f"energy with skin rel {e_rel:.2e}"
    assert f_rel <= F_REL, f"forces with skin rel {f_rel:.2e}"
    note_max("cutoff energy rel", e_rel)
    note_max("cutoff force rel (of max |F|)", f_rel)
    return (f"K {k} -> {cap}, {n_beyond} entries in 5-6 A: dE/dv exactly 0 there and on "
            f"{int((~pairs['mask']).sum())} masked entries; energy rel {e_rel:.1e}, "
            f"forces {f_rel:.1e}")


def check_float64(model, sysm):
    batch = torch.zeros(len(sysm), dtype=torch.long)
    p32 = pair_list.build_pairs(sysm.x, batch, [5.0], [sysm.cell])
    p64 = pair_list.build_pairs(sysm.x, batch, [5.0], [sysm.cell], dtype=torch.float64)
    args = (p32["inner_slots"], p32["inner_masks"])
    e32 = model.forward_pairs(sysm.z, batch, p32["neighbors"], p32["vectors"], p32["mask"], *args)
    e64 = model.forward_pairs(sysm.z, batch, p64["neighbors"], p64["vectors"], p64["mask"],
                              *args)
    assert e64.dtype == torch.float64
    assert torch.equal(e32, e64), f"{float(e32[0])!r} vs {float(e64[0])!r}"
    return "energy float64, identical"


def check_elements(model):
    x = torch.tensor([[0.0, 0.0, 0.0], [2.3, 0.0, 0.0]])
    batch = torch.zeros(2, dtype=torch.long)
    seen = []
    for bad in [84, 100, 0, 119]:
        z = torch.tensor([14, bad])
        pairs = pair_list.build_pairs(x, batch, [5.0])
        try:
            model.forward_pairs(z, batch, pairs["neighbors"], pairs["vectors"], pairs["mask"],
                                pairs["inner_slots"], pairs["inner_masks"])
        except (RuntimeError, torch.jit.Error) as exc:  # a loaded model raises torch.jit.Error
            msg = str(exc)
            assert f"unsupported atomic number(s) [{bad}]" in msg, msg
            seen.append(bad)
            continue
        raise AssertionError(f"Z = {bad} did not raise")
    return f"Z = {seen} raise RuntimeError naming them"


def main() -> int:
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    checker = Checker()
    if not os.path.isfile(MODEL_PATH):
        print(f"FAIL models/{NAME}.pt missing (python/export_sevenn.py writes it)")
        print("check_sevenn: 0 passed, 1 failed")
        return 1
    calc = reference_calculator()
    cp_elements = sorted(int(z) for z in calc.type_map)
    model = torch.jit.load(MODEL_PATH, map_location="cpu").eval()
    checker.run("interface", check_interface, model, cp_elements)
    cache = {}
    all_systems = systems()
    for sysm in all_systems:
        checker.run(f"reference {sysm.name}", check_reference, model, calc, sysm, cache)
    members = [s for s in all_systems if not s.name.startswith("water")]
    if all(m.name in cache for m in members):
        checker.run("batch", check_batch, model, members, cache)
        checker.run("cutoff (skin, padding)", check_cutoff, model, members[0], cache)
    else:
        checker.fail("batch", "a reference check failed")
        checker.fail("cutoff (skin, padding)", "a reference check failed")
    checker.run("float64", check_float64, model, members[0])
    checker.run("elements", check_elements, model)
    for key, value in MAXIMA.items():
        print(f"     max {key}: {value:.2e}")
    print(f"     total {time.perf_counter() - t_start:.1f} s (1 thread)")
    print(f"check_sevenn: {checker.passed} passed, {checker.failed} failed")
    return 1 if checker.failed else 0


if __name__ == "__main__":
    sys.exit(main())
