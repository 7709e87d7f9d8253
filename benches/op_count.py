#!/usr/bin/env python3
"""ATen calls per MD step of mlff-md and of the plain-PyTorch reference,
counted on the CPU: where a small system's graphed GPU step loses time.

A captured CUDA graph replays one or more kernels for every ATen call of
the step that does work, and for a small molecule (alanine dipeptide, R up
to ~64) those kernels are so short that their number sets the step time.
This counts them without a GPU: benches/op_trace.cpp (built here with g++
against the virtual environment's torch, into .cache/op_trace/) is
preloaded into each program and records every ATen call; each program runs
STEPS and STEPS + 1 MD steps, and the calls the longer run adds are one
step. A call counts when it, or a call inside it, does work (views,
allocations and no-op conversions do not); calls inside one call count once
(a `where` with a scalar is one, though a GPU fills the scalar first).

    .venv/bin/python benches/op_count.py --engine target/release/mlff-md \\
        --model models/ani1x_nl.pt --structure systems/peptides/alanine_dipeptide.pdb \\
        --replicas 1 --reference --out counts.json

The CPU step differs from the graphed GPU step in one place: the engine's
thermostat noise comes from its counter-based generator at every step here
(`bitwise_*` and friends), while a captured step reads noise drawn ahead
for 64 steps (an index_select and a counter increment per step).
`--integrator verlet` counts the engine's step without the thermostat, so
its share can be set aside.
"""

import argparse
import collections
import difflib
import json
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Calls that never launch a kernel of their own: views, allocations,
# metadata, and conversions that copy only through a call inside them.
NO_WORK = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty",
    "aten::new_empty_strided", "aten::as_strided", "aten::view", "aten::_unsafe_view",
    "aten::_reshape_alias", "aten::reshape", "aten::resize_", "aten::detach", "detach",
    "aten::alias", "aten::select", "aten::slice", "aten::narrow", "aten::unsqueeze",
    "aten::squeeze", "aten::expand", "aten::expand_as", "aten::view_as", "aten::transpose",
    "aten::t", "aten::permute", "aten::unbind", "aten::lift_fresh", "aten::result_type",
    "aten::is_floating_point", "aten::set_", "aten::resolve_conj", "aten::resolve_neg",
    "aten::_has_compatible_shallow_copy_type", "aten::to", "aten::_to_copy",
    "aten::contiguous", "aten::clone", "aten::scalar_tensor", "aten::zeros",
    "aten::zeros_like", "aten::new_zeros", "aten::full", "aten::ones_like",
}


def tracer():
    """Path of op_trace.so, built on first use."""
    out_dir = os.path.join(ROOT, ".cache", "op_trace")
    lib = os.path.join(out_dir, "op_trace.so")
    src = os.path.join(ROOT, "benches", "op_trace.cpp")
    if os.path.exists(lib) and os.path.getmtime(lib) >= os.path.getmtime(src):
        return lib
    os.makedirs(out_dir, exist_ok=True)
    t = os.path.dirname(torch.__file__)
    cmd = ["g++", "-std=c++17", "-O2", "-fPIC", "-shared", src,
           "-I" + os.path.join(t, "include"),
           "-I" + os.path.join(t, "include", "torch", "csrc", "api", "include"),
           "-L" + os.path.join(t, "lib"), "-ltorch_cpu", "-lc10",
           "-Wl,-rpath," + os.path.join(t, "lib"), "-o", lib]
    subprocess.run(cmd, check=True)
    return lib


def traced(cmd, lib, scratch, name):
    """[(depth, name)] of every ATen call of `cmd`."""
    path = os.path.join(scratch, name + ".trace")
    env = dict(os.environ, LD_PRELOAD=lib, OP_TRACE_OUT=path, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr[-2000:]}")
    with open(path) as f:
        return [(int(d), n) for d, n in (line.rstrip("\n").split("\t", 1) for line in f)]


def one_step(short, long):
    """The calls `long` (one step more) adds to `short`."""
    matcher = difflib.SequenceMatcher(None, short, long, autojunk=False)
    added = []
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            added += long[j1:j2]
    return added


def working_calls(calls):
    """Names of the calls that do work, outermost first; autograd's
    backward nodes (and other non-ATen frames) are opened: their calls
    count, not the node."""
    out = []

    def end_of(i):
        j = i + 1
        while j < len(calls) and calls[j][0] > calls[i][0]:
            j += 1
        return j

    def visit(i, stop):
        while i < stop:
            j = end_of(i)
            name = calls[i][1]
            if not name.startswith("aten::"):
                visit(i + 1, j)
            elif any(n not in NO_WORK for _, n in calls[i:j]):
                out.append(name)
            i = j

    visit(0, len(calls))
    return out


