#!/usr/bin/env python3
"""Predict the BAOAB on-step kinetic-temperature bias of alanine dipeptide
(ANI-1x) in the harmonic approximation.  CPU only, ~1 minute on 2 cores.

BAOAB (Leimkuhler-Matthews) step:  B(h/2) A(h/2) O(h) A(h/2) [force] B(h/2).
For a 1-D harmonic oscillator (mass 1, frequency w, step h, w h < 2) the
stationary distribution has, for every friction gamma > 0,
    <q^2> = kT / w^2                      (exact)
    <p^2> = kT (1 - (w h / 2)^2)           (on-step, after the final B kick)
Reason: the state right after O is distributed as the Gibbs measure of the
shadow Hamiltonian of the position-Verlet map A B A,
    H~ = p^2/2 + w^2 x^2 / (2 (1 - (w h/2)^2)),
which ABA conserves exactly and O leaves invariant (p ~ N(0, kT), independent
of x).  Pushing that through A(h/2) B(h/2) gives q ~ N(0, kT/w^2) and
p_on = (1 - (wh/2)^2) p - (h/2) w^2 x, whose variance is kT (1 - (wh/2)^2).
Part 1 checks this by (a) the exact stationary covariance of the linear
BAOAB map (discrete Lyapunov equation) and (b) a direct numpy simulation.

Part 2: minimise alanine dipeptide with the model, take a finite-difference
Hessian of the autograd forces, mass-weight, and predict
    <T_on>/T = (1/3N) sum_k (1 - (w_k dt / 2)^2)        (zero modes: 1)
with 3N = 66 counted degrees of freedom (no COM removal, no constraints).

Usage:  .venv/bin/python benches/predict_baoab_bias.py [--conformers] [> result.json]
(--conformers also minimises the c7eq / c5 / alphaR start structures: +~1 min)
Prints progress to stderr and one JSON object to stdout.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "ani1x_static.pt"
XYZ = ROOT / "systems" / "peptides" / "alanine_dipeptide.xyz"
EXTRA_XYZ = ["alanine_dipeptide_c7eq.xyz", "alanine_dipeptide_c5.xyz",
             "alanine_dipeptide_alphaR.xyz"]

MASS = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999}
ZNUM = {"H": 1, "C": 6, "N": 7, "O": 8}
EV_A2_AMU_TO_FS2 = 9.6485332e-3      # 1 eV/(Å^2 amu) in 1/fs^2
C_CM_PER_FS = 2.99792458e-5          # speed of light, cm/fs
T_REF = 300.0
DTS = [0.5, 0.25]                    # fs
OBSERVED = {"dt_fs": 0.5, "T_on_step_K": 297.91, "sem_K": 0.81}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Part 1: harmonic-oscillator check of the BAOAB on-step <p^2>
# --------------------------------------------------------------------------
def baoab_matrices(w, h, gamma, kT=1.0):
    """Linear BAOAB map z' = A z + b xi for z = (q, p), mass 1."""
    def B(t):
        return np.array([[1.0, 0.0], [-t * w * w, 1.0]])

    def Adrift(t):
        return np.array([[1.0, t], [0.0, 1.0]])

    c = math.exp(-gamma * h)
    O = np.array([[1.0, 0.0], [0.0, c]])
    s = math.sqrt(kT * (1.0 - c * c))
    post = B(h / 2) @ Adrift(h / 2)           # applied after O
    A = post @ O @ Adrift(h / 2) @ B(h / 2)
    b = post @ np.array([0.0, s])
    return A, b


def baoab_exact_cov(w, h, gamma, kT=1.0):
    """Stationary covariance: S = A S A^T + b b^T (solved as a 4x4 system)."""
    A, b = baoab_matrices(w, h, gamma, kT)
    K = np.eye(4) - np.kron(A, A)
    S = np.linalg.solve(K, np.outer(b, b).ravel()).reshape(2, 2)
    return S


