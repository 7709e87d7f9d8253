"""Check the exported ANI models (models/ani1x.pt, models/ani1ccx.pt, the
static-shape models/ani1x_static.pt, models/ani1ccx_static.pt, the
neighbour-list (contract v2) models/ani1x_nl.pt, models/ani1ccx_nl.pt and
models/ani2xt_nl.pt).

    python python/check_ani.py

The checks run on the files the Rust tests and configs use: models/<name>.pt,
exported by python/export_ani.py (`make test` runs it first), loaded with
torch.jit.load; each file's sha256 must be the one models/SHA256SUMS lists.
The energies and forces are compared with torchani's own model, built from the
NeuroChem weights that export_ani.py extracts into .cache/torchani/data. A
missing dependency (torchani, huggingface_hub, the weights, a model file) is a
failure, not a skip; nothing is downloaded.

Per model:
  interface   supported_elements() == [1, 6, 7, 8]; metadata() is JSON with the
              required keys and equals models/<name>.json; float64 energies
              that carry a gradient
  torchani    (a) energies (1e-5 relative) and forces (1e-5 relative, norm-wise)
              of a 7-molecule batch equal torchani's per-molecule results
  fd          (b) autograd forces equal central finite differences of the energy
  batch       (c) the batch gives the same energies and forces as each molecule alone
  order       (d) interleaved / shuffled atom order and structure order change nothing
  float64     float64 positions give the float32 result (cast inside)
  elements    (e) unsupported atomic numbers (S = 16, 0, 200) raise an error

Per static-shape model (<name>_static), on 9 molecules (the 7 above plus
alanine dipeptide and ibuprofen, 3 to 33 atoms), through forward and through
prepare + forward_prepared:
  interface   as above, plus is_prepared(), "variant" and "cost_scaling" in
              the metadata
  torchani    (a) as above, and alanine dipeptide x 4 (prepared)
  same        forward_prepared == forward, bit for bit
  fd, batch, order, float64, elements   (b) - (e) as above; batch == single
              compares forces against max(|F|, 1 eV/A) per molecule
  misuse      forward_prepared before prepare, with N +- 1 atoms or a wrong
              shape raises; a failed prepare leaves the model unprepared
  no sync     forward_prepared's TorchScript graph (callees inlined) holds no
              sync-prone op (SYNC_PRONE), and none runs in its forward +
              backward (profiler)

Per neighbour-list model (<name>_nl, contract v2; inputs built by
python/pair_list.py as the engine builds them, forces assembled from
dE/dvectors):
  interface   cutoffs() == [5.2, 3.5], supported_elements(), metadata() (variant,
              cost_scaling, = models/<name>_nl.json), float64 energies with a
              gradient, prepare() + forward_pairs_prepared == forward_pairs
  torchani    every shipped molecule and peptide (systems/molecules, systems/
              peptides: 25 structures, 3 to 303 atoms, chignolin and Trp-cage
              included) in one mixed batch through forward_pairs; periodic
              water (systems/water/water_1k.pdb, 64 waters in a triclinic
              cell, 2 waters in a 3.9 A cell where atoms see several images of
              each neighbour and of themselves) in one batch through
              forward_pairs_prepared; lone atoms (K = Ka = 0). Per structure
              |dE| / |E| and max |dF| / max(max |F|, 1 eV/A) <= 1e-5 against
              torchani in float64 (same weights; cell and pbc for the boxes),
              <= 2e-5 against torchani in float32 (molecules)
  same        forward_pairs == forward_pairs_prepared, bit for bit, repeated
  capacities  K and Ka larger than needed (Ka also beyond the prepared pair
              tables), entries of every row shuffled, a 1 A skin: energies to
              1e-6, forces to 1e-5 of the tight list; both paths bitwise equal
  batch       one batch == each structure alone
  fd          forces == central finite differences (pairs rebuilt per step)
  float64     float64 vectors give the float32 result
  elements    unsupported atomic numbers raise (forward_pairs and prepare)
  misuse      forward_pairs_prepared before prepare, with another N, wrong inner
              lists, mask dtype or shapes, and forward_pairs with bad indices raise
  no sync     as for the static models, for forward_pairs_prepared

ANI-2xt (ani2xt_nl, contract v2, python/export_ani2xt.py), on the F/S/Cl
molecules of systems/ani2xt (trifluoroethanol, methanethiol, chlorobenzene,
Ace-Met-NMe, 2-chloro-4-fluorobenzenesulfonamide; python/build_ani2xt_systems.py)
and two periodic cubes made of them (10 A and 7 A, molecules wrapped across
the faces). The reference is export_ani2xt.reference_model(): torchani 2.9
built as Auto3D's ANI2xt_no_rep.py builds it, with the state dict read from
the Auto3D wheel in .cache/auto3d (a missing wheel, model or molecule file is
a failure; nothing is downloaded):
  interface   cutoffs() == [5.2, 3.5], supported_elements() == [1, 6, 7, 8, 9,
              16, 17], metadata() (= models/ani2xt_nl.json), the v2 entry points
  reference   one mixed batch, forward_pairs and prepared; the cubes (cell and
              pbc in the reference): per structure |dE| / |E| <= 1e-5 and
              max |dF| / max |F| <= 1e-5 (no force floor) vs the float64
              reference, 2e-5 vs the float32 one (molecules)
  same, capacities, batch, fd, float64, misuse, no sync   as for the ANI-1x
              neighbour-list models
  elements    P (15), 0, 200, -1 raise, naming the element and F, S, Cl

Prints `check_ani: N passed, M failed` last and exits 1 if anything failed.
"""

import collections
import copy
import json
import math
import os
import sys
import time
import traceback

import torch

import export_ani
import model_files
import pair_list
import pdb_box

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = ["ani1x", "ani1ccx"]
STATIC_MODELS = ["ani1x_static", "ani1ccx_static"]
NL_MODELS = ["ani1x_nl", "ani1ccx_nl"]
ANI2XT_MODELS = ["ani2xt_nl"]
HARTREE_TO_EV = 27.211386245988
SYMBOL_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17}

WATER = [("O", 0.0000, 0.0000, 0.1173), ("H", 0.0000, 0.7572, -0.4692),
         ("H", 0.0000, -0.7572, -0.4692)]
METHANE = [("C", 0.0, 0.0, 0.0), ("H", 0.6291, 0.6291, 0.6291),
           ("H", -0.6291, -0.6291, 0.6291), ("H", -0.6291, 0.6291, -0.6291),
           ("H", 0.6291, -0.6291, -0.6291)]
# MMFF-optimised (RDKit) neutral glycine.
GLYCINE = [("N", -0.6291, 0.0032, -1.3329), ("C", -0.4797, -0.6196, -0.0067),
           ("C", 0.7401, -0.0814, 0.7281), ("O", 1.4281, -0.6936, 1.5297),
           ("O", 0.9806, 1.2275, 0.4831), ("H", -1.5765, -0.1516, -1.6714),
           ("H", -0.5186, 1.0136, -1.2169), ("H", -1.3619, -0.4146, 0.6072),
           ("H", -0.3656, -1.6997, -0.1337), ("H", 1.7825, 1.4161, 1.0135)]
# Hydrogen sulfide: S is not supported by ANI-1x / ANI-1ccx.
H2S = [("S", 0.0, 0.0, 0.1030), ("H", 0.0, 0.9616, -0.8239), ("H", 0.0, -0.9616, -0.8239)]


def molecule(atoms):
    z = torch.tensor([SYMBOL_Z[a[0]] for a in atoms], dtype=torch.long)
    x = torch.tensor([a[1:] for a in atoms], dtype=torch.float32)
    return z, x


def read_xyz(name):
    with open(os.path.join(ROOT, "systems", name + ".xyz")) as f:
        lines = f.read().splitlines()
    n = int(lines[0])
    return molecule([(s[0], *map(float, s[1:4])) for s in (l.split() for l in lines[2:2 + n])])


def load_molecules():
    mols = {"water": molecule(WATER), "methane": molecule(METHANE),
            "glycine": molecule(GLYCINE)}
    for name in ["ethanol", "caffeine", "aspirin", "hexane"]:
        mols[name] = read_xyz(name)
    return mols