def engine_config(args, steps, out_dir):
    integrator = {"langevin": 'kind = "langevin"\ntimestep = 0.5\ntemperature = 300.0\n'
                              'friction = 1.0',
                  "verlet": 'kind = "verlet"\ntimestep = 0.5\ntemperature = 300.0'}[args.integrator]
    return f"""[system]
structure = "{os.path.abspath(args.structure)}"
periodic = {str(args.periodic).lower()}
[model]
path = "{os.path.abspath(args.model)}"
dtype = "float32"
device = "cpu"
[integrator]
{integrator}
[ensemble]
members = {args.replicas}
seed = 1
[run]
steps = {steps}
[output]
directory = "{out_dir}"
trajectory_format = "xtc"
trajectory_interval = 100000
observables_interval = 100000
checkpoint_interval = 100000
"""


def count_engine(args, lib, scratch, tag):
    traces = []
    for steps in (args.steps, args.steps + 1):
        cfg = os.path.join(scratch, f"{tag}_{steps}.toml")
        with open(cfg, "w") as f:
            f.write(engine_config(args, steps, os.path.join(scratch, f"{tag}_{steps}")))
        traces.append(traced([args.engine if tag == "engine" else args.baseline, "run", cfg,
                              "--quiet"], lib, scratch, f"{tag}_{steps}"))
    return working_calls(one_step(*traces))


def count_reference(args, lib, scratch):
    traces = []
    for steps in (args.steps, args.steps + 1):
        traces.append(traced([sys.executable, "benches/reference_md.py", "--model", args.model,
                              "--structure", args.structure, "--replicas", str(args.replicas),
                              "--steps", str(steps), "--warmup", "2", "--device", "cpu",
                              "--graph", "off"], lib, scratch, f"reference_{steps}"))
    return working_calls(one_step(*traces))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="target/release/mlff-md")
    ap.add_argument("--baseline", help="a second mlff-md binary to count beside --engine")
    ap.add_argument("--model", default="models/ani1x_nl.pt")
    ap.add_argument("--structure", default="systems/peptides/alanine_dipeptide.pdb")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--periodic", action="store_true",
                    help="the structure's cell is periodic for the engine too (the reference "
                    "makes any CRYST1 cell periodic)")
    ap.add_argument("--integrator", choices=["langevin", "verlet"], default="langevin",
                    help="the engine's integrator (verlet: the step without thermostat noise)")
    ap.add_argument("--steps", type=int, default=4, help="the shorter run's steps")
    ap.add_argument("--reference", action="store_true", help="count benches/reference_md.py too")
    ap.add_argument("--sequence", action="store_true", help="print each step's calls in order")
    ap.add_argument("--out", help="JSON file for the counts")
    args = ap.parse_args()
    lib = tracer()
    counts = {}
    with tempfile.TemporaryDirectory() as scratch:
        counts["engine"] = count_engine(args, lib, scratch, "engine")
        if args.baseline:
            counts["baseline"] = count_engine(args, lib, scratch, "baseline")
        if args.reference:
            counts["reference"] = count_reference(args, lib, scratch)
    names = list(counts)
    tallies = {k: collections.Counter(v) for k, v in counts.items()}
    print(f"ATen calls that do work, per MD step ({args.structure}, R = {args.replicas}, "
          f"{args.model}, engine {args.integrator}, CPU):")
    print("  " + "  ".join(f"{k}: {len(v)}" for k, v in counts.items()))
    print("\n" + " ".join(f"{k:>9}" for k in names) + "  call")
    for op in sorted(set().union(*tallies.values()),
                     key=lambda o: (-max(t[o] for t in tallies.values()), o)):
        print(" ".join(f"{tallies[k][op]:9d}" for k in names) + "  " + op)
    if args.sequence:
        for k, v in counts.items():
            print(f"\n{k}: " + " | ".join(v))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"structure": args.structure, "replicas": args.replicas,
                       "integrator": args.integrator, "periodic": args.periodic,
                       "model": args.model, "engine": args.engine, "baseline": args.baseline,
                       "torch": torch.__version__,
                       "calls_per_step": {k: len(v) for k, v in counts.items()},
                       "sequence": counts}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
