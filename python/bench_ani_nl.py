"""Time and count the ops of energy + forces: ANI-1x dynamic (ani1x.pt), static-shape
(ani1x_static.pt) and neighbour-list, contract v2 (ani1x_nl.pt).

    python python/bench_ani_nl.py                       # CPU, 1 thread: alanine
                                                        # dipeptide x 1/16/64, chignolin x 1/8
    python python/bench_ani_nl.py --device cuda --cases alanine_dipeptide:64,4096 \\
        --cases chignolin_folded:32 --models nl          # GPU: also CUDA kernels, sync
                                                        # check, CUDA graph replay, memory

Workload: systems/peptides/<system>.xyz replicated S times (atoms contiguous
per structure, each replica jittered by 0.01 A, seed 7; as bench_ani_static.py).
One step = energies + forces of the whole batch:
    dynamic  ani1x.pt         forward(atomic_numbers, positions, batch), autograd
    static   ani1x_static.pt  prepare(...) once, then forward_prepared(positions)
    nl       ani1x_nl.pt      prepare(...) once; per step forward_pairs_prepared(
                              pairs), dE/dvectors by autograd, forces assembled by
                              pair_list.forces_from_vector_grad (index_add)
For nl the pairs are built once, outside the step, by python/pair_list.py (brute
force on the CPU, float64; the engine builds them on the device with a cell
list): its time is printed separately ("pairs") and is not part of the step.
--skin adds entries up to cutoff + skin (as an engine's Verlet skin does).

Op counts come from torch.profiler over one step after warm-up, as in
bench_ani_static.py (kernel ops: a CPU proxy for GPU kernels; on CUDA the
kernels themselves). Only torch is needed (no torchani).
"""

import argparse
import json
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import pair_list
from bench_ani_static import count_ops, sync, time_step, workload

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FILES = {"dynamic": "{}.pt", "static": "{}_static.pt", "nl": "{}_nl.pt"}


def make_step(kind, model, z, x, b, pairs=None):
    if kind == "static":
        model.prepare(z, b)
    if kind == "nl":
        model.prepare(z, b)
        nb, m = pairs["neighbors"], pairs["mask"]
        slots, smask = pairs["inner_slots"], pairs["inner_masks"]

        def step():
            v = pairs["vectors"].detach().clone().requires_grad_(True)
            e = model.forward_pairs_prepared(nb, v, m, slots, smask)
            (g,) = torch.autograd.grad(e.sum(), v)
            return e.detach(), pair_list.forces_from_vector_grad(g, nb, m)

        return step

    def step():
        xx = x.detach().clone().requires_grad_(True)
        e = model.forward_prepared(xx) if kind == "static" else model(z, xx, b)
        (g,) = torch.autograd.grad(e.sum(), xx)
        return e.detach(), -g

    return step