def flat_batch(mols):
    z = torch.cat([m[0] for m in mols])
    x = torch.cat([m[1] for m in mols])
    b = torch.cat([torch.full((len(m[0]),), i, dtype=torch.long) for i, m in enumerate(mols)])
    return z, x, b


def energy_forces(model, z, x, b):
    x = x.detach().clone().requires_grad_(True)
    e = model(z, x, b)
    (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), -g


def rel_norm(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def torchani_reference(name):
    """torchani's own model for `name`, or the reason it is unavailable."""
    try:
        import torchani  # noqa: F401
    except Exception as exc:
        return None, (f"torchani not importable ({type(exc).__name__}: {exc}); "
                      "`make setup` installs torchani 2.9.0 and huggingface_hub")
    resource = export_ani.MODELS[name]["resource"]
    if not export_ani.resources_complete(resource):
        return None, (f"NeuroChem weights {resource} not in "
                      f"{os.path.relpath(export_ani.NEUROCHEM_DIR, ROOT)} "
                      "(python/export_ani.py extracts them; `make test` runs it)")
    try:
        return export_ani.load_torchani(name), None
    except Exception as exc:
        return None, f"torchani could not load {name} ({type(exc).__name__}: {exc})"


def torchani_energy_forces(ref, mols):
    """Per-molecule energies (eV) and forces from torchani's padded batch."""
    n_max = max(len(m[0]) for m in mols)
    species = torch.full((len(mols), n_max), -1, dtype=torch.long)
    coords = torch.zeros((len(mols), n_max, 3))
    for i, (z, x) in enumerate(mols):
        species[i, :len(z)] = z
        coords[i, :len(z)] = x
    coords.requires_grad_(True)
    e = ref((species, coords)).energies
    (g,) = torch.autograd.grad(e.sum(), coords)
    forces = torch.cat([-g[i, :len(m[0])] for i, m in enumerate(mols)]).double() * HARTREE_TO_EV
    return e.detach().double() * HARTREE_TO_EV, forces


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, label, fn, *args):
        t0 = time.perf_counter()
        try:
            detail = fn(*args)
        except Exception as exc:
            self.failed += 1
            print(f"FAIL {label}: {type(exc).__name__}: {exc}")
            if not isinstance(exc, AssertionError):
                traceback.print_exc()
            return
        self.passed += 1
        print(f"ok   {label} ({time.perf_counter() - t0:.2f} s){': ' + detail if detail else ''}")

    def fail(self, label, why):
        self.failed += 1
        print(f"FAIL {label}: {why}")


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


def check_interface(model, name):
    assert model.supported_elements() == [1, 6, 7, 8], model.supported_elements()
    meta = json.loads(model.metadata())
    for key in ["name", "description", "energy_unit", "length_unit", "source",
                "licence", "reference", "energy_dtype"]:
        assert key in meta, f"metadata lacks {key}"
    assert meta["name"] == name and meta["energy_unit"] == "eV"
    assert meta["length_unit"] == "angstrom" and meta["licence"] == "MIT (torchani)"
    with open(os.path.join(ROOT, "models", name + ".json")) as f:
        assert json.load(f) == meta, f"models/{name}.json differs from metadata()"
    z, x = molecule(WATER)
    x.requires_grad_(True)
    e = model(z, x, torch.zeros(3, dtype=torch.long))
    assert e.shape == (1,) and e.dtype == torch.float64 and e.requires_grad, (e.shape, e.dtype)
    return f"energy_dtype {meta['energy_dtype']}, water {e.item():.4f} eV"


def check_torchani(model, ref, mols):
    """(a) energies and forces equal torchani's on a batch of molecules.

    torchani sums the self-atomic energies in float32 (ulp 2e-3 eV at
    -18500 eV, caffeine), the export in float64, so energies differ by up to
    a few meV: ~1e-7 relative. Forces: 1e-5 relative, norm-wise, over the
    batch and per molecule, the latter against max(|F|, 1 eV/A) because a
    molecule near its minimum (water under ANI-1ccx: |F| = 0.06 eV/A) has
    float32 noise ~5e-7 eV/A that is large relative to its tiny force.
    """
    z, x, b = flat_batch(mols)
    e, f = energy_forces(model, z, x, b)
    e_ref, f_ref = torchani_energy_forces(ref, mols)
    e_rel = float(((e - e_ref).abs() / e_ref.abs()).max())
    f_rel = rel_norm(f, f_ref)
    f_mol = max(float((f[b == i] - f_ref[b == i]).double().norm())
                / max(float(f_ref[b == i].norm()), 1.0) for i in range(len(mols)))
    assert e_rel < 1e-5, f"energy relative error {e_rel:.2e}"
    assert f_rel < 1e-5, f"force relative error {f_rel:.2e}"
    assert f_mol < 1e-5, f"per-molecule force relative error {f_mol:.2e}"
    return (f"{len(mols)} molecules, max |dE| {float((e - e_ref).abs().max()):.1e} eV "
            f"(rel {e_rel:.1e}), force rel err {f_rel:.1e} (per molecule {f_mol:.1e})")


def check_fd(model, mols):
    """(b) forces equal central differences of the exported energy.

    ANI runs in float32 (unit roundoff 6e-8). The atomic network outputs are
    O(1-10 eV), so every energy carries rounding noise dE ~ 1e-6 - 1e-5 eV
    (the float64 self-energy sum adds none); a central difference with step h
    turns that into an error ~ dE / h <= 1e-2 eV/A at h = 1e-3 A, while the
    truncation error h^2 |F''| / 6 is ~ 1e-4 eV/A. Hence 1e-2 eV/A per
    component (measured: ~1e-3 on caffeine), and 1e-2 relative, norm-wise,
    over all sampled components. The step is taken as the float32 difference
    actually realised between x + h and x - h.
    """
    h, tol_abs, tol_rel = 1e-3, 1e-2, 1e-2
    z, x, b = flat_batch(mols)
    _, f = energy_forces(model, z, x, b)
    with torch.no_grad():
        fd, ad = [], []
        # Every 3rd atom (all elements present), each Cartesian component, one
        # structure perturbed at a time: the batch sum is differentiated.
        for i in range(0, len(z), 3):
            for k in range(3):
                xp, xm = x.clone(), x.clone()
                xp[i, k] += h
                xm[i, k] -= h
                step = float(xp[i, k].double() - xm[i, k].double())
                de = float(model(z, xp, b).sum() - model(z, xm, b).sum())
                fd.append(-de / step)
                ad.append(float(f[i, k]))
    fd, ad = torch.tensor(fd, dtype=torch.float64), torch.tensor(ad, dtype=torch.float64)
    err = (fd - ad).abs()
    rel = float((fd - ad).norm() / ad.norm())
    assert float(err.max()) < tol_abs, f"max |F_fd - F| {float(err.max()):.2e} eV/A"
    assert rel < tol_rel, f"relative error {rel:.2e}"
    return (f"{len(fd)} components, h = {h} A, max |F_fd - F| {float(err.max()):.1e} eV/A, "
            f"rel {rel:.1e}")


def check_batch(model, mols, force_floor=0.0):
    """(c) one batched call == each molecule alone (energies and forces).

    Forces: 1e-5 relative per molecule, against max(|F|, force_floor). The
    static-shape models pass force_floor = 1 eV/A, as check_torchani does:
    their padded layout changes float32 rounding with the batch (CPU vector
    vs. scalar tails of exp/cos, BLAS blocking over padded sums), ~1e-6 eV/A
    absolute, which is 1.7e-5 of water's 0.06 eV/A under ANI-1ccx.
    """
    z, x, b = flat_batch(mols)
    e, f = energy_forces(model, z, x, b)
    de, df, df_own = 0.0, 0.0, 0.0
    for i, (zi, xi) in enumerate(mols):
        ei, fi = energy_forces(model, zi, xi, torch.zeros(len(zi), dtype=torch.long))
        de = max(de, float((e[i] - ei[0]).abs()))
        diff = float((f[b == i] - fi).double().norm())
        df = max(df, diff / max(float(fi.double().norm()), force_floor))
        df_own = max(df_own, rel_norm(f[b == i], fi))
    assert de < 1e-4, f"batch vs single energy difference {de:.2e} eV"
    assert df < 1e-5, f"batch vs single force relative difference {df:.2e}"
    floor = (f" (against max(|F|, {force_floor:g} eV/A); against |F| alone {df_own:.1e})"
             if force_floor else "")
    return f"{len(mols)} molecules, max |dE| {de:.1e} eV, max force rel diff {df:.1e}{floor}"


