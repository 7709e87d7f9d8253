#!/usr/bin/env python3
"""Plain-PyTorch reference of mlff-md's MD step, replayed from a CUDA graph.

What a strong PyTorch user writes in an afternoon: R replicas in one batch,
float64 state, the engine's BAOAB Langevin step (src/integrate/langevin.rs):

    v += (dt/2) F/m;  x += (dt/2) v;  v = c1 v + c2 sqrt(kT/m) z;  x += (dt/2) v;
    F = -dE/dx (one model call, one backward);  v += (dt/2) F/m

c1 = exp(-gamma dt), c2 = sqrt(1 - c1^2), z ~ N(0, 1) from torch.randn on the
device; positions go to the model as float32. The whole step is captured once
with torch.cuda.graph (which registers the default CUDA generator, so every
replay draws new noise) and replayed --steps times.

Models (TorchScript, models/README.md):
  v1 static (ani1x_static.pt): prepare(z, batch) once, forward_prepared(x32).
  v1 general (ani1x.pt): forward(z, x32, batch), eager only (it syncs).
  v2 neighbour list (ani1x_nl.pt; cutoffs() present): the step builds the
    inputs itself, static shapes, no host sync:
      dense distances inside each replica, [R, n, n] (minimum image for an
      orthorhombic periodic cell: brute force over the box, no cell list),
      torch.topk of the K closest per row (K fixed at start: 1.2 x the longest
      row within cutoffs()[0], + 4, at most n - 1), entries beyond the cutoff
      masked (neighbour i, vector (2 rc, 0, 0)); the row is sorted by
      distance, so the inner slots of cutoffs()[c+1] are its first K_c
      entries (in increasing k, as the contract wants), masked beyond.
      vectors = x_j - x_i + shift in float64 from the state (autograd flows
      to the positions), rounded to float32; forces = -dE/dx by autograd.
      The longest rows seen are tracked on the device and checked at the end
      (a row longer than K would have lost pairs: the run is then reported
      as overflowed).

    python3 benches/reference_md.py --model models/ani1x_static.pt \
        --structure systems/peptides/alanine_dipeptide.pdb --replicas 1,64,1024 \
        --steps 1000 --warmup 20 --device cuda --graph on --out ref.json

--profile STEPS adds, per R, where the GPU's time goes: STEPS more steps run
eagerly under torch.profiler, and the kernels' summed time and count per step
are split by part of the step (pairs, forward, backward, noise, integrator)
and by kernel. The summed kernel time is what the GPU must do however the
launches are issued: set beside the graphed ms/step it says how much of the
step is kernels and how much is gaps between them.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from contextlib import contextmanager

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

# src/units.rs
KB_EV_PER_K = 1.380649e-23 / 1.602176634e-19
AMU_A2_PER_FS2_IN_EV = 1.66053906660e-27 * 1.0e10 / 1.602176634e-19
# chemfiles' masses (what the engine uses)
ELEMENTS = {"H": (1, 1.008), "C": (6, 12.011), "N": (7, 14.007), "O": (8, 15.999)}


def read_structure(path):
    """(atomic numbers, positions [n][3], masses, cell lengths or None) from
    PDB (first MODEL, CRYST1) or XYZ (first frame)."""
    sym, pos, cell = [], [], None
    with open(path) as f:
        lines = f.read().splitlines()
    if path.endswith(".xyz"):
        n = int(lines[0])
        for line in lines[2:2 + n]:
            p = line.split()
            sym.append(p[0])
            pos.append([float(v) for v in p[1:4]])
    else:
        for line in lines:
            if line.startswith("CRYST1"):
                a, b, c, al, be, ga = (float(line[i:i + w]) for i, w in
                                       ((6, 9), (15, 9), (24, 9), (33, 7), (40, 7), (47, 7)))
                if (al, be, ga) != (90.0, 90.0, 90.0):
                    sys.exit(f"{path}: only orthorhombic cells are supported")
                cell = [a, b, c]
            elif line.startswith(("ATOM", "HETATM")):
                el = line[76:78].strip() or line[12:16].strip()[0]
                sym.append(el.capitalize())
                pos.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
            elif line.startswith("ENDMDL"):
                break
    return [ELEMENTS[s][0] for s in sym], pos, [ELEMENTS[s][1] for s in sym], cell


PART = "step part: "


class Parts:
    """The parts of the step for --profile (pairs, forward, backward, noise,
    integrator). While on, each part is a profiler range that ends with a
    device synchronisation, so every kernel the part launched ran inside the
    range, and its GPU start time names its part (the autograd backward
    launches from another thread, so the ranges' own kernel lists would miss
    it). Off (timing, capture): no ranges, no synchronisations."""

    def __init__(self):
        self.on = False

    @contextmanager
    def __call__(self, name):
        if not self.on:
            yield
            return
        with record_function(PART + name):
            yield
            torch.cuda.synchronize()


def profile_steps(step, parts, steps, top):
    """Kernel time and count per step, by part and by kernel, over `steps`
    eager steps (after two unprofiled ones)."""
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    parts.on = True
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                     record_shapes=True) as prof:
            for _ in range(steps):
                step()
    finally:
        parts.on = False
    events = prof.events()
    ranges = [(e.time_range.start, e.time_range.end, e.name[len(PART):]) for e in events
              if e.device_type == DeviceType.CPU and e.name.startswith(PART)]
    by_part, by_kernel = {}, {}
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.name.startswith(PART)]
    # The operator that launched each kernel, with its inputs' shapes (the
    # innermost CPU event the profiler links the kernel to).
    launched_by = {}
    for e in events:
        if e.device_type == DeviceType.CPU and e.kernels:
            op = f"{e.name} {[list(x) for x in e.input_shapes]}" if e.input_shapes else e.name
            for k in e.kernels:
                launched_by.setdefault(k.name, set()).add(op[:200])
    for k in kernels:
        part = next((name for start, end, name in ranges if start <= k.time_range.start <= end), "other")
        for table, key in ((by_part, part), (by_kernel, k.name)):
            us, n = table.get(key, (0.0, 0))
            table[key] = (us + k.device_time, n + 1)

    def per_step(table, limit=None):
        rows = sorted(table.items(), key=lambda kv: -kv[1][0])[:limit]
        return [{"name": name[:120], "kernel_ms": us / steps / 1e3, "kernels": n / steps,
                 **({"launched_by": sorted(launched_by[name])[:4]} if name in launched_by else {})}
                for name, (us, n) in rows]

    return {
        "eager_steps_profiled": steps,
        "kernels_per_step": len(kernels) / steps,
        "summed_kernel_ms_per_step": sum(k.device_time for k in kernels) / steps / 1e3,
        "parts": per_step(by_part),
        "top_kernels": per_step(by_kernel, top),
    }


class Pairs:
    """v2 model inputs built in the step (static shapes, no host sync)."""

    def __init__(self, cutoffs, n, replicas, cell, x0, device):
        self.rc = cutoffs[0]
        self.inner = cutoffs[1:]
        self.n, self.r = n, replicas
        self.cell = None if cell is None else torch.tensor(cell, dtype=torch.float64, device=device)
        self.diag = torch.diag(torch.full((n,), float("inf"), device=device))
        d2 = self.distances(x0)
        counts = [int((d2 < c * c).sum(2).max()) for c in cutoffs]
        self.k = [min(n - 1, int(1.2 * c) + 4) for c in counts]  # K, K_c...
        self.k[1:] = [min(kc, self.k[0]) for kc in self.k[1:]]
        self.longest = torch.zeros(len(cutoffs), dtype=torch.long, device=device)
        rows = torch.arange(replicas * n, device=device)
        self.rows = rows.view(-1, 1)
        self.offset = (torch.arange(replicas, device=device) * n).view(-1, 1, 1)
        self.pad = torch.tensor([2 * self.rc, 0.0, 0.0], dtype=torch.float32, device=device)
        self.slots = [torch.arange(kc, device=device).expand(replicas * n, kc) for kc in self.k[1:]]

    def distances(self, x):
        """Squared distances [R, n, n] (float32, diagonal = inf)."""
        xr = x.detach().view(self.r, self.n, 3).float()
        d = xr.unsqueeze(1) - xr.unsqueeze(2)  # [r, i, j] = x_j - x_i
        if self.cell is not None:
            c = self.cell.float()
            d = d - c * torch.round(d / c)
        d2 = (d * d).sum(3)
        return d2 + self.diag

    def __call__(self, x):
        """x: float64 [R n, 3] requiring grad -> (neighbors, vectors, mask, slots, masks)."""
        d2 = self.distances(x)
        within = torch.stack([(d2 < c * c).sum(2).amax() for c in [self.rc] + self.inner])
        torch.maximum(self.longest, within, out=self.longest)
        d2k, j = torch.topk(d2, self.k[0], dim=2, largest=False, sorted=True)
        j = (j + self.offset).view(self.r * self.n, -1)
        d2k = d2k.view(self.r * self.n, -1)
        mask = d2k < self.rc * self.rc
        vec = x.index_select(0, j.reshape(-1)).view(j.shape[0], -1, 3) - x.unsqueeze(1)
        if self.cell is not None:
            vec = vec - self.cell * torch.round(vec.detach() / self.cell)
        vec = torch.where(mask.unsqueeze(2), vec.float(), self.pad)
        nbr = torch.where(mask, j, self.rows)
        masks = [d2k[:, :kc] < c * c for c, kc in zip(self.inner, self.k[1:])]
        return nbr, vec, mask, self.slots, masks


def run(args, model, kind, z1, x1, m1, cell, replicas, device):
    n = len(z1)
    z = torch.tensor(z1, device=device).repeat(replicas)
    batch = torch.arange(replicas, device=device).repeat_interleave(n)
    x = torch.tensor(x1, dtype=torch.float64, device=device).repeat(replicas, 1)
    m = torch.tensor(m1, dtype=torch.float64, device=device).repeat(replicas).unsqueeze(1)
    dt, h = args.timestep, 0.5 * args.timestep
    kt = KB_EV_PER_K * args.temperature
    c1 = math.exp(-args.friction * 1e-3 * dt)
    sigma = (kt / m / AMU_A2_PER_FS2_IN_EV).sqrt()  # sqrt(kT/m), A/fs
    noise = math.sqrt(1.0 - c1 * c1) * sigma
    kick = h / AMU_A2_PER_FS2_IN_EV / m  # (dt/2)/m, eV/A -> A/fs
    v = torch.randn(x.shape, dtype=torch.float64, device=device) * sigma
    v -= ((v * m).view(replicas, n, 3).sum(1) / m.view(replicas, n, 1).sum(1)).repeat_interleave(n, 0)
    parts = Parts()
    pairs = None
    if kind == "v2":
        pairs = Pairs(model.cutoffs(), n, replicas, cell, x, device)
    if kind in ("v1-static", "v2") and hasattr(model, "prepare"):
        model.prepare(z, batch)

    def energy_forces(pos):
        if kind == "v2":
            with parts("pairs"):
                p = pos.detach().requires_grad_(True)
                nbr, vec, mask, slots, masks = pairs(p)
            with parts("forward"):
                if hasattr(model, "prepare"):
                    e = model.forward_pairs_prepared(nbr, vec, mask, slots, masks)
                else:
                    e = model.forward_pairs(z, batch, nbr, vec, mask, slots, masks)
        else:
            with parts("forward"):
                p = pos.detach().float().requires_grad_(True)
                e = model.forward_prepared(p) if kind == "v1-static" else model(z, p, batch)
        with parts("backward"):
            (g,) = torch.autograd.grad(e.sum(), [p])
            g = g.to(torch.float64)
        return e.detach(), -g

    e, f = energy_forces(x)

    def total_energy():  # mean over replicas of potential + kinetic, eV
        ekin = 0.5 * (m * v * v).view(replicas, n, 3).sum((1, 2)) * AMU_A2_PER_FS2_IN_EV
        return float((e + ekin).mean()), ekin

    e_start, _ = total_energy()

    def step():
        with parts("integrator"):
            v.add_(f * kick)
            x.add_(v * h)
        with parts("noise"):
            v.mul_(c1).add_(torch.randn(x.shape, dtype=torch.float64, device=device) * noise)
        with parts("integrator"):
            x.add_(v * h)
        e_new, f_new = energy_forces(x)
        with parts("integrator"):
            f.copy_(f_new)
            e.copy_(e_new)
            v.add_(f * kick)

    graph = None
    if args.graph == "on":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(args.warmup, 3)):  # TorchScript optimises in the first calls
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        advance = graph.replay
    else:
        for _ in range(args.warmup):
            step()
        advance = step
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        advance()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    e_end, ekin = total_energy()
    temps = 2.0 * ekin / (3 * n * KB_EV_PER_K)
    row = {
        "replicas": replicas,
        "atoms": replicas * n,
        "ms_per_step": 1e3 * wall / args.steps,
        "replica_steps_per_second": replicas * args.steps / wall,
        "aggregate_ns_per_day": replicas * args.steps / wall * dt * 86400 / 1e6,
        "wall_seconds": wall,
        "mean_temperature_k": float(temps.mean()),
        "mean_energy_ev": float(e.mean()),
        "total_energy_start_ev": e_start,  # mean potential + kinetic per replica
        "total_energy_end_ev": e_end,
        "finite": bool(torch.isfinite(x).all() and torch.isfinite(e).all()),
    }
    if pairs is not None:
        longest = pairs.longest.tolist()
        row["capacity"] = pairs.k
        row["longest_rows"] = longest
        row["overflow"] = any(l > k for l, k in zip(longest, pairs.k))
    if device.type == "cuda":
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        if args.profile:  # after everything above: these steps move the state on
            row["profile"] = profile_steps(step, parts, args.profile, args.top)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--structure", required=True, help="PDB (CRYST1 = periodic) or XYZ")
    ap.add_argument("--replicas", default="1,64,1024", help="comma list")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--graph", choices=["on", "off"], default="on")
    ap.add_argument("--timestep", type=float, default=0.5, help="fs")
    ap.add_argument("--temperature", type=float, default=300.0, help="K")
    ap.add_argument("--friction", type=float, default=1.0, help="1/ps")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="CUDA: after each timing, run STEPS eager steps under torch.profiler and "
                         "report per step the kernels' summed time and count in each part of the "
                         "step (pairs, forward, backward, noise, integrator) and the costliest kernels")
    ap.add_argument("--top", type=int, default=12, help="kernels listed with --profile")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.graph == "on" and a.device != "cuda":
        ap.error("--graph on needs --device cuda")
    if a.profile and a.device != "cuda":
        ap.error("--profile times CUDA kernels: it needs --device cuda")
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    model = torch.jit.load(a.model, map_location=device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(model, "cutoffs"):
        kind = "v2"
    elif hasattr(model, "forward_prepared"):
        kind = "v1-static"
    else:
        kind = "v1"
    if kind == "v1" and a.graph == "on":
        ap.error("a v1 model without prepare/forward_prepared syncs with the host: use --graph off")
    z1, x1, m1, cell = read_structure(a.structure)
    if cell is not None and kind != "v2":
        print(f"warning: {a.structure} has a cell; the {kind} model sees isolated copies", file=sys.stderr)
        cell = None
    with open(a.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    result = {
        "engine": "plain PyTorch reference (benches/reference_md.py)",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "model": a.model,
        "model_sha256": sha,
        "model_kind": kind,
        "structure": a.structure,
        "atoms_per_replica": len(z1),
        "cell": cell,
        "graph": a.graph,
        "steps": a.steps,
        "warmup": a.warmup,
        "timestep_fs": a.timestep,
        "temperature_k": a.temperature,
        "friction_per_ps": a.friction,
        "integrator": "BAOAB Langevin, float64 state, float32 model positions, torch.randn noise",
        "runs": [],
    }
    for r in [int(s) for s in a.replicas.split(",")]:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            row = run(a, model, kind, z1, x1, m1, cell, r, device)
        except torch.OutOfMemoryError as exc:
            row = {"replicas": r, "error": f"out of memory: {str(exc).splitlines()[0]}"}
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
        if a.out:  # after every R: a run killed by a time limit keeps what it finished
            with open(a.out, "w") as f:
                f.write(json.dumps(result, indent=2) + "\n")
    if not a.out:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