def baoab_simulate(w, h, gamma, n_osc, n_steps, n_burn, kT=1.0, seed=0):
    """Direct simulation, n_osc independent oscillators in parallel."""
    rng = np.random.default_rng(seed)
    q = rng.normal(0.0, math.sqrt(kT) / w, n_osc)
    p = rng.normal(0.0, math.sqrt(kT), n_osc)
    c = math.exp(-gamma * h)
    s = math.sqrt(kT * (1.0 - c * c))
    f = -w * w * q
    sq = np.zeros(n_osc)
    sp = np.zeros(n_osc)
    for step in range(n_steps + n_burn):
        p += 0.5 * h * f                     # B
        q += 0.5 * h * p                     # A
        p = c * p + s * rng.standard_normal(n_osc)   # O
        q += 0.5 * h * p                     # A
        f = -w * w * q                       # force
        p += 0.5 * h * f                     # B
        if step >= n_burn:
            sq += q * q
            sp += p * p
    # per-oscillator time averages -> mean and standard error across oscillators
    mq = sq / n_steps * w * w / kT
    mp = sp / n_steps / kT
    return (float(mq.mean()), float(mq.std(ddof=1) / math.sqrt(n_osc)),
            float(mp.mean()), float(mp.std(ddof=1) / math.sqrt(n_osc)))


def harmonic_check():
    out = {"convention": "mass 1, kT 1, h = 0.5 fs; ratios are <w^2 q^2>/kT and <p^2>/kT",
           "cases": []}
    h = 0.5
    for wh in (0.3, 1.0, 1.8):
        w = wh / h
        for gamma in (0.001, 0.1, 1.0):
            S = baoab_exact_cov(w, h, gamma)
            case = {"w_h": wh, "gamma_per_fs": gamma,
                    "formula_p2": 1.0 - (wh / 2) ** 2,
                    "exact_p2": float(S[1, 1]),
                    "exact_w2q2": float(S[0, 0] * w * w),
                    "exact_qp": float(S[0, 1])}
            out["cases"].append(case)
    # direct simulation for w h = 0.3 (the brief's case), two frictions, many
    # independent oscillators in parallel (numpy-vectorised).  They start from
    # the continuous-time Boltzmann distribution (q ~ N(0, kT/w^2), p ~ N(0, kT)),
    # not from the BAOAB one, and burn in for >= 2.5 / gamma.  At gamma = 0.001/fs
    # the energy decorrelates only over ~1/gamma = 2000 steps, so it needs
    # 6.4e8 samples (~25 s) to resolve 1 - (wh/2)^2 = 0.9775 from 1 by ~9 sigma.
    sims = []
    wh = 0.3
    w = wh / h
    for gamma, n_osc, n_steps, n_burn in ((0.001, 16000, 40000, 5000),
                                          (0.1, 4000, 25000, 1000)):
        t0 = time.time()
        mq, eq, mp, ep = baoab_simulate(w, h, gamma, n_osc, n_steps, n_burn,
                                        seed=int(gamma * 1e4) + 1)
        sims.append({"w_h": wh, "gamma_per_fs": gamma, "n_osc": n_osc,
                     "n_steps": n_steps, "n_burn": n_burn,
                     "sim_w2q2": mq, "sim_w2q2_sem": eq,
                     "sim_p2": mp, "sim_p2_sem": ep,
                     "formula_p2": 1.0 - (wh / 2) ** 2,
                     "z_score_p2": (mp - (1.0 - (wh / 2) ** 2)) / ep,
                     "seconds": round(time.time() - t0, 1)})
        log(f"  HO sim gamma={gamma}: <p^2>/kT = {mp:.5f} +- {ep:.5f} "
            f"(formula {1 - (wh / 2) ** 2:.5f}), <w^2q^2>/kT = {mq:.5f} +- {eq:.5f}")
    out["simulation"] = sims
    worst = max(abs(c["exact_p2"] - c["formula_p2"]) for c in out["cases"])
    out["max_abs_dev_exact_vs_formula"] = worst
    out["formula_confirmed"] = bool(worst < 1e-10 and all(abs(s["z_score_p2"]) < 4 for s in sims))
    return out


