#!/usr/bin/env python3
"""How much faster the neighbour-list ANI's force call gets when compiled,
and with a fused angular sum (issue 12): the model's energies + dE/dvectors
on fixed pair inputs, graphed, in several forms on the same weights.

    PYTHONPATH=python:benches python3 benches/fused_angular.py --model models/ani1x_nl.pt \
        --system systems/peptides/alanine_dipeptide.pdb:4096:22:19 \
        --system systems/peptides/chignolin_extended.pdb:32:43:22 --device cuda --out fa.json

(benches/gpu_fused_angular.sh runs the committed set on a GPU.)
--system PATH:R:K:KA: R copies of the structure, rows of K entries and KA
inner slots (the capacities mlff-md's list gives these systems: its
`bench md` JSON, neighbor_list). The pairs come from python/pair_list.py
for one copy and are tiled, so every copy has the same rows.

Forms (--forms; script is the file the engine runs, the others are the
same module rebuilt in Python from the file's weights and constants, so
every difference is the form's, not the model's):
  script         the TorchScript file: forward_pairs_prepared, one autograd.grad
  eager          the Python module, uncompiled (a check of the rebuild)
  compiled       torch.compile (Inductor) of the same Python code
  fused          compiled, with _angular replaced by a broadcast product summed
                 over the slot pairs, G[i, z, q, a] = sum_t ang[i, t, z]
                 [q_t = q] rad[i, t, a], without the [N, T, 10, 4] tensor u;
                 one graph (Inductor recomputes the factors per output)
  fused_factors  the same with a graph break after the factors ang [N, T, 8]
                 and rad [N, T, 4] (Inductor stores them, then sums)
  fused_product  the same with the break after their product [N, T, 32]
  fused_triton[_VARIANT]  the factors by Inductor, the sum by
                 python/angular_triton.py's kernels (VARIANT: sums, dot,
                 dot_row, dot_row_tf32x3; see there). dot_row_tf32x3 selects
                 each pair's species pair on tensor cores with three TF32
                 products: not an exact copy, about float32's rounding.
  FORM_nets      (fused_*_nets, e.g. fused_triton_dot_row_nets) FORM with the networks
                 by python/network_triton.py (atom-major layers on tensor
                 cores, three TF32 products: about float32's rounding)

Each form's call is captured in a CUDA graph (on CUDA) and replayed; the
median over --repeats timings of --steps replays is reported, with peak
memory and the largest differences of energies and gradients from script
(--profile CALLS adds the kernels of CALLS eager calls). TF32 stays off for
matmuls (the model's 0/1 matmuls and the torchani agreement need full
float32). On a CPU the compiled forms use Inductor's C++ code, and the
Triton forms need TRITON_INTERPRET=1 and run uncompiled (eager).
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch

import ani_nl_triton
import export_ani_nl
import pair_list
from reference_md import read_structure


class FusedAngular(ani_nl_triton.TritonAngular):
    """_angular as one product summed over the slot pairs (module docstring).
    split: "none" (one graph), "factors" or "product" (a graph break that
    makes Inductor store the per-pair factors, or their product, first), or
    "triton[_VARIANT]" (the sum by python/angular_triton.py's kernels, the
    factors by Inductor: the module `mlff-md compile --kernels` compiles)."""

    split = "none"

    def _angular(self, v, d, ent, slots, slot_mask, pair_e, pair_pq):
        if self.split.startswith("triton"):  # variant set with split
            return super()._angular(v, d, ent, slots, slot_mask, pair_e, pair_pq)
        n = slots.size(0)
        ang, rad, pair = self._angular_factors(v, d, ent, slots, slot_mask, pair_e, pair_pq)
        ang = ang.transpose(1, 2)  # [N, T, Z]
        if self.split == "factors":
            # ang and rad become buffers (outputs of the graph before the
            # break), so the sum below reads them instead of recomputing
            # their transcendentals for every output element
            torch._dynamo.graph_break()
        elif self.split == "product":
            # the product ang x rad [N, T, Z x A] becomes the buffer
            w = (ang.unsqueeze(3) * rad.unsqueeze(2)).flatten(2)
            torch._dynamo.graph_break()
            hit = (pair.unsqueeze(2) == torch.arange(self.n_pairs, device=v.device)).to(v.dtype)
            g = (w.unsqueeze(3) * hit.unsqueeze(2)).sum(1)  # [N, Z x A, pairs]
            return g.view(n, ang.size(2), rad.size(2), -1).transpose(2, 3).reshape(n, ang.size(2), -1)
        onehot = (pair.unsqueeze(2) == torch.arange(self.n_pairs, device=v.device)).to(v.dtype)
        g = (ang.unsqueeze(3).unsqueeze(4) * onehot.unsqueeze(2).unsqueeze(4)
             * rad.unsqueeze(2).unsqueeze(3)).sum(1)  # [N, Z, pairs, A]
        return g.reshape(n, g.size(1), -1)


def tiled_inputs(path, replicas, k, ka, model, device):
    z, x, _, cell = read_structure(path)
    if cell is not None:
        raise SystemExit(f"{path}: periodic structures are not tiled by this script")
    n = len(z)
    pairs = pair_list.build_pairs(torch.tensor(x, dtype=torch.float64),
                                  torch.zeros(n, dtype=torch.long), model.cutoffs(),
                                  capacity=k, inner_capacity=ka)
    off = (torch.arange(replicas) * n).view(-1, 1, 1)
    nb = (pairs["neighbors"].unsqueeze(0) + off).reshape(-1, k)
    rep = lambda t: t.unsqueeze(0).expand(replicas, *t.shape).reshape(-1, *t.shape[1:])  # noqa: E731
    return {
        "z": torch.tensor(z).repeat(replicas).to(device),
        "batch": torch.arange(replicas).repeat_interleave(n).to(device),
        "neighbors": nb.to(device), "vectors": rep(pairs["vectors"]).to(device),
        "mask": rep(pairs["mask"]).to(device),
        "slots": rep(pairs["inner_slots"][0]).to(device),
        "smask": rep(pairs["inner_masks"][0]).to(device),
        "atoms": n * replicas, "longest": [int(pairs["mask"].sum(1).max()),
                                           int(pairs["inner_masks"][0].sum(1).max())],
    }


def force_call(fn, inp):
    """energies, dE/dvectors of one call of fn (a forward_pairs_prepared)."""
    vec = inp["vectors"].detach().requires_grad_(True)
    e = fn(inp["neighbors"], vec, inp["mask"], [inp["slots"]], [inp["smask"]])
    (g,) = torch.autograd.grad(e.sum(), vec)
    return e.detach(), g


def time_form(fn, inp, device, steps, repeats, graph):
    """(median ms per call, all timings, energies, gradient, peak MiB)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                e, g = force_call(fn, inp)
        torch.cuda.current_stream().wait_stream(side)
    else:
        e, g = force_call(fn, inp)
    call = lambda: force_call(fn, inp)  # noqa: E731
    if cuda and graph:
        cg = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cg):
            e, g = force_call(fn, inp)
        call = cg.replay
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            call()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3 / steps)
    if not (cuda and graph):
        e, g = force_call(fn, inp)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return statistics.median(times), times, e.clone(), g.clone(), peak


