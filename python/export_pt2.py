"""Compile a static-shape TorchScript model into an AOTInductor package
(.pt2) that returns energies AND forces, for one molecule times R members.

    python python/export_pt2.py --structure systems/peptides/alanine_dipeptide.pdb \\
        --replicas 64 --device cuda --out out/ala2_x64.pt2   [--model models/ani1x_static.pt]

    python python/export_pt2.py --model models/ani1x_nl.pt --capacity 24 \\
        --inner-capacities 16 --structure ... --replicas 64 --device cuda --out ...

With --kernels triton (or triton-tf32x3), a neighbour-list ANI-1x/1ccx
file is rebuilt in Python with its angular sum by Triton kernels
(python/ani_nl_triton.py), checked against the file, and that module is
compiled (CUDA only); the metadata records it (mlff_md.kernels).

With --capacity, the model is one of contract v2 (the engine's neighbour
list: cutoffs(), prepare() and forward_pairs_prepared()) and the package is
of contract pt2-v2: `(neighbors int64[N, K], vectors float32[N, K, 3],
mask bool[N, K], inner_slots int64[N, K_c]..., inner_masks bool[N, K_c]...)
-> (energies float64[R], -dE/dvectors float32[N, K, 3])`, with the list's
row capacity K and inner capacities K_c fixed (metadata mlff_md.capacity,
mlff_md.inner_capacities). The engine assembles the forces from the
gradient over its list, as it does for the TorchScript file, and returns to
the file whenever its list has other capacities (it grew).

Its list indices are inputs, so Inductor must not tune its CUDA kernels on
random inputs (the default for packages: random indices fail its bounds
assertions); it tunes them on the example list instead
(triton.autotune_at_compile_time = False). MLFF_MD_INDUCTOR_CONFIG (JSON)
adds Inductor settings to both kinds of package, for experiments.

`mlff-md compile CONFIG` runs this script (the binary carries it) for a
run's molecule, member count and device and stores the package in its
cache, where runs find it (src/compile.rs). The engine also loads a package
named directly (`[model] path = "....pt2"`, src/force/aoti.rs)
and calls it with the positions alone: `positions float32[R*n, 3] (A) ->
(energies float64[R] (eV), forces float32[R*n, 3] (eV/A))`. The backward
pass is compiled into the package, so a step runs no autograd and no
TorchScript interpreter.

How: the model's prepare(atomic_numbers, batch) fixes the layout; the
function positions -> (E, -dE/dx) through forward_prepared and
torch.autograd.grad is traced to one aten graph with make_fx (torch.export
cannot trace autograd.grad itself), exported, and compiled by
torch._inductor.aoti_compile_and_package for the device (a CUDA package must
be compiled on a machine with the GPU; a CPU package is compiled for this
CPU's instruction set). Every shape is fixed at compile time, so a package
serves one composition and one R: the metadata names them
(mlff_md.atomic_numbers, mlff_md.replicas) and the engine refuses any other
batch. Packages are not byte-reproducible (inductor's generated names), so
they are build outputs, not committed files with hashes.

The script checks the package against the TorchScript model it came from,
on the structure's positions and on a rattled copy: energies to 1e-6
relative, forces to 1e-4 eV/A; it exits 1 otherwise.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import time

import json

import torch
from torch.fx.experimental.proxy_tensor import make_fx

INTERFACE = "pt2-v1"
PAIRS_INTERFACE = "pt2-v2"
SYMBOL_Z = {"H": 1, "B": 5, "C": 6, "N": 7, "O": 8, "F": 9, "Si": 14, "P": 15, "S": 16,
            "Cl": 17, "As": 33, "Se": 34, "Br": 35, "I": 53}


def energy_forces(model):
    """positions -> (energies, forces) of the prepared model."""
    def ef(positions):
        positions = positions.detach().requires_grad_(True)
        energies = model.forward_prepared(positions)
        (grad,) = torch.autograd.grad(energies.sum(), positions)
        return energies, -grad
    return ef


def energy_gradient(model, n_inner):
    """(neighbors, vectors, mask, inner slots..., inner masks...) ->
    (energies, -dE/dvectors) of the prepared pair model."""
    def eg(neighbors, vectors, mask, *inner):
        vectors = vectors.detach().requires_grad_(True)
        slots, masks = list(inner[:n_inner]), list(inner[n_inner:])
        energies = model.forward_pairs_prepared(neighbors, vectors, mask, slots, masks)
        (grad,) = torch.autograd.grad(energies.sum(), vectors)
        return energies, -grad
    return eg


def pair_inputs(z, x, replicas, cutoffs, capacity, inner_capacities, device):
    """A neighbour list of the molecule's own geometry in the engine's layout
    (rows of `capacity` entries: neighbour row, vector x_j - x_i, mask; unused
    entries point at the row itself with the vector (2 cutoff, 0, 0); inner
    slot lists of the entries within each inner cutoff), for each of the
    replicas; entries beyond a capacity are left out (the inputs only have to
    be the same for the package and its model)."""
    n = len(z)
    pos = torch.tensor(x, dtype=torch.float64)
    d = (pos[None, :, :] - pos[:, None, :]).norm(dim=-1)
    rows = torch.arange(n)

    def first(keep, k):
        """Per row, the columns where keep holds, in order, the first k;
        padded with 0 (mask False)."""
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :k]
        taken = keep.gather(1, order)
        return torch.where(taken, order, torch.zeros_like(order)), taken

    within = (d < cutoffs[0]) & (rows[:, None] != rows[None, :])
    nb, mask = first(within, min(capacity, n))
    if capacity > n:
        pad = capacity - n
        nb = torch.cat([nb, torch.zeros(n, pad, dtype=torch.long)], 1)
        mask = torch.cat([mask, torch.zeros(n, pad, dtype=torch.bool)], 1)
    nb = torch.where(mask, nb, rows[:, None])
    d_entry = d.gather(1, nb)
    slots, inner_masks = [], []
    for c, k in enumerate(inner_capacities):
        inside = mask & (d_entry < cutoffs[c + 1])
        s_, m_ = first(inside, min(k, capacity))
        if k > capacity:
            s_ = torch.cat([s_, torch.zeros(n, k - capacity, dtype=torch.long)], 1)
            m_ = torch.cat([m_, torch.zeros(n, k - capacity, dtype=torch.bool)], 1)
        slots.append(s_)
        inner_masks.append(m_)
    offsets = (torch.arange(replicas) * n).repeat_interleave(n)[:, None]
    neighbors = nb.repeat(replicas, 1) + offsets
    all_pos = pos.repeat(replicas, 1)
    vectors = all_pos[neighbors] - all_pos[:, None, :]
    far = torch.tensor([2 * cutoffs[0], 0.0, 0.0], dtype=torch.float64)
    full_mask = mask.repeat(replicas, 1)
    vectors = torch.where(full_mask[..., None], vectors, far)
    rep = lambda t: t.repeat(replicas, 1).to(device)
    return ([neighbors.to(device), vectors.to(torch.float32).to(device), full_mask.to(device)]
            + [rep(t) for t in slots] + [rep(t) for t in inner_masks])


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/ani1x_static.pt",
                    help="a static-shape TorchScript model with prepare() and forward_prepared()")
    ap.add_argument("--structure", required=True,
                    help="PDB file of the molecule, or JSON {atomic_numbers, positions} "
                         "(what `mlff-md compile` writes)")
    ap.add_argument("--replicas", type=int, required=True, help="members R the package is compiled for")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--out", required=True, help="the .pt2 file to write")
    ap.add_argument("--capacity", type=int,
                    help="a model of contract v2: the neighbour list's entries per row K "
                         "(the package is of contract pt2-v2)")
    ap.add_argument("--inner-capacities", default="",
                    help="with --capacity: slots per row of each inner list, comma-separated")
    ap.add_argument("--kernels", default="model",
                    choices=["model", "triton", "triton-tf32x3", "triton-nets"],
                    help="with --capacity and a neighbour-list ANI file: compile the file's own "
                         "code (model), or its Python module rebuilt with the angular sum (and "
                         "with triton-nets the networks) by Triton kernels "
                         "(python/ani_nl_triton.py; CUDA only)")
    ap.add_argument("--check-only", action="store_true",
                    help="check an existing --out package against --model, compile nothing")
    a = ap.parse_args(argv)
    if a.replicas < 1:
        raise SystemExit("--replicas: expected 1 or more")
    if not a.out.endswith(".pt2"):
        raise SystemExit("--out: the engine recognises packages by the .pt2 extension")
    device = torch.device(a.device)
    model = torch.jit.load(a.model, map_location=device)
    if a.kernels != "model" and (a.capacity is None or device.type != "cuda"):
        raise SystemExit(f"--kernels {a.kernels}: Triton kernels serve neighbour-list models "
                         "(--capacity) on a CUDA device")
    if a.capacity is not None:
        return main_pairs(a, argv, model, device)
    for name in ("prepare", "forward_prepared"):
        if not hasattr(model, name):
            raise SystemExit(f"{a.model}: has no {name}(): not a static-shape model (e.g. models/ani1x_static.pt)")
    z, x = read_structure(a.structure)
    n, r = len(z), a.replicas
    numbers = torch.tensor(z * r, device=device)
    batch = torch.arange(r, device=device).repeat_interleave(n)
    positions = torch.tensor(x * r, dtype=torch.float32, device=device)
    model.prepare(numbers, batch)
    ef = energy_forces(model)
    if a.check_only:
        return check(a.out, ef, positions, a.model)

    t0 = time.time()
    graph = make_fx(ef, tracing_mode="fake", _allow_non_fake_inputs=True)(positions.clone())
    program = torch.export.export(graph, (positions.clone(),), strict=False)
    metadata = source_metadata(a.model, INTERFACE, z, r)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch._inductor.aoti_compile_and_package(
        program, package_path=a.out,
        inductor_configs=dict(extra_inductor_configs(), **{"aot_inductor.metadata": metadata}))
    print(f"{a.out}: {r} x {n} atoms on {device.type}, compiled in {time.time() - t0:.1f} s, "
          f"{os.path.getsize(a.out) / 1e6:.1f} MB")

    return check_where_safe(a, argv, device, lambda: check(a.out, ef, positions, a.model))


def main_pairs(a, argv, model, device):
    """The pt2-v2 package of a model of contract v2."""
    for name in ("cutoffs", "prepare", "forward_pairs_prepared"):
        if not hasattr(model, name):
            raise SystemExit(f"{a.model}: has no {name}(): not a static-shape model of contract v2 "
                             "(e.g. models/ani1x_nl.pt)")
    cutoffs = [float(c) for c in model.cutoffs()]
    inner = [int(k) for k in a.inner_capacities.split(",") if k.strip()]
    if len(inner) != len(cutoffs) - 1 or a.capacity < 1 or any(k < 1 for k in inner):
        raise SystemExit(f"--capacity/--inner-capacities: expected a positive capacity and one "
                         f"positive capacity per inner cutoff ({cutoffs[1:]} A), got "
                         f"{a.capacity} and {inner}")
    z, x = read_structure(a.structure)
    n, r = len(z), a.replicas
    numbers = torch.tensor(z * r, device=device)
    batch = torch.arange(r, device=device).repeat_interleave(n)
    inputs = pair_inputs(z, x, r, cutoffs, a.capacity, inner, device)
    model.prepare(numbers, batch)
    eg = energy_gradient(model, len(inner))
    if a.kernels != "model":
        eg = rebuilt_with_kernels(a, model, numbers, batch, eg, inputs, len(inner))
    if a.check_only:
        return check_pairs(a.out, eg, inputs, a.model)

    t0 = time.time()
    graph = make_fx(eg, tracing_mode="fake", _allow_non_fake_inputs=True)(*[t.clone() for t in inputs])
    program = torch.export.export(graph, tuple(t.clone() for t in inputs), strict=False)
    metadata = dict(source_metadata(a.model, PAIRS_INTERFACE, z, r),
                    **{"mlff_md.capacity": str(a.capacity),
                       "mlff_md.inner_capacities": ",".join(map(str, inner)),
                       "mlff_md.cutoffs": ",".join(map(repr, cutoffs)),
                       "mlff_md.kernels": a.kernels})
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    configs = dict({"triton.autotune_at_compile_time": False}, **extra_inductor_configs())
    torch._inductor.aoti_compile_and_package(
        program, package_path=a.out, inductor_configs=dict(configs, **{"aot_inductor.metadata": metadata}))
    print(f"{a.out}: {r} x {n} atoms, list rows of {a.capacity} (inner {inner}), kernels "
          f"{a.kernels}, on {device.type}, "
          f"compiled in {time.time() - t0:.1f} s, {os.path.getsize(a.out) / 1e6:.1f} MB")
    return check_where_safe(a, argv, device, lambda: check_pairs(a.out, eg, inputs, a.model))


def rebuilt_with_kernels(a, sm, numbers, batch, eg_file, inputs, n_inner):
    """eg of the file's Python module rebuilt with a.kernels' angular sum
    (python/ani_nl_triton.py, beside this script), after checking it
    against the file's own eg on the example list: energies to 1e-6
    relative, gradients to 1e-5 of their largest value."""
    try:
        import triton  # noqa: F401 (the kernels' compiler: torch's CUDA wheels bring it)
    except ImportError:
        raise SystemExit(f"--kernels {a.kernels}: this Python has no Triton (pip install triton, "
                         "or compile the file's own code: mlff-md compile --kernels model)")
    import ani_nl_triton
    if not ani_nl_triton.is_ani_nl(sm):
        raise SystemExit(f"{a.model}: --kernels {a.kernels} serves the neighbour-list ANI-1x and "
                         "ANI-1ccx files (python/export_ani_nl.py's models with 4 species) only")
    module = ani_nl_triton.from_script(sm, kernels=a.kernels)
    module.prepare(numbers, batch)
    eg = energy_gradient(module, n_inner)
    de, dg, ok = rebuilt_differences(eg, eg_file, inputs)
    print(f"kernels {a.kernels} against {a.model}: energies {de:.2e} relative, "
          f"gradients {dg:.2e} of the largest")
    if not ok:
        raise SystemExit(f"--kernels {a.kernels}: the rebuilt module differs from {a.model}")
    return eg


def rebuilt_differences(eg, eg_file, inputs):
    """(energies' largest relative difference, gradients' largest difference
    over their largest value, both within 1e-6 and 1e-5) of a rebuilt
    module's eg against its file's eg_file on the same inputs."""
    e_ref, g_ref = eg_file(*[t.clone() for t in inputs])
    e, g = eg(*[t.clone() for t in inputs])
    de = ((e - e_ref).abs() / e_ref.abs()).max().item()
    dg = ((g - g_ref).abs().max() / g_ref.abs().max()).item()
    return de, dg, de <= 1e-6 and dg <= 1e-5


def extra_inductor_configs():
    """Inductor settings from MLFF_MD_INDUCTOR_CONFIG (a JSON object)."""
    text = os.environ.get("MLFF_MD_INDUCTOR_CONFIG", "").strip()
    if not text:
        return {}
    try:
        configs = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"MLFF_MD_INDUCTOR_CONFIG: not JSON: {e}")
    if not isinstance(configs, dict):
        raise SystemExit("MLFF_MD_INDUCTOR_CONFIG: expected a JSON object of Inductor settings")
    return configs


def source_metadata(model_path, interface, z, r):
    """The metadata every package carries: its contract, what it was compiled
    for and from."""
    with open(model_path, "rb") as f:
        source_sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "mlff_md.interface": interface,
        "mlff_md.atomic_numbers": ",".join(map(str, z)),
        "mlff_md.replicas": str(r),
        "mlff_md.source_model": os.path.basename(model_path),
        "mlff_md.source_sha256": source_sha,
        "mlff_md.torch": torch.__version__,
    }


def check_where_safe(a, argv, device, check_here):
    """The package's check: here for a CPU package, in a child process for a
    CUDA one."""
    if device.type == "cpu":
        return check_here()
    # A CUDA package is checked in a child process: Python's loader
    # (aoti_load_package) died of SIGSEGV on CUDA packages with torch 2.11 on
    # an H200, in the compiling process and in a fresh one, while the engine's
    # C++ loader ran the same packages. A crash of the checker says nothing
    # about the package, so it is reported and the export stands.
    child = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--check-only"] + argv)
    if child.returncode < 0:
        print(f"warning: not checked here: Python's package loader died of signal {-child.returncode}; "
              "check the package in the engine (benches/gpu_pt2_check.sh compares it with its "
              "TorchScript source)", file=sys.stderr)
        return 0
    return child.returncode


def read_structure(path):
    """Atomic numbers and positions (A) of one molecule: a PDB file, or the
    JSON `mlff-md compile` writes ({"atomic_numbers": [...], "positions":
    [[x, y, z], ...]}), which lets the binary carry this script alone."""
    if path.endswith(".json"):
        with open(path) as f:
            system = json.load(f)
        return [int(v) for v in system["atomic_numbers"]], [[float(c) for c in p] for p in system["positions"]]
    import pdb_box  # python/pdb_box.py, beside this script in the repository
    return pdb_box.read_pdb_atoms(path, SYMBOL_Z)


def check_pairs(path, eg, inputs, source):
    """The pt2-v2 package against eg, the function it was compiled from, on
    the molecule's list and on the same list with rattled vectors."""
    generator = torch.Generator().manual_seed(0)
    vectors = inputs[1]
    noise = 0.02 * torch.randn(vectors.shape, generator=generator).to(vectors.device)
    rattled = [inputs[0], torch.where(inputs[2][..., None], vectors + noise, vectors)] + inputs[2:]
    return compare(path, eg, (inputs, rattled), source, "gradients")


def check(path, ef, positions, source):
    """The package against ef, the function it was compiled from."""
    generator = torch.Generator().manual_seed(0)
    rattled = positions + 0.05 * torch.randn(positions.shape, generator=generator).to(positions.device)
    return compare(path, ef, ([positions], [rattled]), source, "forces")


def compare(path, fn, argument_sets, source, second):
    """The package at `path` against fn on each list of arguments: energies
    to 1e-6 relative, the second output (`second`) to 1e-4 eV/A; 0 or 1."""
    package = torch._inductor.aoti_load_package(path)
    worst_e = worst_2 = 0.0
    for args in argument_sets:
        e_ref, out_ref = fn(*[t.clone() for t in args])
        e, out = package(*[t.clone() for t in args])
        worst_e = max(worst_e, ((e - e_ref).abs() / e_ref.abs()).max().item())
        worst_2 = max(worst_2, (out - out_ref).abs().max().item())
    print(f"against {source}: energies {worst_e:.2e} relative, {second} {worst_2:.2e} eV/A")
    if not (worst_e <= 1e-6 and worst_2 <= 1e-4):
        print("FAIL: the package differs from its TorchScript model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