# --------------------------------------------------------------------------
# Part 2: alanine dipeptide
# --------------------------------------------------------------------------
def read_xyz(path):
    lines = Path(path).read_text().split("\n")
    n = int(lines[0].split()[0])
    syms, pos = [], []
    for ln in lines[2:2 + n]:
        t = ln.split()
        syms.append(t[0])
        pos.append([float(x) for x in t[1:4]])
    return syms, np.array(pos, dtype=np.float64)


class Pot:
    def __init__(self, model, syms):
        self.model = model
        self.n = len(syms)
        self.z = torch.tensor([ZNUM[s] for s in syms], dtype=torch.int64)
        self.n_calls = 0

    def energy_forces(self, pos):
        """pos: float64 [..., N, 3] numpy (batched if 3-D) -> (E [S], F [S, N, 3])."""
        x = torch.tensor(pos, dtype=torch.float64)
        single = x.dim() == 2
        if single:
            x = x.unsqueeze(0)
        S = x.shape[0]
        x = x.reshape(S * self.n, 3).requires_grad_(True)
        z = self.z.repeat(S)
        batch = torch.arange(S, dtype=torch.int64).repeat_interleave(self.n)
        e = self.model(z, x, batch)
        (g,) = torch.autograd.grad(e.sum(), x)
        self.n_calls += S
        e = e.detach().numpy()
        f = (-g).reshape(S, self.n, 3).numpy()
        if single:
            return float(e[0]), f[0]
        return e, f


def fire_minimise(pot, pos, fmax_target=1e-3, max_steps=20000, dt0=0.05,
                  dtmax=0.2, maxstep=0.1):
    """FIRE driven by forces only (the float32 energy is too noisy for line searches)."""
    pos = pos.copy()
    v = np.zeros_like(pos)
    dt, a, n_pos = dt0, 0.1, 0
    best = (np.inf, pos.copy())
    for it in range(max_steps):
        _, f = pot.energy_forces(pos)
        fmax = float(np.abs(f).max())
        if fmax < best[0]:
            best = (fmax, pos.copy())
        if fmax < fmax_target:
            break
        P = float((f * v).sum())
        if P > 0:
            fn = np.linalg.norm(f)
            v = (1 - a) * v + a * f / fn * np.linalg.norm(v)
            n_pos += 1
            if n_pos > 5:
                dt = min(dt * 1.1, dtmax)
                a *= 0.99
        else:
            v[:] = 0.0
            dt *= 0.5
            a = 0.1
            n_pos = 0
        v += dt * f          # unit mass
        dr = dt * v
        m = np.abs(dr).max()
        if m > maxstep:
            dr *= maxstep / m
        pos += dr
    return best[1], best[0], it + 1


def minimise(pot, pos, masses, fmax_target=1e-3, polish_target=2e-5, newton_step=2e-3,
             max_newton=6):
    """FIRE down to max|F| < fmax_target, then Newton steps with the FD Hessian
    (mass-weighted, rigid-body directions projected out) to see how far below
    that the float32 model lets us go (stops at polish_target, after max_newton
    steps, or when the step is < 1e-5 Å); returns the structure with the lowest max|F|."""
    pos, fmax, n_fire = fire_minimise(pot, pos, fmax_target=fmax_target)
    n_newton = 0
    history = [fmax]
    cur = pos.copy()
    for _ in range(max_newton):
        if fmax < polish_target:
            break
        _, f = pot.energy_forces(cur)
        H, _ = fd_hessian(pot, cur, newton_step)
        # Newton step in mass-weighted coordinates, rigid-body block projected out
        minv = 1.0 / np.sqrt(np.repeat(masses, 3))
        Q = rigid_body_basis(cur, masses)
        P = np.eye(pos.size) - Q @ Q.T
        lam, V = np.linalg.eigh(P @ (H * minv[:, None] * minv[None, :]) @ P)
        # (rigid_body_basis uses the current geometry; recomputed each step)
        order = np.argsort(np.abs(lam))
        lam_k, V_k = lam[order[Q.shape[1]:]], V[:, order[Q.shape[1]:]]
        if lam_k.min() <= 0:               # not in a convex region: leave it to FIRE
            log(f"    Newton: negative curvature {lam_k.min():.2e}, back to FIRE")
            break
        dx = minv * (V_k @ ((V_k.T @ (minv * f.ravel())) / lam_k))
        m = np.abs(dx).max()
        if m > 0.05:
            dx *= 0.05 / m
        # full Newton steps (the first may raise max|F| along a soft torsion; the
        # next ones converge quadratically); keep the best structure seen
        cur = cur + dx.reshape(pos.shape)
        _, ft = pot.energy_forces(cur)
        n_newton += 1
        history.append(float(np.abs(ft).max()))
        if history[-1] < fmax:
            pos, fmax = cur.copy(), history[-1]
        if np.abs(dx).max() < 1e-5:
            break
    return pos, fmax, n_fire, n_newton, history


