#!/usr/bin/env python3
"""O-O radial distribution function of a periodic water run (mlff-md XYZ
trajectories), from the frames after an equilibration time.

    python3 benches/analyze_water.py OUT_DIR --cell 31.079 --skip-ps 1.0 \
        --timestep-fs 0.5 --interval 200 --out water_gofr.json

Reads OUT_DIR/member_*.xyz (one file per member, frames every --interval
steps, the first at step 0), takes every frame at or after --skip-ps, and
histograms all O-O distances under the minimum image of the cubic cell (up
to half the cell), normalised by the ideal-gas count at the same density.
Reports the first peak (position, height), the first minimum after it and
the coordination number (O within that minimum), with the spread over
members as a standard error. Experiment (X-ray, 298 K; Skinner et al.,
J. Chem. Phys. 138, 074506 (2013)): first peak 2.80 A, height 2.57.
"""

import argparse
import glob
import json
import math
import os

import numpy as np


def frames(path):
    """Yield (symbols, positions [n, 3]) of every frame of an XYZ file."""
    with open(path) as f:
        while True:
            head = f.readline()
            if not head.strip():
                return
            n = int(head)
            f.readline()
            rows = [f.readline().split() for _ in range(n)]
            yield [r[0] for r in rows], np.array([[float(v) for v in r[1:4]] for r in rows])


def gofr(oxygens, cell, r_max, bins):
    """Histogram of O-O distances (minimum image, cubic cell) of one frame."""
    d = oxygens[:, None, :] - oxygens[None, :, :]
    d -= cell * np.round(d / cell)
    r = np.sqrt((d * d).sum(-1))[np.triu_indices(len(oxygens), 1)]
    h, _ = np.histogram(r, bins=bins, range=(0.0, r_max))
    return h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--cell", type=float, required=True, help="cubic cell edge (A)")
    ap.add_argument("--skip-ps", type=float, default=1.0)
    ap.add_argument("--timestep-fs", type=float, default=0.5)
    ap.add_argument("--interval", type=int, required=True, help="steps between frames")
    ap.add_argument("--bins", type=int, default=200)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    r_max = a.cell / 2
    edges = np.linspace(0.0, r_max, a.bins + 1)
    shell = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    centres = 0.5 * (edges[1:] + edges[:-1])
    per_member = []
    used = 0
    for path in sorted(glob.glob(os.path.join(a.run, "member_*.xyz"))):
        total, count = np.zeros(a.bins), 0
        for k, (sym, x) in enumerate(frames(path)):
            if k * a.interval * a.timestep_fs < a.skip_ps * 1000.0:
                continue
            o = x[[s == "O" for s in sym]]
            n = len(o)
            total += gofr(o, a.cell, r_max, a.bins) / (0.5 * n * (n - 1) / a.cell ** 3 * shell)
            count += 1
        if count:
            per_member.append(total / count)
            used += count
    if not per_member:
        raise SystemExit(f"no frames after {a.skip_ps} ps in {a.run}")
    g = np.array(per_member)

    def features(curve):
        peak = int(np.argmax(curve * (centres > 2.0)))
        after = peak + int(np.argmin(curve[peak:peak + int(1.5 / (r_max / a.bins))]))
        rho = n / a.cell ** 3
        dr = r_max / a.bins
        coord = float((4 * math.pi * rho * curve[:after + 1] * centres[:after + 1] ** 2 * dr).sum())
        return centres[peak], curve[peak], centres[after], coord

    each = np.array([features(c) for c in g])
    mean = features(g.mean(0))
    se = each.std(0, ddof=1) / math.sqrt(len(each)) if len(each) > 1 else np.zeros(4)
    result = {
        "run": a.run,
        "members": len(per_member),
        "frames": used,
        "skip_ps": a.skip_ps,
        "cell_angstrom": a.cell,
        "first_peak_angstrom": [mean[0], se[0]],
        "first_peak_height": [mean[1], se[1]],
        "first_minimum_angstrom": [mean[2], se[2]],
        "coordination_number": [mean[3], se[3]],
        "experiment_skinner_2013": {"first_peak_angstrom": 2.80, "first_peak_height": 2.57},
        "r_angstrom": centres.tolist(),
        "g_oo": g.mean(0).tolist(),
    }
    json.dump(result, open(a.out, "w"), indent=1)
    print(f"O-O g(r), {len(per_member)} members, {used} frames: first peak "
          f"{mean[0]:.3f} +- {se[0]:.3f} A, height {mean[1]:.3f} +- {se[1]:.3f}; first minimum "
          f"{mean[2]:.2f} A; coordination {mean[3]:.2f} +- {se[3]:.2f}")


if __name__ == "__main__":
    main()
