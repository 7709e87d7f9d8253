"""Check the exported ANI models (models/ani1x.pt, models/ani1ccx.pt and the
static-shape models/ani1x_static.pt, models/ani1ccx_static.pt).

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

Prints `check_ani: N passed, M failed` last and exits 1 if anything failed.
"""

import collections
import json
import os
import sys
import time
import traceback

import torch

import export_ani
import model_files

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = ["ani1x", "ani1ccx"]
STATIC_MODELS = ["ani1x_static", "ani1ccx_static"]
HARTREE_TO_EV = 27.211386245988
SYMBOL_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "S": 16}

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


def check_static_no_sync(model, mols):
    """No sync-prone op in forward_prepared: (1) its TorchScript graph, callees
    inlined, has none of SYNC_PRONE, no prim::TupleIndex with a computed index
    and no aten::to to another device; (2) the profiler sees none of them run
    in forward_prepared + backward (autograd included)."""
    graph = model.forward_prepared.graph.copy()
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
    return (f"graph: {sum(kinds.values())} nodes, none sync-prone; forward + backward ran "
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
    print(f"total time {time.perf_counter() - t_start:.1f} s")
    print(f"check_ani: {ck.passed} passed, {ck.failed} failed")
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