def rigid_body_basis(pos, masses):
    """Orthonormal mass-weighted translation + rotation vectors (3N x 6)."""
    n = len(masses)
    sm = np.sqrt(masses)
    com = (masses[:, None] * pos).sum(0) / masses.sum()
    r = pos - com
    vecs = []
    for k in range(3):
        t = np.zeros((n, 3))
        t[:, k] = sm
        vecs.append(t.ravel())
    for k in range(3):
        e = np.zeros(3)
        e[k] = 1.0
        rot = np.cross(e, r) * sm[:, None]
        vecs.append(rot.ravel())
    Q, R = np.linalg.qr(np.array(vecs).T)
    keep = np.abs(np.diag(R)) > 1e-8
    return Q[:, keep]


def fd_hessian(pot, pos, step):
    """Central differences of the forces, all 2*3N displaced copies in one batch."""
    n3 = pos.size
    disp = np.repeat(pos[None], 2 * n3, axis=0).reshape(2 * n3, n3)
    idx = np.arange(n3)
    disp[2 * idx, idx] += step
    disp[2 * idx + 1, idx] -= step
    _, f = pot.energy_forces(disp.reshape(2 * n3, -1, 3))
    f = f.reshape(2 * n3, n3)
    H = -(f[0::2] - f[1::2]) / (2.0 * step)      # row i = d(-F)/dx_i
    asym = float(np.linalg.norm(H - H.T) / np.linalg.norm(H))
    return 0.5 * (H + H.T), asym


def normal_modes(H, masses3, pos, masses, project):
    minv = 1.0 / np.sqrt(masses3)
    Hm = H * minv[:, None] * minv[None, :]
    raw = np.linalg.eigvalsh(Hm)
    if project:
        Q = rigid_body_basis(pos, masses)
        P = np.eye(len(masses3)) - Q @ Q.T
        lam = np.linalg.eigvalsh(P @ Hm @ P)
        # the 6 (or 5) eigenvalues in the rigid-body subspace are ~0: pin them to 0
        order = np.argsort(np.abs(lam))
        lam = lam.copy()
        lam[order[:Q.shape[1]]] = 0.0
        lam.sort()
        return raw, lam
    return raw, raw


def to_omega(lam):
    """eV/(Å^2 amu) -> omega in 1/fs (negative eigenvalues give negative omega sign)."""
    w2 = lam * EV_A2_AMU_TO_FS2
    return np.sign(w2) * np.sqrt(np.abs(w2))


def to_cm(omega):
    return omega / (2.0 * math.pi * C_CM_PER_FS)


def predict(omega, dt, ndof=66):
    # f(w dt) = 1 - (w dt / 2)^2 ; an imaginary mode (w^2 < 0) gives 1 + |w dt/2|^2
    w2 = np.sign(omega) * omega ** 2
    f = 1.0 - w2 * dt * dt / 4.0
    assert np.all(np.abs(omega) * dt < 2.0), "unstable mode: w dt >= 2"
    ratio = float(f.sum() / ndof)
    return ratio