def check_order(model, mols):
    """(d) interleaved atoms and shuffled structure indices change nothing."""
    z, x, b = flat_batch(mols)
    e, f = energy_forces(model, z, x, b)
    # Round-robin interleaving: atom 0 of every structure, then atom 1, ...
    counts = torch.bincount(b)
    local = torch.cat([torch.arange(int(c)) for c in counts])
    interleave = torch.argsort(local * len(mols) + b, stable=True)
    # A fixed pseudo-random permutation, and structure indices relabelled.
    g = torch.Generator().manual_seed(1234)
    shuffle = torch.randperm(len(z), generator=g)
    relabel = torch.randperm(len(mols), generator=g)
    de, df = 0.0, 0.0
    for perm, lab in [(interleave, torch.arange(len(mols))), (shuffle, relabel)]:
        assert not torch.equal(perm, torch.arange(len(z)))
        ep, fp = energy_forces(model, z[perm], x[perm], lab[b[perm]])
        de = max(de, float((ep[lab] - e).abs().max()))
        back = torch.empty_like(fp)
        back[perm] = fp
        df = max(df, rel_norm(back, f))
    assert de < 1e-4, f"energy changed by {de:.2e} eV"
    assert df < 1e-5, f"forces changed by {df:.2e} (relative)"
    return f"max |dE| {de:.1e} eV, max force rel diff {df:.1e}"


def check_float64(model, mols):
    """float64 positions: cast to float32 inside, gradient flows back in float64."""
    z, x, b = flat_batch(mols[:3])
    e32, f32 = energy_forces(model, z, x, b)
    e64, f64 = energy_forces(model, z, x.double(), b)
    assert f64.dtype == torch.float64 and e64.dtype == torch.float64
    assert torch.equal(e32, e64), (e32, e64)
    assert torch.equal(f32.double(), f64)
    return None


def check_elements(model, mols):
    """(e) an unsupported element raises instead of being dropped."""
    z0, x0 = mols[0]
    zs, xs = molecule(H2S)
    for bad_z in [16, 0, 200, -1]:
        z = torch.cat([z0, zs.clone().masked_fill(zs == 16, bad_z)])
        x = torch.cat([x0, xs + 10.0])
        b = torch.tensor([0] * len(z0) + [1] * len(zs))
        try:
            model(z, x, b)
        except (RuntimeError, torch.jit.Error) as exc:  # a loaded model raises torch.jit.Error
            if bad_z == 16:
                assert "16" in str(exc), str(exc)
            continue
        raise AssertionError(f"atomic number {bad_z} did not raise")
    return "Z = 16, 0, 200, -1 raise RuntimeError"

# --------------------------------------------------------------------------
# static-shape models (models/<name>_static.pt)
# --------------------------------------------------------------------------

# Ops that synchronise with the host or make shapes depend on data; none may
# appear in forward_prepared (after inlining) or run in its forward + backward.
SYNC_PRONE = {
    "aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::nonzero_static",
    "aten::nonzero_numpy", "aten::argwhere", "aten::tolist", "prim::tolist",
    "aten::unique", "aten::_unique", "aten::_unique2", "aten::unique_consecutive",
    "aten::unique_dim", "aten::bincount", "aten::masked_select", "aten::Int", "aten::Bool",
    "aten::Float", "aten::IntImplicit", "aten::FloatImplicit", "aten::ScalarImplicit",
    "aten::is_nonzero", "aten::cpu", "aten::index", "aten::index_put", "aten::index_put_",
    "aten::repeat_interleave", "aten::histc", "aten::allclose", "aten::equal",
}


class Prepared:
    """`model(z, x, b)` through the static path: prepare(z, b) (again only when
    z or b change), then forward_prepared(x)."""

    def __init__(self, model):
        self.model = model
        self.key = None

    def __call__(self, z, x, b):
        if self.key is None or not (torch.equal(self.key[0], z) and torch.equal(self.key[1], b)):
            self.key = None
            self.model.prepare(z, b)
            self.key = (z.clone(), b.clone())
        return self.model.forward_prepared(x)


def static_molecules(mols_by_name):
    """The 7 molecules plus alanine dipeptide (22 atoms) and ibuprofen (33):
    a mixed batch of 3 to 33 atoms."""
    mols = dict(mols_by_name)
    mols["alanine_dipeptide"] = read_xyz("peptides/alanine_dipeptide")
    mols["ibuprofen"] = read_xyz("molecules/ibuprofen")
    return mols


def check_static_interface(model, name):
    assert not model.is_prepared(), "a freshly loaded model reports is_prepared()"
    detail = check_interface(model, name)
    meta = json.loads(model.metadata())
    assert meta.get("variant") == "static-shape", meta.get("variant")
    assert "S * Nmax^3" in meta.get("cost_scaling", ""), "metadata lacks cost_scaling"
    z, x = molecule(WATER)
    b = torch.zeros(3, dtype=torch.long)
    model.prepare(z, b)
    assert model.is_prepared()
    x.requires_grad_(True)
    e = model.forward_prepared(x)
    assert e.shape == (1,) and e.dtype == torch.float64 and e.requires_grad, (e.shape, e.dtype)
    assert torch.equal(e.detach(), model(z, x, b).detach())
    return detail


def check_static_same(model, mols):
    """forward_prepared == forward, energies and forces bit for bit (same layout)."""
    z, x, b = flat_batch(mols)
    e, f = energy_forces(model, z, x, b)
    ep, fp = energy_forces(Prepared(model), z, x, b)
    assert torch.equal(e, ep), float((e - ep).abs().max())
    assert torch.equal(f, fp), float((f - fp).abs().max())
    return f"{len(mols)} molecules, {len(z)} atoms: identical"


def check_static_misuse(path):
    """forward_prepared before prepare, with the wrong number of atoms or a wrong
    shape raises; a failed prepare leaves the model unprepared."""
    model = torch.jit.load(path)
    z, x = molecule(GLYCINE)
    b = torch.zeros(len(z), dtype=torch.long)
    cases = [("before prepare()", lambda: model.forward_prepared(x), "prepare")]
    for label, fn, word in cases:
        try:
            fn()
        except (RuntimeError, torch.jit.Error) as exc:
            assert word in str(exc), str(exc)
        else:
            raise AssertionError(f"forward_prepared {label} did not raise")
    model.prepare(z, b)
    for label, xx in [("N - 1 atoms", x[:-1]), ("N + 1 atoms", torch.cat([x, x[:1]])),
                      ("shape [N, 2]", x[:, :2]), ("shape [N, 3, 1]", x.unsqueeze(2))]:
        try:
            model.forward_prepared(xx)
        except (RuntimeError, torch.jit.Error) as exc:
            assert "shape" in str(exc), str(exc)
        else:
            raise AssertionError(f"forward_prepared with {label} did not raise")
    zs, _ = molecule(H2S)
    try:
        model.prepare(zs, torch.zeros(3, dtype=torch.long))
    except (RuntimeError, torch.jit.Error) as exc:
        assert "16" in str(exc), str(exc)
    else:
        raise AssertionError("prepare with S did not raise")
    assert not model.is_prepared(), "is_prepared() after a failed prepare"
    try:
        model.forward_prepared(x)
    except (RuntimeError, torch.jit.Error):
        pass
    else:
        raise AssertionError("forward_prepared after a failed prepare did not raise")
    return "unprepared, N - 1, N + 1, [N, 2], [N, 3, 1], failed prepare: all raise"


def graph_nodes(block):
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from graph_nodes(sub)


def sync_prone_ops(method):
    """Sync-prone ops in a scripted method's graph (callees inlined): any of
    SYNC_PRONE or aten::unique*, a prim::TupleIndex with a computed index, an
    aten::to to another device; and the graph's node count."""
    graph = method.graph.copy()
    torch._C._jit_pass_inline(graph)
    kinds = collections.Counter(n.kind() for n in graph_nodes(graph))
    bad = sorted(k for k in kinds if k in SYNC_PRONE or k.startswith("aten::unique"))
    for node in graph_nodes(graph):
        if node.kind() == "prim::TupleIndex":
            index = list(node.inputs())[1].node()
            if index.kind() != "prim::Constant":
                bad.append("prim::TupleIndex (computed index)")
        if node.kind() == "aten::to" and any(str(i.type()) == "Device" for i in node.inputs()):
            bad.append("aten::to (device)")
    return bad, sum(kinds.values())