def cuda_checks(model, pairs, reps=50):
    """forward_pairs_prepared + backward (dE/dvectors): no host sync (sync debug
    mode 'error'), bitwise reproducible, CUDA graph capture and replay (time,
    and the replayed result for new vectors equals an eager call), peak memory
    of an eager step."""
    res = {}
    nb, m = pairs["neighbors"], pairs["mask"]
    slots, smask = pairs["inner_slots"], pairs["inner_masks"]
    v = pairs["vectors"].detach().clone().requires_grad_(True)

    def fb(vv):
        e = model.forward_pairs_prepared(nb, vv, m, slots, smask)
        (g,) = torch.autograd.grad(e.sum(), vv)
        return e, g

    for _ in range(5):
        fb(v)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        e1, g1 = fb(v)
        res["sync_debug_error_mode"] = "passed"
    except RuntimeError as exc:
        res["sync_debug_error_mode"] = f"FAILED: {exc}"
        e1, g1 = None, None
    finally:
        torch.cuda.set_sync_debug_mode("default")
    if e1 is None:
        e1, g1 = fb(v)
    e2, g2 = fb(v)
    res["bitwise_reproducible"] = bool(torch.equal(e1, e2) and torch.equal(g1, g2))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fb(v)
    torch.cuda.synchronize()
    res["peak_memory_step_GB"] = (torch.cuda.max_memory_allocated() - base) / 1e9
    try:
        vs = v.detach().clone().requires_grad_(True)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fb(vs)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            e_out, g_out = fb(vs)
        gen = torch.Generator(device=v.device).manual_seed(3)
        v_new = v.detach() + 0.01 * torch.randn(v.shape, device=v.device, generator=gen) \
            * m.unsqueeze(2)
        with torch.no_grad():
            vs.copy_(v_new)
        graph.replay()
        torch.cuda.synchronize()
        e_ref, g_ref = fb(v_new.clone().requires_grad_(True))
        res["cuda_graph_capture"] = "passed"
        res["cuda_graph_equals_eager"] = bool(torch.equal(e_out, e_ref) and
                                              torch.equal(g_out, g_ref))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            graph.replay()
        torch.cuda.synchronize()
        res["cuda_graph_replay_ms"] = 1e3 * (time.perf_counter() - t0) / reps
        del graph
    except Exception as exc:  # report, don't hide
        res["cuda_graph_capture"] = f"FAILED: {type(exc).__name__}: {exc}"
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="ani1x")
    ap.add_argument("--cases", action="append", default=[],
                    help="system:S1,S2,... (systems/peptides/<system>.xyz); repeatable "
                    "(default alanine_dipeptide:1,16,64 and chignolin_folded:1,8)")
    ap.add_argument("--models", default="dynamic,static,nl")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skin", type=float, default=0.0)
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--kernel-table", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    cases = []
    for c in args.cases or ["alanine_dipeptide:1,16,64", "chignolin_folded:1,8"]:
        name, sizes = c.split(":")
        cases += [(name, int(s)) for s in sizes.split(",")]
    kinds = args.models.split(",")
    models = {}
    for k in kinds:
        models[k] = torch.jit.load(os.path.join(ROOT, "models", FILES[k].format(args.model)),
                                   map_location=device)
        models[k].eval()
    results = {"device": str(device), "torch": torch.__version__, "model": args.model,
               "threads": args.threads if device.type == "cpu" else None,
               "skin": args.skin, "runs": []}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    for system, S in cases:
        z, x, b = workload(S, torch.device("cpu"), "peptides/" + system)
        pairs, t_pairs = None, None
        if "nl" in models:
            t0 = time.perf_counter()
            pairs = pair_list.build_pairs(x, b, models["nl"].cutoffs(), skin=args.skin)
            t_pairs = time.perf_counter() - t0
            pairs = {k: ([t.to(device) for t in v] if isinstance(v, list) else v.to(device))
                     for k, v in pairs.items()}
        z, x, b = z.to(device), x.to(device), b.to(device)
        ref = None
        for kind, model in models.items():
            step = make_step(kind, model, z, x, b, pairs)
            e, f = step()
            agree = {}
            if ref is None:
                ref = (kind, e, f)
            else:
                agree = {"vs": ref[0], "max_abs_dE_eV": float((e - ref[1]).abs().max()),
                         "max_abs_dF_rel": float((f.double() - ref[2].double()).abs().max()
                                                 / ref[2].double().abs().max())}
            repeat = args.repeat or (20 if len(z) <= 400 else 5)
            t = time_step(step, device, repeat, warmup=3)
            run = {"system": system, "S": S, "atoms": len(z), "model": kind,
                   "ms_per_step": 1e3 * t}
            run.update(count_ops(step, device))
            run["agreement"] = agree
            if kind == "nl":
                run["K"] = int(pairs["neighbors"].shape[1])
                run["Ka"] = int(pairs["inner_slots"][0].shape[1])
                run["pairs_reference_cpu_ms"] = 1e3 * t_pairs
                if device.type == "cuda":
                    run["cuda"] = cuda_checks(model, pairs)
            results["runs"].append(run)
            extra = f"  ops: {run['aten_ops']} aten, {run['kernel_ops']} kernel-like"
            if "cuda_kernels" in run:
                extra += f", {run['cuda_kernels']} CUDA kernels"
            if run["sync_prone_ops"]:
                extra += f", sync-prone {run['sync_prone_ops']}"
            if kind == "nl":
                extra += (f"; K {run['K']}, Ka {run['Ka']}, pairs (reference, CPU) "
                          f"{run['pairs_reference_cpu_ms']:.0f} ms")
            if agree:
                extra += (f"; vs {agree['vs']}: |dE| {agree['max_abs_dE_eV']:.1e} eV, "
                          f"dF {agree['max_abs_dF_rel']:.1e}")
            print(f"{system} x {S:4d} ({len(z):6d} atoms) {kind:8s} {1e3 * t:9.2f} ms/step"
                  f"{extra}", flush=True)
            if "cuda" in run:
                print(f"      CUDA: {run['cuda']}", flush=True)
            if args.kernel_table and device.type == "cuda":
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    step()
                    sync(device)
                print(prof.key_averages().table(sort_by="cuda_time_total",
                                                row_limit=args.kernel_table,
                                                max_name_column_width=60), flush=True)
            del step
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