def analyse_structure(pot, syms, pos0, steps, label):
    masses = np.array([MASS[s] for s in syms])
    masses3 = np.repeat(masses, 3)
    t0 = time.time()
    e0, f0 = pot.energy_forces(pos0)
    pos, fmax, nit, n_newton, hist = minimise(pot, pos0, masses)
    e1, f1 = pot.energy_forces(pos)
    log(f"  [{label}] minimise: {nit} FIRE steps + {n_newton} Newton steps, max|F| "
        f"{np.abs(f0).max():.3e} -> {fmax:.3e} eV/Å (history {['%.1e' % h for h in hist]}), "
        f"E {e0:.5f} -> {e1:.5f} eV ({time.time() - t0:.1f} s)")
    res = {"label": label, "fire_iterations": nit, "newton_iterations": n_newton,
           "max_force_history_eV_per_A": hist, "minimise_seconds": round(time.time() - t0, 1),
           "initial_max_force_eV_per_A": float(np.abs(f0).max()),
           "final_max_force_eV_per_A": fmax,
           "final_rms_force_eV_per_A": float(np.sqrt((f1 ** 2).mean())),
           "energy_initial_eV": e0, "energy_final_eV": e1,
           "rmsd_from_input_A": float(np.sqrt(((pos - pos0) ** 2).sum(1).mean())),
           "hessian_steps": []}
    hs = {}
    for h in steps:
        H, asym = fd_hessian(pot, pos, h)
        raw, lam = normal_modes(H, masses3, pos, masses, project=True)
        om = to_omega(lam)
        om_raw = to_omega(raw)
        entry = {"step_A": h, "relative_asymmetry": asym,
                 "raw_6_lowest_cm": [round(float(x), 2) for x in to_cm(om_raw[:6])],
                 "lowest_internal_cm": round(float(to_cm(om[6])), 2),
                 "highest_cm": round(float(to_cm(om[-1])), 2)}
        for dt in DTS:
            entry[f"ratio_dt{dt}"] = predict(om, dt)
            entry[f"ratio_raw_dt{dt}"] = predict(om_raw, dt)
        res["hessian_steps"].append(entry)
        hs[h] = (H, lam, om, raw)
        log(f"  [{label}] h={h:g}: asym {asym:.2e}, raw 6 lowest (cm^-1) {entry['raw_6_lowest_cm']}, "
            f"lowest internal {entry['lowest_internal_cm']}, highest {entry['highest_cm']}, "
            f"<T>/T(0.5fs) {entry['ratio_dt0.5']:.6f}")
    return res, pos, hs, masses