def check_static_no_sync(model, mols):
    """No sync-prone op in forward_prepared: (1) its TorchScript graph, callees
    inlined, has none of SYNC_PRONE, no prim::TupleIndex with a computed index
    and no aten::to to another device; (2) the profiler sees none of them run
    in forward_prepared + backward (autograd included)."""
    bad, n_nodes = sync_prone_ops(model.forward_prepared)
    assert not bad, f"sync-prone ops in forward_prepared: {bad}"
    z, x, b = flat_batch(mols)
    model.prepare(z, b)
    for _ in range(3):  # TorchScript optimises the graph in the first runs
        energy_forces(lambda z_, x_, b_: model.forward_prepared(x_), z, x, b)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        energy_forces(lambda z_, x_, b_: model.forward_prepared(x_), z, x, b)
    ran = sorted({e.name for e in prof.events()} & SYNC_PRONE)
    assert not ran, f"sync-prone ops ran in forward_prepared + backward: {ran}"
    n_aten = sum(1 for e in prof.events() if e.name.startswith("aten::"))
    return (f"graph: {n_nodes} nodes, none sync-prone; forward + backward ran "
            f"{n_aten} aten ops, none sync-prone")


def load_model(ck, name):
    """(path, scripted model) of models/<name>.pt; (path, None) after counting a
    failure when it does not load. A file whose sha256 is not the one
    models/SHA256SUMS lists is a failure too (the model is still checked)."""
    path = os.path.join(ROOT, "models", name + ".pt")
    if not os.path.isfile(path):
        ck.fail(f"{name} load", f"{os.path.relpath(path, ROOT)} does not exist "
                "(python/export_ani.py writes it; `make test` runs it)")
        return path, None
    try:
        model = torch.jit.load(path)
        model.eval()
    except Exception as exc:
        ck.fail(f"{name} load", str(exc))
        return path, None
    digest = model_files.sha256(path)
    expected = model_files.read_sums().get(name + ".pt")
    if digest != expected:
        ck.fail(f"{name} sha256", f"{os.path.relpath(path, ROOT)} has sha256 {digest}, "
                f"models/SHA256SUMS lists {expected} (re-export: python/export_ani.py)")
    print(f"{name}: {os.path.relpath(path, ROOT)} ({os.path.getsize(path):,} bytes, "
          f"sha256 {digest[:16]}...)")
    return path, model


def run_static(ck, name, mols_by_name):
    path, model = load_model(ck, name)
    if model is None:
        return
    by_name = static_molecules(mols_by_name)
    mols = list(by_name.values())
    prepared = Prepared(model)
    ck.run(f"{name} interface", check_static_interface, model, name)
    ref, why = torchani_reference(name[:-len("_static")])
    if ref is None:
        ck.fail(f"{name} (a) torchani", why)
    else:
        ck.run(f"{name} (a) torchani, forward", check_torchani, model, ref, mols)
        ck.run(f"{name} (a) torchani, prepared", check_torchani, prepared, ref, mols)
        ala = [by_name["alanine_dipeptide"]]
        ck.run(f"{name} (a) torchani, alanine dipeptide x 4, prepared", check_torchani,
               prepared, ref, ala * 4)
    ck.run(f"{name} forward_prepared == forward", check_static_same, model, mols)
    fd_mols = [by_name["ethanol"], by_name["caffeine"]]
    ck.run(f"{name} (b) finite differences, prepared", check_fd, prepared, fd_mols)
    ck.run(f"{name} (c) batch == single, forward", check_batch, model, mols, 1.0)
    ck.run(f"{name} (c) batch == single, prepared", check_batch, prepared, mols, 1.0)
    ck.run(f"{name} (d) atom order, forward", check_order, model, mols)
    ck.run(f"{name} (d) atom order, prepared", check_order, prepared, mols)
    ck.run(f"{name} float64 input, forward", check_float64, model, mols)
    ck.run(f"{name} float64 input, prepared", check_float64, prepared, mols)
    ck.run(f"{name} (e) unsupported elements, forward", check_elements, model, mols)
    ck.run(f"{name} (e) unsupported elements, prepare", check_elements, Prepared(model), mols)
    ck.run(f"{name} misuse of forward_prepared", check_static_misuse, path)
    ck.run(f"{name} no host sync in forward_prepared", check_static_no_sync, model, mols)
    z, x, b = flat_batch(mols)
    model.prepare(z, b)
    for label, fn in [("forward", model), ("prepared", Prepared(model))]:
        for _ in range(3):
            energy_forces(fn, z, x, b)
        t0 = time.perf_counter()
        for _ in range(5):
            energy_forces(fn, z, x, b)
        print(f"     {name} timing ({label}): energy + forces of the {len(z)}-atom, "
              f"{len(mols)}-molecule batch {1e3 * (time.perf_counter() - t0) / 5:.0f} ms (1 thread)")


# --------------------------------------------------------------------------
# neighbour-list models, contract v2 (models/<name>_nl.pt)
# --------------------------------------------------------------------------

# Water: O-H 0.9572 A, H-O-H 104.52 deg (TIP3P geometry).
_WATER_GEOM = torch.tensor([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0],
                            [0.9572 * math.cos(math.radians(104.52)),
                             0.9572 * math.sin(math.radians(104.52)), 0.0]], dtype=torch.float64)


class NLSystem:
    """Atomic numbers, float32 positions (as the engine's state), and a cell
    ([3, 3] rows a, b, c, float64) or None."""

    def __init__(self, name, z, x, cell=None):
        self.name, self.z, self.x, self.cell = name, z, x.to(torch.float32), cell

    def __len__(self):
        return len(self.z)


def read_pdb_box(rel):
    """Atoms and CRYST1 cell (rows a, b, c) of systems/<rel> (python/pdb_box.py)."""
    z, x, cell = pdb_box.read_pdb_box(os.path.join(ROOT, "systems", rel), SYMBOL_Z)
    return torch.tensor(z), torch.tensor(x, dtype=torch.float64), cell


def water_lattice(name, n_side, cell, seed):
    """n_side^3 rigid waters at the centres of an n_side^3 grid in `cell`,
    randomly oriented and jittered by up to 0.2 A (fixed seed), no two atoms of
    different waters closer than 1.6 A (counting periodic images)."""
    g = torch.Generator().manual_seed(seed)
    frac = (torch.cartesian_prod(*[torch.arange(n_side, dtype=torch.float64)] * 3) + 0.5) / n_side
    centres = frac @ cell
    inv = torch.linalg.inv(cell)
    placed = []
    for c in centres:
        for _ in range(1000):
            q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
            q = q * torch.sign(torch.diagonal(r))
            jitter = 0.2 * (2 * torch.rand(3, generator=g, dtype=torch.float64) - 1)
            mol = _WATER_GEOM @ q.T + c + jitter
            ok = True
            for other in placed:
                d = mol.unsqueeze(1) - other.unsqueeze(0)
                d = d - torch.round(d @ inv) @ cell  # nearest image (fine for these cells)
                if float(d.norm(dim=2).min()) < 1.6:
                    ok = False
                    break
            if ok:
                placed.append(mol)
                break
        else:
            raise AssertionError(f"{name}: could not place the waters")
    x = torch.cat(placed)
    z = torch.tensor([8, 1, 1] * len(placed))
    return NLSystem(name, z, x, cell)


