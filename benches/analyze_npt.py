#!/usr/bin/env python3
"""Density of a constant-pressure run from its observables.h5 (mlff-md
[barostat] runs record each member's volume and density).

    python3 benches/analyze_npt.py OUT_DIR/observables.h5 --skip-ps 5 --out npt.json

Takes every record at or after --skip-ps (default: the run's production
start, /parameters/production_start_step, after its [equilibration]; 0 for a
run without one); each member's time average is
one sample (members are independent), so the error is the standard error
over members. Also reports the mean density in consecutive fifths of the
kept time (drift means the run was not yet equilibrated), the barostat's
acceptance and final volumes (from the run summary, when the run ended),
and the experimental density of water at 300 K and 1 bar, 0.9965 g/cm^3
(IAPWS-95), for comparison.
"""

import argparse
import json
import math

import h5py
import numpy as np

WATER_300K = 0.9965  # g/cm^3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("observables")
    p.add_argument("--skip-ps", type=float, default=None,
                   help="time left out (ps); default: the run's [equilibration]")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args()
    with h5py.File(a.observables, "r") as h:
        time = h["observables/density/time"][()] / 1000.0  # ps
        density = h["observables/density/value"][()]  # [records, members]
        temperature = h["observables/temperature/value"][()]
        summary = json.loads(h["parameters"].attrs.get("summary", "{}") or "{}")
        step = h["observables/density/step"][()]
        production = int(h["parameters"].attrs.get("production_start_step", "0") or 0)
    if a.skip_ps is None:
        kept = step >= production
        a.skip_ps = float(time[kept][0]) if kept.any() else float("inf")
    else:
        kept = time >= a.skip_ps
    if kept.sum() < 2:
        raise SystemExit(f"only {kept.sum()} records after {a.skip_ps} ps (run ends at {time[-1]:.2f} ps)")
    per_member = density[kept].mean(axis=0)
    members = len(per_member)
    mean = float(per_member.mean())
    se = float(per_member.std(ddof=1) / math.sqrt(members)) if members > 1 else float("nan")
    # Fifths need a record each (a short run gives fewer parts).
    fifths = [float(b.mean()) for b in np.array_split(density[kept], min(5, int(kept.sum())))]
    result = {
        "records_kept": int(kept.sum()),
        "kept_ps": [float(time[kept][0]), float(time[-1])],
        "members": members,
        "density_g_cm3": mean,
        "density_se": se,
        "per_member": per_member.tolist(),
        "density_by_fifth": fifths,
        "temperature_k": float(temperature[kept].mean()),
        "experiment_300k": WATER_300K,
        "relative_to_experiment": mean / WATER_300K - 1.0,
        "barostat_acceptance": summary.get("barostat_acceptance"),
        "final_volume_a3": summary.get("final_volume_a3"),
        "ns_per_day": summary.get("ns_per_day"),
    }
    print(f"density {mean:.4f} ± {se:.4f} g/cm^3 over {members} members, "
          f"{time[kept][0]:.1f}-{time[-1]:.1f} ps; fifths {', '.join(f'{f:.4f}' for f in fifths)}; "
          f"<T> {result['temperature_k']:.1f} K; experiment {WATER_300K} ({100 * result['relative_to_experiment']:+.1f} %)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
