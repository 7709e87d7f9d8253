"""Analyse the output of benches/gpu_validation.sh (NVE drift, Langevin
temperature). Usage: python benches/analyze_validation.py DIR > report.json"""

import json
import os
import sys

import h5py
import numpy as np


def series(path, name):
    with h5py.File(path, "r") as h:
        g = h[f"observables/{name}"]
        return g["time"][()], g["value"][()]


def nve(d):
    t, e = series(os.path.join(d, "observables.h5"), "total_energy")
    _, temp = series(os.path.join(d, "observables.h5"), "temperature")
    t_ps = t * 1e-3
    out = []
    for m in range(e.shape[1]):
        slope = np.polyfit(t_ps, e[:, m], 1)[0]
        out.append({
            "member": m,
            "drift_ev_per_ps": slope,
            "drift_mev_per_ps_per_atom": slope * 1e3 / 22,
            "fluctuation_rms_ev": float(np.std(e[:, m] - np.polyval(np.polyfit(t_ps, e[:, m], 1), t_ps))),
            "max_deviation_ev": float(np.max(np.abs(e[:, m] - e[0, m]))),
        })
    return {"duration_ps": float(t_ps[-1]), "mean_temperature_k": float(temp.mean()), "members": out}


def langevin(d):
    _, temp = series(os.path.join(d, "observables.h5"), "temperature")
    half = temp[len(temp) // 2:]
    per_member = half.mean(0)
    return {
        "records": int(temp.shape[0]),
        "members": int(temp.shape[1]),
        "mean_temperature_second_half_k": float(per_member.mean()),
        "standard_error_k": float(per_member.std(ddof=1) / np.sqrt(len(per_member))),
        "all_finite": bool(np.isfinite(temp).all()),
    }


def main():
    d = sys.argv[1]
    report = {"gpu": open(os.path.join(d, "gpu.txt")).read().strip()}
    for dt in ("0.5", "0.25"):
        report[f"nve_dt_{dt}"] = nve(os.path.join(d, f"nve_{dt}"))
        report[f"nve_dt_{dt}"]["steps_per_second"] = json.load(open(os.path.join(d, f"nve_{dt}", "summary.json")))["steps_per_second"]
    report["langevin_64"] = langevin(os.path.join(d, "langevin"))
    s = json.load(open(os.path.join(d, "langevin", "summary.json")))
    report["langevin_64"].update({k: s[k] for k in ("steps", "steps_per_second", "member_steps_per_second", "aggregate_ns_per_day")})
    json.dump(report, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