def main():
    t_start = time.time()
    result = {"script": "benches/predict_baoab_bias.py", "threads": torch.get_num_threads()}

    log("Part 1: harmonic-oscillator check of BAOAB on-step <p^2>")
    result["harmonic_oscillator_check"] = harmonic_check()

    log("Part 2: alanine dipeptide, ANI-1x (static), CPU")
    model = torch.jit.load(str(MODEL), map_location="cpu")
    model.eval()
    syms, pos0 = read_xyz(XYZ)
    assert len(syms) == 22
    pot = Pot(model, syms)
    steps = [5e-4, 1e-3, 2e-3, 5e-3]
    main_step = 2e-3
    res, pos, hs, masses = analyse_structure(pot, syms, pos0, steps, "alanine_dipeptide.xyz")
    H, lam, om, raw = hs[main_step]
    cm = to_cm(om)
    ndof = 3 * len(syms)
    res["hessian_step_used_A"] = main_step
    res["frequencies_cm"] = [round(float(x), 1) for x in cm]
    res["raw_eigenvalues_eV_A2_amu_6_lowest"] = [float(x) for x in raw[:6]]
    res["n_modes_above_2800_cm"] = int((cm > 2800).sum())
    res["n_modes_above_3300_cm"] = int((cm > 3300).sum())
    pred = {}
    for dt in DTS:
        ratio = predict(om, dt, ndof)
        spread = [e[f"ratio_dt{dt}"] for e in res["hessian_steps"]]
        # contribution by band
        w2 = om ** 2
        red = w2 * dt * dt / 4.0
        pred[f"dt_{dt}_fs"] = {
            "ratio_T_on_over_T": ratio,
            "T_on_step_K_at_300K": T_REF * ratio,
            "bias_K": T_REF * (ratio - 1.0),
            "bias_K_range_over_fd_steps": [T_REF * (min(spread) - 1), T_REF * (max(spread) - 1)],
            "bias_K_from_modes_above_2800_cm": float(-T_REF * red[cm > 2800].sum() / ndof),
            "bias_K_from_modes_1000_2800_cm": float(-T_REF * red[(cm > 1000) & (cm <= 2800)].sum() / ndof),
            "bias_K_from_modes_below_1000_cm": float(-T_REF * red[cm <= 1000].sum() / ndof),
            "max_omega_dt": float(np.abs(om).max() * dt),
        }
    res["prediction"] = pred
    result["alanine_dipeptide"] = res

    # autograd (double-backward) Hessian as a cross-check of the FD one, if the model supports it
    try:
        x = torch.tensor(pos, dtype=torch.float64).reshape(-1).requires_grad_(True)
        batch = torch.zeros(len(syms), dtype=torch.int64)
        e = model(pot.z, x.reshape(-1, 3), batch).sum()
        (g,) = torch.autograd.grad(e, x, create_graph=True)
        rows = [torch.autograd.grad(g[i], x, retain_graph=True)[0] for i in range(ndof)]
        Ha = torch.stack(rows).detach().numpy()
        Ha = 0.5 * (Ha + Ha.T)
        masses3 = np.repeat(masses, 3)
        _, lam_a = normal_modes(Ha, masses3, pos, masses, project=True)
        om_a = to_omega(lam_a)
        result["autograd_hessian_check"] = {
            "rel_diff_vs_fd": float(np.linalg.norm(Ha - H) / np.linalg.norm(H)),
            "max_abs_freq_diff_cm": float(np.abs(to_cm(om_a) - cm).max()),
            **{f"bias_K_dt{dt}": T_REF * (predict(om_a, dt, ndof) - 1) for dt in DTS}}
        log(f"  autograd Hessian: rel diff vs FD {result['autograd_hessian_check']['rel_diff_vs_fd']:.2e}")
    except Exception as exc:  # noqa: BLE001
        result["autograd_hessian_check"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        log(f"  autograd Hessian not available: {type(exc).__name__}")

    # other conformers (the 300 K ensemble visits several basins)
    conf = []
    for name in (EXTRA_XYZ if "--conformers" in sys.argv[1:] else []):
        p = XYZ.parent / name
        if not p.exists():
            continue
        s2, x2 = read_xyz(p)
        pot2 = Pot(model, s2)
        r2, _, hs2, _ = analyse_structure(pot2, s2, x2, [main_step], name)
        _, _, om2, _ = hs2[main_step]
        conf.append({"structure": name,
                     "final_max_force_eV_per_A": r2["final_max_force_eV_per_A"],
                     "energy_final_eV": r2["energy_final_eV"],
                     "lowest_internal_cm": float(to_cm(om2[6])),
                     **{f"bias_K_dt{dt}": T_REF * (predict(om2, dt, ndof) - 1) for dt in DTS}})
    result["other_conformers"] = conf

    obs = OBSERVED
    b05 = pred["dt_0.5_fs"]["bias_K"]
    result["comparison_with_run"] = {
        "observed_T_on_step_K": obs["T_on_step_K"], "observed_sem_K": obs["sem_K"],
        "observed_bias_K": obs["T_on_step_K"] - T_REF,
        "predicted_bias_K_dt0.5": b05,
        "difference_in_sem": (obs["T_on_step_K"] - (T_REF + b05)) / obs["sem_K"],
    }
    result["runtime_s"] = round(time.time() - t_start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