def periodic_systems():
    """(1) systems/water/water_1k.pdb (333 waters, cubic, 21.5 A) or, if absent, a
    generated 216-water cubic box; (2) 64 waters in a triclinic cell (1 g/cm^3);
    (3) 2 waters in a 3.9 A cubic cell: every atom sees several images of each
    neighbour, and images of itself, within 5.2 A."""
    out = []
    path = os.path.join(ROOT, "systems", "water", "water_1k.pdb")
    if os.path.isfile(path):
        z, x, cell = read_pdb_box("water/water_1k.pdb")
        out.append(NLSystem("water_1k (999 atoms, cubic 21.5 A)", z, x, cell))
    else:
        side = (216 * 29.915) ** (1 / 3)
        out.append(water_lattice("water box (216 waters, cubic, generated)", 6,
                                 torch.eye(3, dtype=torch.float64) * side, 11))
    shape = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.95, 0.0], [0.2, 0.25, 0.9]],
                         dtype=torch.float64)
    scale = (64 * 29.915 / float(torch.det(shape))) ** (1 / 3)
    out.append(water_lattice("triclinic water (64 waters)", 4, shape * scale, 12))
    out.append(water_lattice("small cell (2 waters, 3.9 A cubic)", 1,
                             torch.eye(3, dtype=torch.float64) * 3.9, 13))
    # the second water of the small cell: shifted by half a diagonal
    sm = out[-1]
    second = sm.x.double() + sm.cell.sum(0) / 2
    sm.x = torch.cat([sm.x, second.float()])
    sm.z = torch.cat([sm.z, sm.z])
    return out


def nl_molecules():
    """Every shipped molecule and peptide (systems/molecules, systems/peptides)."""
    out = []
    for sub in ["molecules", "peptides"]:
        for fn in sorted(os.listdir(os.path.join(ROOT, "systems", sub))):
            if fn.endswith(".xyz"):
                z, x = read_xyz(f"{sub}/{fn[:-4]}")
                out.append(NLSystem(fn[:-4], z, x))
    return out


def nl_batch(systems):
    z = torch.cat([s.z for s in systems])
    x = torch.cat([s.x for s in systems])
    b = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(systems)])
    cells = None
    if any(s.cell is not None for s in systems):
        cells = [s.cell for s in systems]
    return z, x, b, cells


def nl_energy_forces(model, systems, prepared=False, **opts):
    """Per-structure energies [S] and forces [N, 3] (float64) of one batched call."""
    z, x, b, cells = nl_batch(systems)
    return pair_list.energies_and_forces(model, z, x, b, cells, prepared=prepared, **opts)


def torchani_neighbors():
    import torchani.neighbors

    return torchani.neighbors


def torchani_nl_reference(ref, systems):
    """torchani's energies and forces, one structure at a time (cell and pbc
    for periodic ones); `ref` float32 or float64."""
    dtype = next(ref.parameters()).dtype
    es, fs = [], []
    for s in systems:
        x = s.x.to(dtype).clone().unsqueeze(0).requires_grad_(True)
        if s.cell is None:
            e = ref((s.z.unsqueeze(0), x)).energies
        else:
            args = dict(cell=s.cell.to(dtype), pbc=torch.tensor([True, True, True]))
            all_pairs = ref.neighborlist
            try:
                # torchani's cell list: the same pairs as its all-pairs list
                # (energies equal to 1e-15), 10x faster on water_1k; it refuses
                # cells thinner than twice the cutoff
                ref.neighborlist = torchani_neighbors().CellList()
                e = ref((s.z.unsqueeze(0), x), **args).energies
            except RuntimeError as exc:
                if "too small" not in str(exc):
                    raise
                ref.neighborlist = all_pairs
                e = ref((s.z.unsqueeze(0), x), **args).energies
            finally:
                ref.neighborlist = all_pairs
        (g,) = torch.autograd.grad(e.sum(), x)
        es.append(e.detach().double() * HARTREE_TO_EV)
        fs.append(-g[0].double() * HARTREE_TO_EV)
    return torch.cat(es), torch.cat(fs)


def per_structure_errors(systems, e, f, e_ref, f_ref, force_floor=1.0):
    """[(name, |dE| / |E|, max |dF| / max(max |F|, force_floor), max |dF| / max |F|)]
    per structure. The floor (1 eV/A, as check_torchani) keeps molecules near
    their minimum (water, methane: max |F| ~ 0.05 eV/A) from turning float32
    noise of ~1e-6 eV/A into a large relative error; the last value is
    reported, not asserted."""
    out, start = [], 0
    for i, s in enumerate(systems):
        sl = slice(start, start + len(s))
        start += len(s)
        de = float((e[i] - e_ref[i]).abs() / e_ref[i].abs())
        dmax = float((f[sl] - f_ref[sl]).abs().max())
        fmax = float(f_ref[sl].abs().max())
        out.append((s.name, de, dmax / max(fmax, force_floor),
                    dmax / fmax if fmax > 0 else dmax))
    return out


def summarise(errs, tol, what):
    worst_e = max(errs, key=lambda t: t[1])
    worst_f = max(errs, key=lambda t: t[2])
    worst_raw = max(errs, key=lambda t: t[3])
    bad = [f"{n} (E {de:.1e}, F {df:.1e})" for n, de, df, _ in errs if de > tol or df > tol]
    assert not bad, f"{what}: above {tol:g}: " + ", ".join(bad)
    return (f"{what}: energy max {worst_e[1]:.1e} ({worst_e[0]}), forces max "
            f"{worst_f[2]:.1e} ({worst_f[0]}; without the 1 eV/A floor {worst_raw[3]:.1e}, "
            f"{worst_raw[0]})")


def check_nl_interface(model, name, elements=(1, 6, 7, 8)):
    assert not model.is_prepared(), "a freshly loaded model reports is_prepared()"
    assert model.cutoffs() == [5.2, 3.5], model.cutoffs()
    assert model.supported_elements() == list(elements), model.supported_elements()
    meta = json.loads(model.metadata())
    for key in ["name", "description", "energy_unit", "length_unit", "source",
                "licence", "reference", "energy_dtype", "cost_scaling"]:
        assert key in meta, f"metadata lacks {key}"
    assert meta["name"] == name and meta["energy_unit"] == "eV"
    assert meta.get("variant") == "neighbour-list (contract v2)", meta.get("variant")
    assert meta["cutoffs_angstrom"] == [5.2, 3.5]
    assert meta.get("model_contract", 2) == 2, meta.get("model_contract")
    with open(os.path.join(ROOT, "models", name + ".json")) as f:
        assert json.load(f) == meta, f"models/{name}.json differs from metadata()"
    z, x = molecule(WATER)
    b = torch.zeros(3, dtype=torch.long)
    p = pair_list.build_pairs(x, b, model.cutoffs())
    v = p["vectors"].requires_grad_(True)
    e = model.forward_pairs(z, b, p["neighbors"], v, p["mask"], p["inner_slots"],
                            p["inner_masks"])
    assert e.shape == (1,) and e.dtype == torch.float64 and e.requires_grad, (e.shape, e.dtype)
    assert not model.is_prepared(), "forward_pairs changed the prepared state"
    model.prepare(z, b)
    assert model.is_prepared()
    ep = model.forward_pairs_prepared(p["neighbors"], v, p["mask"], p["inner_slots"],
                                      p["inner_masks"])
    assert torch.equal(e.detach(), ep.detach())
    return f"cutoffs {model.cutoffs()}, water {e.item():.4f} eV"


def check_nl_torchani(model, refs, systems, label, prepared=False, tol=1e-5):
    """Energies and forces of one batched call vs torchani with the same weights,
    per structure: |dE| / |E| and max |dF| / max(max |F|, 1 eV/A), against
    torchani in float64 (asserted: tol) and in float32 (isolated molecules:
    asserted at 2 tol; periodic boxes: reported, torchani's float32 periodic
    path is itself ~1e-4 off its float64 result)."""
    e, f = nl_energy_forces(model, systems, prepared=prepared)
    e64, f64 = torchani_nl_reference(refs[1], systems)
    msg = [summarise(per_structure_errors(systems, e, f, e64, f64), tol, "vs float64")]
    if all(s.cell is None for s in systems):
        # Both float32 implementations are up to ~9e-6 (max |dF| / max(max |F|,
        # 1 eV/A)) from torchani's float64 result, so they may differ from each
        # other by up to twice that: asserted at 2 tol.
        e32, f32 = torchani_nl_reference(refs[0], systems)
        msg.append(summarise(per_structure_errors(systems, e, f, e32, f32), 2 * tol,
                             "vs float32"))
    else:
        # torchani's float32 periodic path is less accurate (float32 positions
        # wrapped into the cell): reported for the small boxes, not asserted
        small = [i for i, s in enumerate(systems) if len(s) < 500]
        sub = [systems[i] for i in small]
        e32, f32 = torchani_nl_reference(refs[0], sub)
        rows = torch.cat([torch.arange(sum(map(len, systems[:i])),
                                       sum(map(len, systems[:i + 1]))) for i in small])
        own = per_structure_errors(sub, e[small], f[rows], e32, f32)
        ref32 = per_structure_errors(sub, e32, f32, e64[small], f64[rows])
        msg.append(f"boxes < 500 atoms: torchani float32 vs float64 forces max "
                   f"{max(t[3] for t in ref32):.1e}, this model vs torchani float32 "
                   f"{max(t[3] for t in own):.1e}")
    return f"{label}, {len(systems)} structures, {sum(map(len, systems))} atoms; " + "; ".join(msg)


