"""Ramachandran (phi/psi) histogram of the 300 K ensemble of an alanine
dipeptide replica-exchange run (output of benches/gpu_remd_ramachandran.sh).

    python benches/ramachandran.py DIR docs/ramachandran_300K.png > stats.json

DIR holds topology.pdb and temperature_00_*K*.xyz (demultiplexed 300 K
trajectories). phi = C(ACE)-N-CA-C, psi = N-CA-C-N(NME). The first
--skip-ps picoseconds of each trajectory are dropped as equilibration.
"""

import argparse
import glob
import json
import os

import numpy as np


def atom_index(pdb, residue, name):
    for line in open(pdb):
        if line.startswith(("ATOM", "HETATM")) and line[17:20].strip() == residue and line[12:16].strip() == name:
            return int(line[6:11]) - 1
    raise KeyError(f"{residue} {name} not in {pdb}")


def read_xyz(path):
    frames = []
    with open(path) as f:
        while True:
            head = f.readline()
            if not head.strip():
                break
            n = int(head)
            f.readline()
            frames.append([[float(x) for x in f.readline().split()[1:4]] for _ in range(n)])
    return np.array(frames)


def dihedral(x, i, j, k, l):
    b0 = x[:, i] - x[:, j]
    b1 = x[:, k] - x[:, j]
    b2 = x[:, l] - x[:, k]
    b1 /= np.linalg.norm(b1, axis=1)[:, None]
    v = b0 - (b0 * b1).sum(1)[:, None] * b1
    w = b2 - (b2 * b1).sum(1)[:, None] * b1
    x_ = (v * w).sum(1)
    y_ = (np.cross(b1, v) * w).sum(1)
    return np.degrees(np.arctan2(y_, x_))


BASINS = {
    # name: region in degrees
    "C7eq (-140<phi<-40, 20<psi<140)": lambda p, s: (p > -140) & (p < -40) & (s > 20) & (s < 140),
    "C5 / beta (phi<-120, psi>140 or psi<-150)": lambda p, s: (p < -120) & ((s > 140) | (s < -150)),
    "alpha_R (-160<phi<-20, -100<psi<-10)": lambda p, s: (p > -160) & (p < -20) & (s > -100) & (s < -10),
    "phi>0 (C7ax, alpha_L)": lambda p, s: p > 0,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("png")
    ap.add_argument("--skip-ps", type=float, default=2.0)
    ap.add_argument("--frame-fs", type=float, default=25.0)
    a = ap.parse_args()
    pdb = os.path.join(a.dir, "topology.pdb")
    c0 = atom_index(pdb, "ACE", "C")
    n1, ca, c1 = atom_index(pdb, "ALA", "N"), atom_index(pdb, "ALA", "CA"), atom_index(pdb, "ALA", "C")
    n2 = atom_index(pdb, "NME", "N")
    phis, psis = [], []
    files = sorted(glob.glob(os.path.join(a.dir, "temperature_00_*K*.xyz")))
    skip = int(a.skip_ps * 1000 / a.frame_fs)
    for f in files:
        x = read_xyz(f)[skip:]
        phis.append(dihedral(x, c0, n1, ca, c1))
        psis.append(dihedral(x, n1, ca, c1, n2))
    phi, psi = np.concatenate(phis), np.concatenate(psis)
    stats = {
        "trajectories": len(files),
        "frames": int(len(phi)),
        "sampled_ps_at_300K": len(phi) * a.frame_fs / 1000,
        "basin_fractions": {k: float(fn(phi, psi).mean()) for k, fn in BASINS.items()},
        "per_trajectory_alpha_R_frames": [int(BASINS["alpha_R (-160<phi<-20, -100<psi<-10)"](p, s).sum()) for p, s in zip(phis, psis)],
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    from matplotlib.colors import LogNorm

    h = ax.hist2d(phi, psi, bins=72, range=[[-180, 180], [-180, 180]], cmap="viridis", norm=LogNorm())
    fig.colorbar(h[3], ax=ax, label="frames (log scale)")
    for label, (p, s) in {"C7eq": (-83, 75), "C5": (-155, 160), r"$\alpha_R$": (-70, -40), "C7ax": (70, -65)}.items():
        ax.annotate(label, (p, s), color="white", fontsize=9, ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.4, lw=0))
    ax.set_xlabel(r"$\phi$ (deg)")
    ax.set_ylabel(r"$\psi$ (deg)")
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-180, 181, 60))
    ax.set_title(f"Alanine dipeptide, ANI-1x, T-REMD 300 K\n{len(files)} ladders, {stats['sampled_ps_at_300K']:.0f} ps at 300 K (gas phase)", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.png)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
