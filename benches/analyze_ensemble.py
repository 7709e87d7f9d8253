"""Analyse a Langevin ensemble run (benches/gpu_ensemble_100ps.sh): blow-ups,
and the kinetic temperature against the thermostat's, with the standard
error from the members' independent time averages.

    python benches/analyze_ensemble.py OUTPUT_DIR NAME   # writes benches/results/NAME.{json,md}
"""

import json
import os
import sys

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    d, name = sys.argv[1], sys.argv[2]
    summary = json.load(open(os.path.join(d, "summary.json")))
    with h5py.File(os.path.join(d, "observables.h5"), "r") as h:
        t = h["observables/temperature/time"][()]  # fs
        temp = h["observables/temperature/value"][()]  # [records, members]
        epot = h["observables/potential_energy/value"][()]
    target = 300.0
    n_atoms = summary["atoms_per_member"]
    # Discard the first 10 ps (equilibration from the minimised structure).
    keep = t >= 10_000.0
    per_member = temp[keep].mean(0)
    mean = float(per_member.mean())
    se = float(per_member.std(ddof=1) / np.sqrt(len(per_member)))
    report = {
        "gpu": open(os.path.join(d, "gpu.txt")).read().strip(),
        "config": "configs/ensemble.toml (ANI-1x static export, CUDA graphs on)",
        "members": int(temp.shape[1]),
        "atoms_per_member": n_atoms,
        "duration_ps": float(t[-1]) * 1e-3,
        "records": int(temp.shape[0]),
        "all_finite": bool(np.isfinite(temp).all() and np.isfinite(epot).all()),
        "reinitialized": summary["reinitialized"],
        "max_instantaneous_temperature_k": float(temp.max()),
        "mean_temperature_k_after_10ps": mean,
        "standard_error_k": se,
        "deviation_in_standard_errors": (mean - target) / se,
        "instantaneous_temperature_std_k": float(temp[keep].std()),
        "expected_instantaneous_std_k": target * np.sqrt(2.0 / (3 * n_atoms)),
        "mean_potential_energy_ev_after_10ps": float(epot[keep].mean()),
        "steps_per_second": summary["steps_per_second"],
        "member_steps_per_second": summary["member_steps_per_second"],
        "aggregate_ns_per_day": summary["aggregate_ns_per_day"],
        "wall_seconds": summary["wall_seconds"],
        "cuda_graphs": summary["cuda_graphs"],
    }
    out = os.path.join(ROOT, "benches", "results", name)
    with open(out + ".json", "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    md = (
        f"# Langevin ensemble, {report['duration_ps']:.0f} ps — {report['gpu']}\n\n"
        f"{report['config']}: {report['members']} members of alanine dipeptide "
        f"({n_atoms} atoms), BAOAB, 300 K, 1/ps, dt 0.5 fs, after batched FIRE.\n\n"
        "| quantity | value |\n|---|---|\n"
        f"| blow-ups / reinitialisations | {len(report['reinitialized'])} |\n"
        f"| all observables finite | {report['all_finite']} |\n"
        f"| mean kinetic T after 10 ps | {mean:.2f} ± {se:.2f} K (SE over members; "
        f"{report['deviation_in_standard_errors']:+.2f} SE from 300 K) |\n"
        f"| std of instantaneous T | {report['instantaneous_temperature_std_k']:.1f} K "
        f"(canonical: {report['expected_instantaneous_std_k']:.1f} K) |\n"
        f"| largest instantaneous T | {report['max_instantaneous_temperature_k']:.0f} K |\n"
        f"| wall time | {report['wall_seconds']:.0f} s ({report['steps_per_second']:.0f} steps/s, "
        f"{report['member_steps_per_second']:.0f} member-steps/s, "
        f"{report['aggregate_ns_per_day']:.0f} ns/day aggregate) |\n"
    )
    with open(out + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