def check_nl_lone_atoms(model, refs):
    """Structures of one atom (rows without neighbours; K = 0): energies and
    zero forces as torchani's."""
    systems = [NLSystem(f"lone {s}", torch.tensor([SYMBOL_Z[s]]), torch.zeros(1, 3))
               for s in "HCNO"]
    e, f = nl_energy_forces(model, systems)
    e_ref, _ = torchani_nl_reference(refs[1], systems)
    de = float(((e - e_ref).abs() / e_ref.abs()).max())
    assert de < 1e-5, f"energy {de:.1e}"
    assert float(f.abs().max()) == 0.0, "non-zero force on a lone atom"
    return f"H, C, N, O alone (K = Ka = 0): max |dE| / |E| {de:.1e}, forces 0"


def shuffled_pairs(pairs, extra_k, extra_ka, g, cutoff):
    """The same list with K + extra_k entries and Ka + extra_ka slots per row, the
    entries of each row (used and unused) in random order, slots in increasing k."""
    nb, vec, mask = pairs["neighbors"], pairs["vectors"], pairs["mask"]
    n, k = nb.shape
    k2 = k + extra_k
    pad_vec = torch.tensor([2 * cutoff, 0.0, 0.0], dtype=vec.dtype)  # unused entries
    nb2 = torch.cat([nb, torch.arange(n).view(n, 1).expand(n, extra_k)], 1)
    vec2 = torch.cat([vec, pad_vec.expand(n, extra_k, 3)], 1)
    mask2 = torch.cat([mask, torch.zeros(n, extra_k, dtype=torch.bool)], 1)
    perm = torch.argsort(torch.rand(n, k2, generator=g), dim=1)  # new column -> old column
    nb2 = torch.gather(nb2, 1, perm)
    vec2 = torch.gather(vec2, 1, perm.unsqueeze(2).expand(n, k2, 3))
    mask2 = torch.gather(mask2, 1, perm)
    new_col = torch.argsort(perm, dim=1)  # old column -> new column
    slots, smask = pairs["inner_slots"][0], pairs["inner_masks"][0]
    ka2 = slots.shape[1] + extra_ka
    cols = torch.where(smask, torch.gather(new_col, 1, slots), torch.full_like(slots, k2))
    cols = torch.sort(cols, dim=1).values
    cols = torch.cat([cols, torch.full((n, extra_ka), k2, dtype=torch.long)], 1)
    smask2 = cols < k2
    slots2 = torch.where(smask2, cols, torch.zeros_like(cols))
    return {"neighbors": nb2, "vectors": vec2, "mask": mask2,
            "inner_slots": [slots2], "inner_masks": [smask2]}


def vector_grad(model, z, b, p, prepared):
    v = p["vectors"].detach().clone().requires_grad_(True)
    if prepared:
        e = model.forward_pairs_prepared(p["neighbors"], v, p["mask"], p["inner_slots"],
                                         p["inner_masks"])
    else:
        e = model.forward_pairs(z, b, p["neighbors"], v, p["mask"], p["inner_slots"],
                                p["inner_masks"])
    (g,) = torch.autograd.grad(e.sum(), v)
    return e.detach(), g


def check_nl_capacities(model, systems):
    """Capacities larger than needed (K + 3..9, Ka + 2..42, so Ka beyond the
    prepared pair tables of 64 slots too), entries of every row in random order,
    and a 1 A skin (entries beyond both cutoffs listed): energies and forces as
    with the tight list, to float32 rounding. forward_pairs and
    forward_pairs_prepared agree bit for bit on each list."""
    z, x, b, cells = nl_batch(systems)
    e0, f0 = nl_energy_forces(model, systems)
    p0 = pair_list.build_pairs(x, b, model.cutoffs(), cells)
    tight = f"{p0['neighbors'].shape[1]}/{p0['inner_slots'][0].shape[1]}"
    model.prepare(z, b)
    g = torch.Generator().manual_seed(5)
    worst_e, worst_f, cases = 0.0, 0.0, []
    for extra_k, extra_ka, skin in [(3, 2, 0.0), (9, 42, 0.0), (5, 3, 1.0)]:
        base = pair_list.build_pairs(x, b, model.cutoffs(), cells, skin=skin)
        p = shuffled_pairs(base, extra_k, extra_ka, g, model.cutoffs()[0])
        e, gv = vector_grad(model, z, b, p, prepared=False)
        ep, gp = vector_grad(model, z, b, p, prepared=True)
        assert torch.equal(e, ep) and torch.equal(gv, gp), \
            f"forward_pairs != forward_pairs_prepared (K {p['neighbors'].shape[1]})"
        f = pair_list.forces_from_vector_grad(gv, p["neighbors"], p["mask"])
        errs = per_structure_errors(systems, e, f, e0, f0)
        worst_e = max(worst_e, max(t[1] for t in errs))
        worst_f = max(worst_f, max(t[3] for t in errs))
        cases.append(f"{p['neighbors'].shape[1]}/{p['inner_slots'][0].shape[1]}")
    assert worst_e < 1e-6, f"energies changed by {worst_e:.1e} (relative)"
    assert worst_f < 1e-5, f"forces changed by {worst_f:.1e} (max |dF| / max |F|)"
    return (f"K/Ka {', '.join(cases)} (tight list {tight}): max |dE| / |E| {worst_e:.1e}, "
            f"max |dF| / max |F| {worst_f:.1e}; forward_pairs == prepared bitwise")


def check_nl_same(model, systems):
    """forward_pairs and prepare + forward_pairs_prepared: energies and dE/dvectors
    bit for bit; repeated calls too."""
    z, x, b, cells = nl_batch(systems)
    p = pair_list.build_pairs(x, b, model.cutoffs(), cells)
    e, g = vector_grad(model, z, b, p, prepared=False)
    model.prepare(z, b)
    for _ in range(3):
        ep, gp = vector_grad(model, z, b, p, prepared=True)
        assert torch.equal(e, ep), float((e - ep).abs().max())
        assert torch.equal(g, gp), float((g - gp).abs().max())
    return f"{len(systems)} structures, {len(z)} atoms: identical"


def check_nl_batch(model, systems):
    """One batched call == each structure alone (energies and forces)."""
    e, f = nl_energy_forces(model, systems, prepared=True)
    es, fs = [], []
    for s in systems:
        ei, fi = nl_energy_forces(model, [s], prepared=True)
        es.append(ei)
        fs.append(fi)
    errs = per_structure_errors(systems, e, f, torch.cat(es), torch.cat(fs))
    return summarise(errs, 1e-5, f"{len(systems)} structures")


def check_nl_fd(model, systems):
    """Forces equal central finite differences of the energy (pairs rebuilt for
    every displaced geometry); see check_fd for the tolerances."""
    h, tol_abs, tol_rel = 1e-3, 1e-2, 1e-2
    z, x, b, cells = nl_batch(systems)
    _, f = nl_energy_forces(model, systems)
    fd, ad = [], []
    with torch.no_grad():
        for i in range(0, len(z), 2):
            for k in range(3):
                xp, xm = x.clone(), x.clone()
                xp[i, k] += h
                xm[i, k] -= h
                step = float(xp[i, k].double() - xm[i, k].double())
                de = nl_energy_sum(model, z, xp, b, cells) - nl_energy_sum(model, z, xm, b, cells)
                fd.append(-de / step)
                ad.append(float(f[i, k]))
    fd, ad = torch.tensor(fd, dtype=torch.float64), torch.tensor(ad, dtype=torch.float64)
    err = (fd - ad).abs()
    rel = float((fd - ad).norm() / ad.norm())
    assert float(err.max()) < tol_abs, f"max |F_fd - F| {float(err.max()):.2e} eV/A"
    assert rel < tol_rel, f"relative error {rel:.2e}"
    return (f"{len(fd)} components ({', '.join(s.name for s in systems)}), h = {h} A, "
            f"max |F_fd - F| {float(err.max()):.1e} eV/A, rel {rel:.1e}")


