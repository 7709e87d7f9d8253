"""Compile a static-shape TorchScript model into an AOTInductor package
(.pt2) that returns energies AND forces, for one molecule times R members.

    python python/export_pt2.py --structure systems/peptides/alanine_dipeptide.pdb \\
        --replicas 64 --device cuda --out out/ala2_x64.pt2   [--model models/ani1x_static.pt]

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
    ap.add_argument("--check-only", action="store_true",
                    help="check an existing --out package against --model, compile nothing")
    a = ap.parse_args(argv)
    if a.replicas < 1:
        raise SystemExit("--replicas: expected 1 or more")
    if not a.out.endswith(".pt2"):
        raise SystemExit("--out: the engine recognises packages by the .pt2 extension")
    device = torch.device(a.device)
    model = torch.jit.load(a.model, map_location=device)
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
    with open(a.model, "rb") as f:
        source_sha = hashlib.sha256(f.read()).hexdigest()
    metadata = {
        "mlff_md.interface": INTERFACE,
        "mlff_md.atomic_numbers": ",".join(map(str, z)),
        "mlff_md.replicas": str(r),
        "mlff_md.source_model": os.path.basename(a.model),
        "mlff_md.source_sha256": source_sha,
        "mlff_md.torch": torch.__version__,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch._inductor.aoti_compile_and_package(
        program, package_path=a.out, inductor_configs={"aot_inductor.metadata": metadata})
    print(f"{a.out}: {r} x {n} atoms on {device.type}, compiled in {time.time() - t0:.1f} s, "
          f"{os.path.getsize(a.out) / 1e6:.1f} MB")

    if device.type == "cpu":
        return check(a.out, ef, positions, a.model)
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


def check(path, ef, positions, source):
    """The package against ef, the function it was compiled from."""
    package = torch._inductor.aoti_load_package(path)
    generator = torch.Generator().manual_seed(0)
    rattled = positions + 0.05 * torch.randn(positions.shape, generator=generator).to(positions.device)
    worst_e = worst_f = 0.0
    for p in (positions, rattled):
        e_ref, f_ref = ef(p.clone())
        e, f = package(p.clone())
        worst_e = max(worst_e, ((e - e_ref).abs() / e_ref.abs()).max().item())
        worst_f = max(worst_f, (f - f_ref).abs().max().item())
    print(f"against {source}: energies {worst_e:.2e} relative, forces {worst_f:.2e} eV/A")
    if not (worst_e <= 1e-6 and worst_f <= 1e-4):
        print("FAIL: the package differs from its TorchScript model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