def profile_calls(fn, inp, calls, top):
    """Kernel time per call of `calls` eager calls under torch.profiler:
    forward and backward kernels, and the `top` kernels by time."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            force_call(fn, inp)
        torch.cuda.synchronize()
    kernels = {}
    total = 0.0
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        ms = ev.device_time / 1e3 / calls
        total += ms
        k = kernels.setdefault(ev.name, [0.0, 0])
        k[0] += ms
        k[1] += 1 / calls
    rows = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    return {"kernel_ms_per_call": total,
            "kernels_per_call": sum(v[1] for v in kernels.values()),
            "top_kernels": [{"name": k[:160], "kernel_ms": v[0], "per_call": v[1]}
                            for k, v in rows]}


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/ani1x_nl.pt")
    ap.add_argument("--system", action="append", required=True, metavar="PATH:R:K:KA")
    ap.add_argument("--forms", default="script,eager,compiled,fused")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--graph", choices=["on", "off"], default="on")
    ap.add_argument("--profile", type=int, default=0, metavar="CALLS",
                    help="also profile CALLS eager calls of each form (CUDA)")
    ap.add_argument("--top", type=int, default=15, help="kernels listed with --profile")
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    forms = args.forms.split(",")
    report = {"model": args.model, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor(),
              "torch": torch.__version__, "steps": args.steps, "repeats": args.repeats,
              "graph": args.graph, "rows": []}
    for spec in args.system:
        path, r, k, ka = spec.rsplit(":", 3)
        # a fresh load per system, as a fresh engine process has (TorchScript
        # specialises on the shapes it has seen)
        sm = torch.jit.load(args.model, map_location=device)
        inp = tiled_inputs(path, int(r), int(k), int(ka), sm, device)
        row = {"system": path, "replicas": int(r), "atoms": inp["atoms"], "K": int(k),
               "Ka": int(ka), "longest_rows": inp["longest"], "forms": {}}
        ref = None
        for form in forms:
            # FORM or FORM_nets (the networks by python/network_triton.py)
            base, nets, rest = form.partition("_nets")
            if rest or (nets and not base.startswith("fused")):
                raise SystemExit(f"--forms {form}: expected a fused form with _nets at the end")
            fused = base.startswith("fused")
            if form == "script":
                model = sm
            else:
                cls = FusedAngular if fused else export_ani_nl.ANINeighbourList
                model = ani_nl_triton.from_script(sm, cls)
                if fused:
                    model.nets = bool(nets)
                    model.split = base[len("fused"):].lstrip("_") or "none"
                    if model.split.startswith("triton"):
                        model.variant = model.split[len("triton"):].lstrip("_") or "sums"
            model.prepare(inp["z"], inp["batch"])
            fn = model.forward_pairs_prepared
            t_compile = None
            interpreted = (("triton" in base or nets)
                           and os.environ.get("TRITON_INTERPRET") == "1")
            if (base == "compiled" or fused) and not interpreted:
                torch._dynamo.reset()  # a fresh cache per form and system
                # one graph, except for the forms written with a graph break
                fn = torch.compile(fn, fullgraph=base not in ("fused_factors", "fused_product"),
                                   dynamic=False)
                t0 = time.perf_counter()
                force_call(fn, inp)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t_compile = time.perf_counter() - t0
            ms, times, e, g, peak = time_form(fn, inp, device, args.steps, args.repeats,
                                              args.graph == "on")
            res = {"ms_per_call": ms, "timings_ms": times, "peak_allocated_mib": peak,
                   "compile_seconds": t_compile}
            if args.profile:
                res["profile"] = profile_calls(fn, inp, args.profile, args.top)
            if ref is None:
                ref = (e, g)
                res["reference"] = True
            else:
                res["energy_max_abs_diff_ev"] = float((e - ref[0]).abs().max())
                res["energy_bitwise_equal"] = bool(torch.equal(e, ref[0]))
                res["grad_max_rel_diff"] = rel(g, ref[1])
            row["forms"][form] = res
            print(f"{path} x {r}: {form:9s} {ms:8.3f} ms/call" +
                  (f"  peak {peak:.0f} MiB" if peak else "") +
                  (f"  compile {t_compile:.0f} s" if t_compile else "") +
                  ("" if "reference" in res else
                   f"  dE {res['energy_max_abs_diff_ev']:.2e} eV  dG {res['grad_max_rel_diff']:.2e}"),
                  flush=True)
            del model, fn
            if device.type == "cuda":
                torch.cuda.empty_cache()
        report["rows"].append(row)
        if args.out:  # after every system, so a run cut short keeps its rows
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