def nl_energy_sum(model, z, x, b, cells):
    p = pair_list.build_pairs(x, b, model.cutoffs(), cells)
    return float(model.forward_pairs(z, b, p["neighbors"], p["vectors"], p["mask"],
                                     p["inner_slots"], p["inner_masks"]).sum())


def check_nl_float64(model, systems):
    """float64 vectors give the float32 result (cast inside, gradient in float64)."""
    z, x, b, cells = nl_batch(systems)
    p32 = pair_list.build_pairs(x, b, model.cutoffs(), cells)
    p64 = pair_list.build_pairs(x, b, model.cutoffs(), cells, dtype=torch.float64)
    e32, g32 = vector_grad(model, z, b, p32, prepared=False)
    e64, g64 = vector_grad(model, z, b, p64, prepared=False)
    assert g64.dtype == torch.float64
    assert torch.equal(e32, e64), (e32, e64)
    assert torch.equal(g32.double(), g64)
    return None


def check_nl_elements(model, prepared, unsupported=16, named=""):
    """An unsupported element raises a RuntimeError naming it (forward_pairs,
    prepare): `unsupported` (an element the model lacks), then 0, 200, -1;
    the message for the first also holds `named` (the elements it takes)."""
    z0, x0 = molecule(WATER)
    zs, xs = molecule(H2S)
    for bad_z in [unsupported, 0, 200, -1]:
        z = torch.cat([z0, zs.clone().masked_fill(zs == 16, bad_z)])
        x = torch.cat([x0, xs + 10.0])
        b = torch.tensor([0] * len(z0) + [1] * len(zs))
        try:
            if prepared:
                model.prepare(z, b)
            else:
                pair_list.energies_and_forces(model, z, x, b)
        except (RuntimeError, torch.jit.Error) as exc:
            if bad_z == unsupported:
                assert str(unsupported) in str(exc) and named in str(exc), str(exc)
            continue
        raise AssertionError(f"atomic number {bad_z} did not raise")
    if prepared:
        assert not model.is_prepared(), "is_prepared() after a failed prepare"
    return f"Z = {unsupported}, 0, 200, -1 raise RuntimeError"


def check_nl_misuse(path):
    """forward_pairs_prepared before prepare, with another N, a wrong number of
    inner lists, a non-bool mask or mismatched shapes raises."""
    model = torch.jit.load(path)
    z, x = molecule(GLYCINE)
    b = torch.zeros(len(z), dtype=torch.long)
    p = pair_list.build_pairs(x, b, model.cutoffs())
    nb, v, m, s, sm = (p["neighbors"], p["vectors"], p["mask"], p["inner_slots"],
                       p["inner_masks"])
    cases = [("before prepare()", lambda: model.forward_pairs_prepared(nb, v, m, s, sm))]
    model_calls = [
        ("N - 1 atoms", lambda: model.forward_pairs_prepared(nb[:-1], v[:-1], m[:-1],
                                                             [s[0][:-1]], [sm[0][:-1]])),
        ("no inner list", lambda: model.forward_pairs_prepared(nb, v, m, [], [])),
        ("two inner lists", lambda: model.forward_pairs_prepared(nb, v, m, s + s, sm + sm)),
        ("int mask", lambda: model.forward_pairs_prepared(nb, v, m.to(torch.int64), s, sm)),
        ("vectors [N, K, 2]", lambda: model.forward_pairs_prepared(nb, v[:, :, :2], m, s, sm)),
        ("slots vs masks", lambda: model.forward_pairs_prepared(nb, v, m, s,
                                                                [sm[0][:, :-1]])),
        ("forward_pairs, batch of N - 1", lambda: model.forward_pairs(z, b[:-1], nb, v, m,
                                                                      s, sm)),
        ("forward_pairs, neighbour out of range", lambda: model.forward_pairs(
            z, b, nb.index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(len(z))),
            v, m, s, sm)),
    ]
    for i, (label, fn) in enumerate(cases + model_calls):
        if i == 1:
            model.prepare(z, b)
        try:
            fn()
        except (RuntimeError, torch.jit.Error):
            continue
        raise AssertionError(f"{label} did not raise")
    return f"{len(cases + model_calls)} misuses raise"


