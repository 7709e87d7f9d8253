"""Time and count the ops of energy + forces for the dynamic and the static ANI models.

    python python/bench_ani_static.py                    # CPU, 1 and 2 threads
    python python/bench_ani_static.py --device cuda      # GPU: also CUDA kernels,
                                                         # sync check, CUDA graph replay

Workload: alanine dipeptide (22 atoms) replicated S = 1, 16, 64 times (atoms
contiguous per structure, each replica's positions jittered by 0.01 A so the
structures differ). One step = energies + forces (-dE/dx by autograd) of the
whole batch:
    dynamic  models/<name>.pt         forward(atomic_numbers, positions, batch)
    static   models/<name>_static.pt  prepare(...) once, then forward_prepared(positions)

Op counts come from torch.profiler over one step after warm-up (TorchScript's
profiling executor optimises the graph in the first runs):
    aten ops      every aten:: event, nested ones included
    kernel ops    aten ops that launch work: the innermost non-view ops, plus
                  matmuls / reductions / index ops that compute themselves;
                  views, allocations and 0-dim scalar conversions are not
                  counted. A CPU proxy for the number of GPU kernels.
    cuda kernels  (--device cuda) kernels the profiler saw on the GPU
Only torch is needed (no torchani).
"""

import argparse
import collections
import json
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from check_ani import read_xyz

VIEW_OPS = {
    "aten::as_strided", "aten::view", "aten::_unsafe_view", "aten::_reshape_alias",
    "aten::detach", "aten::resolve_conj", "aten::resolve_neg", "aten::result_type",
    "aten::empty", "aten::empty_strided", "aten::to", "aten::expand", "aten::t",
    "aten::transpose", "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::slice",
    "aten::select", "aten::narrow", "aten::reshape", "aten::alias", "aten::lift_fresh",
    "aten::empty_like", "aten::unbind", "aten::split", "aten::split_with_sizes",
    "aten::view_as", "aten::contiguous", "aten::_to_copy", "aten::expand_as",
    "aten::resize_", "aten::flatten", "aten::chunk", "aten::unflatten", "aten::clone",
    "aten::new_empty", "aten::new_empty_strided", "aten::matmul", "aten::linear",
    "aten::stack", "aten::index_put", "aten::zeros", "aten::zeros_like", "aten::ones_like",
    "aten::new_zeros", "aten::full", "aten::full_like", "aten::celu", "aten::reshape_as",
    "aten::movedim", "aten::_unsafe_split", "aten::numel", "aten::size", "aten::stride",
}
# ops that do their own work even when they call other (non-view) aten ops
SELF_OPS = {
    "aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::sum", "aten::index_select",
    "aten::index_add_", "aten::index", "aten::index_put_", "aten::_index_put_impl_",
    "aten::cumsum", "aten::max", "aten::min", "aten::sort", "aten::argsort", "aten::bincount",
    "aten::nonzero", "aten::unique_consecutive", "aten::_unique2", "aten::gather",
    "aten::masked_select", "aten::linalg_vector_norm", "aten::norm", "aten::cat",
    "aten::any", "aten::all", "aten::_local_scalar_dense", "aten::repeat_interleave",
    "aten::div", "aten::mul", "aten::add", "aten::sub", "aten::where", "aten::clamp",
}
SYNC_OPS = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::bincount",
            "aten::unique_consecutive", "aten::_unique2", "aten::masked_select"}


def kernel_ops(events):
    out = []
    for e in events:
        name = e.name
        if not name.startswith("aten::") or name in VIEW_OPS:
            continue
        kids = [c for c in e.cpu_children if c.name.startswith("aten::") and c.name not in VIEW_OPS]
        if kids and name not in SELF_OPS:
            continue
        shapes = [s for s in (e.input_shapes or []) if isinstance(s, list)]
        if name == "aten::copy_" and shapes and all(len(s) == 0 for s in shapes):
            continue  # 0-dim scalar conversion (a kernel argument on a GPU)
        if name == "aten::fill_" and e.cpu_parent is not None and e.cpu_parent.name == "aten::sum":
            continue  # CPU reduction initialisation
        out.append(e)
    return out


def workload(n_struct, device, system="peptides/alanine_dipeptide"):
    z0, x0 = read_xyz(system)
    g = torch.Generator().manual_seed(7)
    z = z0.repeat(n_struct)
    x = x0.repeat(n_struct, 1) + 0.01 * torch.randn(n_struct * len(z0), 3, generator=g)
    b = torch.arange(n_struct).repeat_interleave(len(z0))
    return z.to(device), x.to(device), b.to(device)


def make_step(kind, model, z, x, b):
    if kind == "static":
        model.prepare(z, b)

    def step():
        xx = x.detach().clone().requires_grad_(True)
        e = model.forward_prepared(xx) if kind == "static" else model(z, xx, b)
        (g,) = torch.autograd.grad(e.sum(), xx)
        return e.detach(), -g

    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_step(step, device, repeat, warmup=5):
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_ops(step, device):
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        step()
        sync(device)
    ev = list(prof.events())
    aten = [e for e in ev if e.name.startswith("aten::")]
    kern = kernel_ops(ev)
    out = {
        "aten_ops": len(aten),
        "kernel_ops": len(kern),
        "sync_prone_ops": dict(collections.Counter(e.name for e in ev if e.name in SYNC_OPS)),
        "kernel_op_names": dict(collections.Counter(e.name for e in kern).most_common()),
    }
    if device.type == "cuda":
        gpu = [e for e in ev if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.startswith(("Memcpy", "Memset", "cudaMemcpy", "cudaMemset"))]
        mem = [e for e in ev if e.device_type == torch.autograd.DeviceType.CUDA
               and e.name.startswith(("Memcpy", "Memset"))]
        out["cuda_kernels"] = len(gpu)
        out["cuda_memcpy_memset"] = len(mem)
    return out


