#!/usr/bin/env python3
"""Summed GPU kernel time of one MD step, for comparison with the graphed
step time of `mlff-md bench md` (issue 7: "step time within 10 % of the
summed kernel time of the step").

The step is rebuilt here in PyTorch with the same operations as mlff-md's
BAOAB Langevin step (src/integrate/langevin.rs, src/rng.rs): two half kicks,
two half drifts, the counter-based hash RNG with keys read from a device
table, the Ornstein-Uhlenbeck update, and the static model's prepared
forward + backward (float32 model, float64 state). Run eagerly under
torch.profiler; the sum of the CUDA kernels' durations per step is what the
GPU must do however the launches are issued. Also counts kernels per step.

    python3 benches/profile_step.py --model models/ani1x_static.pt \
        --structure systems/peptides/alanine_dipeptide.xyz --replicas 1,64,1024 --out prof.json
"""

import argparse
import json
import math

import torch
from torch.profiler import ProfilerActivity, profile

MASK32 = 0xFFFFFFFF


def read_xyz(path):
    with open(path) as f:
        lines = f.read().splitlines()
    n = int(lines[0])
    sym, pos = [], []
    for line in lines[2:2 + n]:
        p = line.split()
        sym.append(p[0])
        pos.append([float(v) for v in p[1:4]])
    z = {"H": 1, "C": 6, "N": 7, "O": 8}
    mass = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999}
    return [z[s] for s in sym], pos, [mass[s] for s in sym]


def hash32(x):
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


def gaussian(index, keys):
    low = (index & MASK32) ^ keys[0]
    high = index >> 32
    a = hash32(low)
    b = hash32((a ^ high) ^ keys[1])
    c = hash32(b ^ keys[2])
    scale = 1.0 / 4294967296.0
    u1 = (b.double() + 0.5) * scale
    u2 = (c.double() + 0.5) * scale
    return (u1.log() * -2.0).sqrt() * (u2 * (2.0 * math.pi)).cos()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--structure", required=True, help=".xyz file")
    ap.add_argument("--replicas", default="1,64,1024")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out")
    ap.add_argument("--top", type=int, default=0, help="also list the N most expensive kernels")
    a = ap.parse_args()
    dev = torch.device("cuda")
    model = torch.jit.load(a.model, map_location=dev).eval()
    z1, x1, m1 = read_xyz(a.structure)
    n = len(z1)
    dt, gamma, kt = 0.5, 1.0e-3, 300.0 * 8.617333262e-5
    conv = 1.0 / 103.642696562  # eV/(Å amu) -> Å/fs²
    rows = []
    for r in [int(v) for v in a.replicas.split(",")]:
        z = torch.tensor(z1, device=dev).repeat(r)
        batch = torch.arange(r, device=dev).repeat_interleave(n)
        x = torch.tensor(x1, dtype=torch.float64, device=dev).repeat(r, 1)
        inv_m = 1.0 / torch.tensor(m1, dtype=torch.float64, device=dev).repeat(r).unsqueeze(1)
        v = torch.zeros_like(x)
        noise_scale = (kt * inv_m / 103.642696562).sqrt() * math.sqrt(1 - math.exp(-2 * gamma * dt))
        c1 = math.exp(-gamma * dt)
        index = torch.arange(r * n * 3, device=dev).view(r * n, 3)
        table = torch.randint(0, 2**32, (4096, 3), device=dev)
        slot = torch.zeros(1, dtype=torch.long, device=dev)
        model.prepare(z, batch)

        def forces(pos):
            p = pos.detach().float().requires_grad_(True)
            e = model.forward_prepared(p)
            (g,) = torch.autograd.grad(e.sum(), [p])
            return e.detach().double(), -g.double()

        _, f = forces(x)

        def step():
            nonlocal x, v, f
            h = 0.5 * dt
            v += f * inv_m * (h * conv)
            x += v * h
            row = table.index_select(0, slot).view(3)
            slot.add_(1)
            zz = gaussian(index, [row[0], row[1], row[2]])
            v *= c1
            v += zz * noise_scale
            x += v * h
            _, f = forces(x)
            v += f * inv_m * (h * conv)

        for _ in range(10):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(a.steps):
                step()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        total_us = sum(e.device_time for e in kernels)
        by_name = {}
        for e in kernels:
            t, c = by_name.get(e.name, (0.0, 0))
            by_name[e.name] = (t + e.device_time, c + 1)
        top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[: a.top]
        row = {
            "replicas": r,
            "top_kernels": [
                {"name": k[:120], "ms_per_step": v[0] / a.steps / 1e3, "calls_per_step": v[1] / a.steps}
                for k, v in top
            ],
            "atoms": n,
            "kernels_per_step": len(kernels) / a.steps,
            "summed_kernel_ms_per_step": total_us / a.steps / 1e3,
        }
        print(json.dumps({k: v for k, v in row.items() if k != "top_kernels"}), flush=True)
        if a.top:
            print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=a.top,
                                            max_name_column_width=50), flush=True)
        for k in row["top_kernels"]:
            print(f"  {k['ms_per_step']:8.3f} ms  x{k['calls_per_step']:.0f}  {k['name']}", flush=True)
        rows.append(row)
    out = {"device": torch.cuda.get_device_name(dev), "model": a.model, "rows": rows,
           "torch": torch.__version__}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