def check_nl_no_sync(model, systems):
    """As check_static_no_sync, for forward_pairs_prepared: no sync-prone op in its
    graph (callees inlined), none run in its forward + backward (profiler), for
    Ka within and beyond the prepared pair tables."""
    bad, n_nodes = sync_prone_ops(model.forward_pairs_prepared)
    assert not bad, f"sync-prone ops in forward_pairs_prepared: {bad}"
    z, x, b, cells = nl_batch(systems)
    model.prepare(z, b)
    base = pair_list.build_pairs(x, b, model.cutoffs(), cells)
    n_aten = []
    for extra in [0, 42]:
        p = shuffled_pairs(base, 0, extra, torch.Generator().manual_seed(1),
                           model.cutoffs()[0])
        for _ in range(2):  # TorchScript optimises the graph in the first runs
            vector_grad(model, z, b, p, prepared=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            vector_grad(model, z, b, p, prepared=True)
        ran = sorted({e.name for e in prof.events()} & SYNC_PRONE)
        assert not ran, f"sync-prone ops ran in forward_pairs_prepared + backward: {ran}"
        n_aten.append(sum(1 for e in prof.events() if e.name.startswith("aten::")))
    return (f"graph: {n_nodes} nodes, none sync-prone; forward + backward ran "
            f"{n_aten[0]} aten ops (Ka beyond the tables: {n_aten[1]}), none sync-prone")


def run_nl(ck, name, refs_cache):
    path, model = load_model(ck, name)
    if model is None:
        return
    ck.run(f"{name} interface", check_nl_interface, model, name)
    base = name[:-len("_nl")]
    if base not in refs_cache:
        ref, why = torchani_reference(base)
        refs_cache[base] = (None, why) if ref is None else \
            ((ref, copy.deepcopy(ref).double()), None)
    refs, why = refs_cache[base]
    mols = nl_molecules()
    by_name = {s.name: s for s in mols}
    boxes = periodic_systems()
    if refs is None:
        ck.fail(f"{name} torchani", why)
    else:
        ck.run(f"{name} torchani, shipped molecules and peptides (one mixed batch)",
               check_nl_torchani, model, refs, mols, "forward_pairs")
        ck.run(f"{name} torchani, periodic water (one batch, cell per structure)",
               check_nl_torchani, model, refs, boxes, "forward_pairs_prepared", True)
        ck.run(f"{name} torchani, lone atoms", check_nl_lone_atoms, model, refs)
    small = [by_name[n] for n in ["caffeine", "alanine_dipeptide", "chignolin_folded"]] + boxes[1:]
    ck.run(f"{name} forward_pairs == forward_pairs_prepared", check_nl_same, model, small)
    ck.run(f"{name} capacities, row order, skin", check_nl_capacities, model, small)
    ck.run(f"{name} batch == single", check_nl_batch, model,
           [by_name[n] for n in ["water", "caffeine", "ibuprofen", "trpcage_folded"]] + boxes[1:])
    ck.run(f"{name} finite differences", check_nl_fd, model,
           [by_name["caffeine"], boxes[2]])
    ck.run(f"{name} float64 vectors", check_nl_float64, model, small)
    ck.run(f"{name} unsupported elements, forward_pairs", check_nl_elements, model, False)
    ck.run(f"{name} unsupported elements, prepare", check_nl_elements, model, True)
    ck.run(f"{name} misuse", check_nl_misuse, path)
    ck.run(f"{name} no host sync in forward_pairs_prepared", check_nl_no_sync, model,
           [by_name["caffeine"], by_name["alanine_dipeptide"], boxes[2]])
    z, x, b, cells = nl_batch(mols)
    p = pair_list.build_pairs(x, b, model.cutoffs(), cells)
    model.prepare(z, b)
    for _ in range(3):
        vector_grad(model, z, b, p, True)
    t0 = time.perf_counter()
    for _ in range(5):
        vector_grad(model, z, b, p, True)
    print(f"     {name} timing (prepared): energy + dE/dvectors of the {len(z)}-atom, "
          f"{len(mols)}-molecule batch {1e3 * (time.perf_counter() - t0) / 5:.0f} ms (1 thread)")


# ANI-2xt (models/ani2xt_nl.pt, contract v2; python/export_ani2xt.py)
# --------------------------------------------------------------------------

ANI2XT_ELEMENTS = [1, 6, 7, 8, 9, 16, 17]


def ani2xt_molecules():
    """systems/ani2xt/*.xyz (python/build_ani2xt_systems.py): F, S and Cl."""
    folder = os.path.join(ROOT, "systems", "ani2xt")
    names = sorted(fn[:-4] for fn in os.listdir(folder) if fn.endswith(".xyz"))
    out = [NLSystem(n, *read_xyz(f"ani2xt/{n}")) for n in names]
    elements = {int(z) for s in out for z in s.z}
    assert {9, 16, 17} <= elements, f"systems/ani2xt lacks F, S or Cl: {sorted(elements)}"
    return out


def ani2xt_reference():
    """(float32, float64) torchani 2.9 models built as Auto3D builds ANI-2xt
    (export_ani2xt.reference_model), or the reason they are unavailable."""
    try:
        import export_ani2xt

        ref = export_ani2xt.Reference(*export_ani2xt.reference_model(download=False)).eval()
    except Exception as exc:
        return None, (f"ANI-2xt reference unavailable ({type(exc).__name__}: {exc}); "
                      "python/export_ani.py downloads the Auto3D wheel; `make test` runs it")
    return (ref, copy.deepcopy(ref).double()), None


def ani2xt_reference_ef(ref, systems):
    """Reference energies (eV) and forces, one structure at a time."""
    dtype = ref.aev.radial.shifts.dtype
    index = {z: i for i, z in enumerate(ANI2XT_ELEMENTS)}
    es, fs = [], []
    for s in systems:
        species = torch.tensor([[index[int(z)] for z in s.z]])
        x = s.x.to(dtype).clone().unsqueeze(0).requires_grad_(True)
        if s.cell is None:
            e = ref(species, x)
        else:
            e = ref(species, x, cell=s.cell.to(dtype), pbc=torch.tensor([True, True, True]))
        (g,) = torch.autograd.grad(e.sum(), x)
        es.append(e.detach().double())
        fs.append(-g[0].double())
    return torch.cat(es), torch.cat(fs)


def check_ani2xt_reference(model, refs, systems, label, prepared):
    """Energies and forces of one batched call vs the Auto3D-built torchani
    model, per structure: |dE| / |E| <= 1e-5 and max |dF| / max |F| <= 1e-5
    (no floor) against it in float64; against it in float32 at 2e-5."""
    e, f = nl_energy_forces(model, systems, prepared=prepared)
    e64, f64 = ani2xt_reference_ef(refs[1], systems)
    msg = [summarise(per_structure_errors(systems, e, f, e64, f64, force_floor=0.0),
                     1e-5, "vs float64")]
    if all(s.cell is None for s in systems):
        e32, f32 = ani2xt_reference_ef(refs[0], systems)
        msg.append(summarise(per_structure_errors(systems, e, f, e32, f32, force_floor=0.0),
                             2e-5, "vs float32"))
    return f"{label}, {len(systems)} structures, {sum(map(len, systems))} atoms; " + \
        "; ".join(msg)


def ani2xt_boxes(mols):
    """Two periodic cubes, positions wrapped into the cell (molecules cross its
    faces): chlorobenzene + methanethiol in 10 A, and the F/S/Cl sulfonamide
    alone in 7 A (atoms see images of themselves and of each neighbour)."""
    by = {s.name: s for s in mols}
    a, b, c = by["chlorobenzene"], by["methanethiol"], by["chlorofluorobenzenesulfonamide"]

    def wrap(x, side):
        return torch.remainder(x.double(), side).float()

    out = [NLSystem("chlorobenzene + methanethiol (10 A cube)", torch.cat([a.z, b.z]),
                    wrap(torch.cat([a.x - a.x.mean(0) + 1.0, b.x - b.x.mean(0) + 6.0]), 10.0),
                    torch.eye(3, dtype=torch.float64) * 10.0),
           NLSystem("sulfonamide (7 A cube)", c.z, wrap(c.x - c.x.mean(0) + 3.5, 7.0),
                    torch.eye(3, dtype=torch.float64) * 7.0)]
    return out


def run_ani2xt(ck, name):
    path, model = load_model(ck, name)
    if model is None:
        return
    ck.run(f"{name} interface", check_nl_interface, model, name, ANI2XT_ELEMENTS)
    try:
        mols = ani2xt_molecules()
    except Exception as exc:
        ck.fail(f"{name} molecules", f"systems/ani2xt: {type(exc).__name__}: {exc} "
                "(python/build_ani2xt_systems.py writes them)")
        return
    boxes = ani2xt_boxes(mols)
    refs, why = ani2xt_reference()
    if refs is None:
        ck.fail(f"{name} reference (Auto3D ANI-2xt in torchani)", why)
    else:
        ck.run(f"{name} reference, F/S/Cl molecules (one mixed batch, forward_pairs)",
               check_ani2xt_reference, model, refs, mols, "forward_pairs", False)
        ck.run(f"{name} reference, F/S/Cl molecules (prepared)",
               check_ani2xt_reference, model, refs, mols, "forward_pairs_prepared", True)
        ck.run(f"{name} reference, periodic cells", check_ani2xt_reference, model, refs,
               boxes, "forward_pairs_prepared", True)
    ck.run(f"{name} forward_pairs == forward_pairs_prepared", check_nl_same, model,
           mols + boxes)
    ck.run(f"{name} capacities, row order, skin", check_nl_capacities, model, mols + boxes)
    ck.run(f"{name} batch == single", check_nl_batch, model, mols + boxes)
    ck.run(f"{name} finite differences", check_nl_fd, model,
           [s for s in mols if s.name in ("trifluoroethanol", "methanethiol")] + boxes[1:])
    ck.run(f"{name} float64 vectors", check_nl_float64, model, mols)
    for prepared, method in [(False, "forward_pairs"), (True, "prepare")]:
        ck.run(f"{name} unsupported elements, {method}", check_nl_elements, model, prepared,
               15, "F, S, Cl")
    ck.run(f"{name} misuse", check_nl_misuse, path)
    ck.run(f"{name} no host sync in forward_pairs_prepared", check_nl_no_sync, model,
           mols[:2] + boxes[1:])


def main() -> int:
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    mols_by_name = load_molecules()
    mols = list(mols_by_name.values())
    print("molecules: " + ", ".join(f"{k} ({len(v[0])})" for k, v in mols_by_name.items()))
    ck = Checker()
    for name in MODELS:
        path, model = load_model(ck, name)
        if model is None:
            continue
        ck.run(f"{name} interface", check_interface, model, name)
        ref, why = torchani_reference(name)
        if ref is None:
            ck.fail(f"{name} (a) torchani", why)
        else:
            ck.run(f"{name} (a) torchani", check_torchani, model, ref, mols)
        ck.run(f"{name} (b) finite differences", check_fd, model,
               [mols_by_name["ethanol"], mols_by_name["caffeine"]])
        ck.run(f"{name} (c) batch == single", check_batch, model, mols)
        ck.run(f"{name} (d) atom order", check_order, model, mols)
        ck.run(f"{name} float64 input", check_float64, model, mols)
        ck.run(f"{name} (e) unsupported elements", check_elements, model, mols)
        z, x, b = flat_batch(mols)
        for _ in range(2):
            energy_forces(model, z, x, b)
        t0 = time.perf_counter()
        for _ in range(5):
            energy_forces(model, z, x, b)
        print(f"     {name} timing: energy + forces of the {len(z)}-atom, {len(mols)}-molecule "
              f"batch {1e3 * (time.perf_counter() - t0) / 5:.0f} ms (1 thread)")
    for name in STATIC_MODELS:
        run_static(ck, name, mols_by_name)
    refs_cache = {}
    for name in NL_MODELS:
        run_nl(ck, name, refs_cache)
    for name in ANI2XT_MODELS:
        run_ani2xt(ck, name)
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    print(f"check_ani: {ck.passed} passed, {ck.failed} failed")
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