def cuda_checks(model, z, x, b):
    """forward_prepared + backward: no host sync (sync debug mode 'error'),
    bitwise reproducible, and captured in a CUDA graph that replays the same
    energies and forces for new positions."""
    res = {}
    model.prepare(z, b)
    xs = x.detach().clone().requires_grad_(True)
    for _ in range(5):  # TorchScript profiling runs, fusion compiles
        e = model.forward_prepared(xs)
        torch.autograd.grad(e.sum(), xs)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        e = model.forward_prepared(xs)
        (g,) = torch.autograd.grad(e.sum(), xs)
        res["sync_debug_error_mode"] = "passed"
    except RuntimeError as exc:
        res["sync_debug_error_mode"] = f"FAILED: {exc}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    e1, g1 = e.detach().clone(), g.clone()
    e2 = model.forward_prepared(xs)
    (g2,) = torch.autograd.grad(e2.sum(), xs)
    res["bitwise_reproducible"] = bool(torch.equal(e1, e2.detach()) and torch.equal(g1, g2))
    # CUDA graph capture of energies + forces
    try:
        x_static = x.detach().clone().requires_grad_(True)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                e = model.forward_prepared(x_static)
                torch.autograd.grad(e.sum(), x_static)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            e_out = model.forward_prepared(x_static)
            (g_out,) = torch.autograd.grad(e_out.sum(), x_static)
        x_new = x + 0.05 * torch.randn(x.shape, device=x.device,
                                      generator=torch.Generator(x.device).manual_seed(3))
        with torch.no_grad():
            x_static.copy_(x_new)
        graph.replay()
        torch.cuda.synchronize()
        xr = x_new.detach().clone().requires_grad_(True)
        e_ref = model.forward_prepared(xr)
        (g_ref,) = torch.autograd.grad(e_ref.sum(), xr)
        res["cuda_graph_capture"] = "passed"
        res["cuda_graph_max_abs_dE_eV"] = float((e_out - e_ref).abs().max())
        res["cuda_graph_max_abs_dF"] = float((g_out - g_ref).abs().max())
        torch.cuda.synchronize()
        reps = 50
        t0 = time.perf_counter()
        for _ in range(reps):
            graph.replay()
        torch.cuda.synchronize()
        res["cuda_graph_replay_ms"] = 1e3 * (time.perf_counter() - t0) / reps
    except Exception as exc:  # report, don't hide
        res["cuda_graph_capture"] = f"FAILED: {type(exc).__name__}: {exc}"
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="ani1x")
    ap.add_argument("--sizes", default="1,16,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=0, help="timed steps (default: by size)")
    ap.add_argument("--system", default="peptides/alanine_dipeptide",
                    help="systems/<this>.xyz, replicated S times")
    ap.add_argument("--models", default="dynamic,static")
    ap.add_argument("--kernel-table", type=int, default=0,
                    help="print the N most expensive GPU kernels of each static step")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [0]
    files = {"dynamic": f"{args.model}.pt", "static": f"{args.model}_static.pt"}
    models = {k: torch.jit.load(os.path.join(ROOT, "models", files[k]), map_location=device)
              for k in args.models.split(",")}
    for m in models.values():
        m.eval()
    results = {"device": str(device), "torch": torch.__version__, "model": args.model,
               "system": args.system, "runs": []}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    for S in sizes:
        z, x, b = workload(S, device, args.system)
        steps = {k: make_step(k, m, z, x, b) for k, m in models.items()}
        agree = {}
        if len(steps) == 2:
            e_dyn, f_dyn = steps["dynamic"]()
            e_st, f_st = steps["static"]()
            agree = {
                "max_abs_dE_eV": float((e_dyn - e_st).abs().max()),
                "force_rel_diff": float((f_dyn - f_st).double().norm() / f_dyn.double().norm()),
            }
        for nt in threads:
            if nt:
                torch.set_num_threads(nt)
            for kind, step in steps.items():
                repeat = args.repeat or (20 if S <= 16 else 8)
                t = time_step(step, device, repeat)
                run = {"S": S, "atoms": len(z), "threads": nt or None, "model": kind,
                       "ms_per_step": 1e3 * t}
                if nt == threads[0]:
                    run.update(count_ops(step, device))
                    run["static_vs_dynamic"] = agree
                results["runs"].append(run)
                extra = ""
                if "kernel_ops" in run:
                    extra = f"  ops: {run['aten_ops']} aten, {run['kernel_ops']} kernel-like"
                    if "cuda_kernels" in run:
                        extra += f", {run['cuda_kernels']} CUDA kernels"
                    if run["sync_prone_ops"]:
                        extra += f", sync-prone {run['sync_prone_ops']}"
                print(f"S={S:3d} ({len(z):5d} atoms) {kind:8s} "
                      f"{'threads=' + str(nt) if nt else str(device):10s} "
                      f"{1e3 * t:9.2f} ms/step{extra}", flush=True)
        if agree:
            print(f"      static vs dynamic: max |dE| {agree['max_abs_dE_eV']:.1e} eV, "
                  f"force rel diff {agree['force_rel_diff']:.1e}", flush=True)
        if args.kernel_table and "static" in steps and device.type == "cuda":
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                steps["static"]()
                sync(device)
            print(prof.key_averages().table(sort_by="cuda_time_total",
                                            row_limit=args.kernel_table,
                                            max_name_column_width=60), flush=True)
        if device.type == "cuda" and "static" in models:
            chk = cuda_checks(models["static"], z, x, b)
            results.setdefault("cuda_checks", {})[str(S)] = chk
            print(f"      static CUDA checks: {chk}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
