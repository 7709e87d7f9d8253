#!/usr/bin/env python3
"""Where the dense whole-row neighbour-list build's time goes (issue 12): the
kernels of src/neighbors.rs's refine of whole rows (one molecule x R, rows
of every atom of the member, `NeighborList::refine_whole_rows`) written with
the same ATen operations in the same order, profiled per operation, and
variants of its slow operations timed side by side (graphed), each checked
against the engine's form bit for bit.

    python3 benches/list_build.py --structure systems/peptides/alanine_dipeptide.pdb \\
        --replicas 4096 --inner-capacity 19 --device cuda --out lb.json

Forms of the inner list's running count (the list's compaction):
  int64     inside.cumsum(1) in int64: the engine's until aadcc74
  int32     the same in int32, widened for the scatter
  outer     the scan along the columns of the transpose (src/neighbors.rs's
            running_count): the engine's now
--scan N:W (repeatable) also times the three counts alone on a random
[N, W] mask (a dense grid's or a cell grid's candidates: the pick's count).
The distances are the engine's (d.square().sum(-1)); a form summing the
three components separately was no faster (0.800 against 0.774 ms at
alanine dipeptide x 4096, H100, 2026-12-06).
"""

import argparse
import json
import statistics

import torch

from reference_md import read_structure

CUTOFFS = (5.2, 3.5)


def tables(n_atoms, replicas, device):
    """The engine's constant tables for equal members (Constants::new):
    candidates, valid, whole-row reverse entries."""
    n = n_atoms * replicas
    rows = torch.arange(n, device=device)
    local = rows % n_atoms
    first = rows - local
    cols = torch.arange(n_atoms, device=device).unsqueeze(0)
    cand = first.unsqueeze(1) + cols
    valid = cols != local.unsqueeze(1)
    k = n_atoms
    reverse = torch.where(valid, cand * k + local.unsqueeze(1), torch.full((), n * k, device=device))
    return cand, valid, reverse


def refine(x, cand, valid, reverse, cap, count_form="outer"):
    """The whole-row refine, operation by operation as the engine's."""
    n, k = cand.shape
    xr = x.view(n // k, k, 3)
    d = (xr.unsqueeze(1) - xr.unsqueeze(2)).view(n, k, 3)
    d2 = d.square().sum(-1)
    mask = d2 < CUTOFFS[0] ** 2
    mask = mask & valid
    inside = d2 < CUTOFFS[1] ** 2
    inside = inside & mask
    running = count(inside, count_form)
    column = torch.where(inside, running, torch.zeros((), dtype=torch.int64, device=x.device))
    entries = torch.arange(k, device=x.device).unsqueeze(0).expand(n, k)
    slots = torch.zeros(n, max(k, cap) + 1, dtype=torch.int64, device=x.device)
    slots = slots.scatter_(1, column, entries)
    slots = slots.narrow(1, 1, cap).contiguous()
    found = running.select(1, k - 1)
    inner_mask = torch.arange(cap, device=x.device).unsqueeze(0) < found.unsqueeze(1)
    seen = torch.stack([found], 1).amax(0)
    rows = torch.arange(n, device=x.device).unsqueeze(1)
    neighbors = torch.where(mask, cand, rows)
    rev = torch.where(mask, reverse, torch.full((), n * k, device=x.device))
    return d2, mask, slots, inner_mask, neighbors, rev, seen


def count(mask, form):
    """[N, W] int64 running count along the rows of `mask`."""
    if form == "int64":
        return mask.cumsum(1)
    if form == "int32":
        return mask.cumsum(1, dtype=torch.int32).long()
    return mask.t().contiguous().cumsum(0).t().contiguous()


def graphed_ms(fn, steps, repeats):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            g.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / steps)
    return statistics.median(times)


def profile(fn, calls):
    """Each kernel of one call of `fn` in launch order, with its time (us,
    mean over `calls` calls)."""
    from torch.profiler import ProfilerActivity, profile as prof
    fn()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = sorted((e for e in p.events() if e.device_type.name == "CUDA"),
                     key=lambda e: e.time_range.start)
    per_call = len(kernels) // calls
    return {"kernels_per_call": per_call,
            "kernels": [{"name": e.name[:100], "us": round(sum(
                k.time_range.elapsed_us() for k in kernels[i::per_call]) / calls, 2)}
                for i, e in enumerate(kernels[:per_call])]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--structure", required=True)
    ap.add_argument("--replicas", type=int, default=4096)
    ap.add_argument("--inner-capacity", type=int, default=19)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scan", action="append", default=[], metavar="N:W")
    ap.add_argument("--out", default="list_build.json", help="JSON of every figure (default %(default)s)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    _, pos, _, _ = read_structure(a.structure)
    gen = torch.Generator().manual_seed(1)
    x1 = torch.tensor(pos, dtype=torch.float64)
    x = (x1.repeat(a.replicas, 1) + 0.05 * torch.randn(a.replicas * len(pos), 3, generator=gen,
                                                         dtype=torch.float64)).to(dev)
    cand, valid, reverse = tables(len(pos), a.replicas, dev)
    out = {"structure": a.structure, "replicas": a.replicas, "atoms": x.shape[0],
           "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "forms": {}}
    reference = refine(x, cand, valid, reverse, a.inner_capacity, "int64")
    for form in ("int64", "int32", "outer"):
        got = refine(x, cand, valid, reverse, a.inner_capacity, form)
        row = {"outputs_equal": all(torch.equal(u, v) for u, v in zip(got, reference))}
        if dev.type == "cuda":
            row["graphed_ms"] = graphed_ms(
                lambda: refine(x, cand, valid, reverse, a.inner_capacity, form), a.steps, a.repeats)
        out["forms"][form] = row
        print("refine", form, row)
    out["scans"] = {}
    for spec in a.scan:
        n, w = (int(v) for v in spec.split(":"))
        mask = torch.rand(n, w, generator=gen).lt(0.3).to(dev)
        want = count(mask, "int64")
        for form in ("int64", "int32", "outer"):
            row = {"equal": torch.equal(count(mask, form), want)}
            if dev.type == "cuda":
                row["graphed_ms"] = graphed_ms(lambda: count(mask, form), a.steps, a.repeats)
            out["scans"][f"{spec} {form}"] = row
            print("scan", spec, form, row)
    profiles = ("int64", "outer") if dev.type == "cuda" else ()
    for form in profiles:
        out[f"profile_{form}"] = profile(
            lambda: refine(x, cand, valid, reverse, a.inner_capacity, form), 10)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    for form in profiles:
        print(f"kernels of one refine, count {form}:")
        for k in out[f"profile_{form}"]["kernels"]:
            print(f"{k['us']:9.2f} us  {k['name']}")


if __name__ == "__main__":
    main()
