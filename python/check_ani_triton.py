"""The neighbour-list ANI rebuilt with Triton kernels (python/ani_nl_triton.py,
what `mlff-md compile --kernels triton|triton-tf32x3|triton-nets` compiles)
against the model file it is rebuilt from; run by `make test`, on the CPU.

    python python/check_ani_triton.py target/release/mlff-md

1. Triton's interpreter (TRITON_INTERPRET=1, in a child process: Triton
   reads it on import) runs the kernels on the CPU: for each kernel set of
   ani_nl_triton.KERNELS, energies and dE/dvectors of alanine dipeptide x 2
   and chignolin x 1 (the engine's capacities for them, and for chignolin
   also 40 inner slots: rows of several kernel blocks) equal the file's
   to 1e-6 relative (energies) and 1e-5 of the largest gradient
   (export_pt2.rebuilt_differences: the check export_pt2.py holds a rebuilt
   module to before compiling it).
   (The interpreter computes tf32x3's products in float32, so this checks
   the kernels' indexing and sums, not the tensor cores' rounding: the GPU
   check in benches/gpu_pt2_pairs.sh does that.)
2. Without the interpreter, the energy-and-gradient function of the
   rebuilt module traces (make_fx, then torch.export, as export_pt2.py
   does) to a graph that calls the kernels' forward and backward ops
   mlffmd::angular_sum and mlffmd::angular_sum_backward (and with
   triton-nets mlffmd::celu_layer and mlffmd::celu_layer_backward of
   python/network_triton.py), which AOTInductor compiles into the package.
3. `mlff-md compile --kernels triton` of a CPU run is refused (exit 2,
   saying the kernels need a CUDA device) before anything is compiled.
"""
import os
import subprocess
import sys
import tempfile

import torch

from check_pt2 import RUN  # a CPU run's config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "ani1x_nl.pt")
# structure, members, list row capacity, inner capacity (what the engine's
# list gives these molecules: bench md's JSON, neighbor_list)
# and a factor on the coordinates
SYSTEMS = [("peptides/alanine_dipeptide.pdb", 2, 22, 19, 1.0),
           ("peptides/chignolin_extended.pdb", 1, 43, 22, 1.0),
           # squeezed to half its size, so that rows fill 40 inner slots
           # (780 pairs, taken in order (0, 1), (0, 2), (1, 2), (0, 3), ...):
           # rows longer than one block of the dot_row kernels
           # (angular_triton.ROW_BLOCK, 512 pairs), whose later blocks hold
           # pairs of occupied slots
           ("peptides/chignolin_extended.pdb", 1, 43, 40, 0.5)]


def inputs_for(sm, path, r, k, ka, scale):
    import export_pt2
    z, x = export_pt2.read_structure(os.path.join(ROOT, "systems", path))
    x = [[scale * c for c in p] for p in x]
    n = len(z)
    cutoffs = [float(c) for c in sm.cutoffs()]
    inputs = export_pt2.pair_inputs(z, x, r, cutoffs, k, [ka], torch.device("cpu"))
    return torch.tensor(z * r), torch.arange(r).repeat_interleave(n), inputs


def interpreted():
    """Part 1 (TRITON_INTERPRET=1 is set by the parent)."""
    import ani_nl_triton
    import export_pt2
    failed = 0
    sm = torch.jit.load(MODEL)
    for path, r, k, ka, scale in SYSTEMS:
        numbers, batch, inputs = inputs_for(sm, path, r, k, ka, scale)
        sm.prepare(numbers, batch)
        eg_file = export_pt2.energy_gradient(sm, 1)
        for name in ani_nl_triton.KERNELS:
            module = ani_nl_triton.from_script(sm, kernels=name)
            module.prepare(numbers, batch)
            de, dg, ok = export_pt2.rebuilt_differences(export_pt2.energy_gradient(module, 1),
                                                        eg_file, inputs)
            failed += not ok
            print(f"{path} x {r} (x {scale}, {ka} inner slots, {int(inputs[-1].sum(1).max())} "
                  f"filled), kernels {name}: energies {de:.2e} relative, gradients "
                  f"{dg:.2e} of the largest {'ok' if ok else 'FAIL'}")
    return failed


def traced():
    """Part 2: the graph export_pt2.py exports calls the kernels' ops."""
    import ani_nl_triton
    import export_pt2
    from torch.fx.experimental.proxy_tensor import make_fx
    sm = torch.jit.load(MODEL)
    numbers, batch, inputs = inputs_for(sm, *SYSTEMS[0])
    failed = 0
    angular = {"mlffmd.angular_sum.default", "mlffmd.angular_sum_backward.default"}
    for name, want in (("triton", angular),
                       ("triton-nets", angular | {"mlffmd.celu_layer.default",
                                                  "mlffmd.celu_layer_backward.default"})):
        module = ani_nl_triton.from_script(sm, kernels=name)
        module.prepare(numbers, batch)
        eg = export_pt2.energy_gradient(module, 1)
        graph = make_fx(eg, tracing_mode="fake",
                        _allow_non_fake_inputs=True)(*[t.clone() for t in inputs])
        program = torch.export.export(graph, tuple(t.clone() for t in inputs), strict=False)
        ops = {str(n.target) for n in program.graph.nodes if "mlffmd" in str(n.target)}
        print(f"kernels {name}: exported graph calls {sorted(ops)} "
              f"{'ok' if ops == want else 'FAIL'}")
        failed += ops != want
    return failed


def refused(binary):
    """Part 3."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "run.toml")
        with open(cfg, "w") as f:
            f.write(RUN.format(root=ROOT, structure="peptides/alanine_dipeptide.pdb",
                               periodic="false", model=MODEL, compiled="auto", members=2,
                               out=os.path.join(tmp, "out")))
        env = dict(os.environ, MLFF_MD_CACHE=os.path.join(tmp, "cache"))
        p = subprocess.run([binary, "compile", cfg, "--kernels", "triton"], env=env,
                           capture_output=True, text=True)
        cache = os.path.join(tmp, "cache")
        packages = os.listdir(cache) if os.path.isdir(cache) else []
        ok = p.returncode == 2 and "CUDA device" in p.stderr and not packages
        print(f"compile --kernels triton on the CPU: exit {p.returncode} "
              f"{'ok' if ok else 'FAIL: ' + p.stderr.strip()}")
        return int(not ok)


def main(argv):
    if argv[:1] == ["--interpreted"]:
        return interpreted()
    if len(argv) != 1:
        raise SystemExit(__doc__)
    env = dict(os.environ, TRITON_INTERPRET="1")
    failed = subprocess.run([sys.executable, __file__, "--interpreted"], env=env).returncode
    failed += traced()
    failed += refused(argv[0])
    if failed:
        print(f"FAIL: {failed} checks", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
