#!/usr/bin/env python3
"""Exchange acceptance per neighbour pair of a T-REMD run (NPT or NVT) from
its observables.h5 (benches/gpu_folding_acceptance.sh).

    python3 benches/analyze_acceptance.py OUT_DIR/observables.h5 --pressure-bar 1 --out acc.json

Two estimates per pair of neighbouring temperatures (i, i+1):
- attempted: the exchanges the run attempted (the neighbour scheme tries the
  even pairs and the odd pairs in turn), accepted / attempted, read from
  /replica_exchange (the state of each replica after every round);
- expected: the mean Metropolis probability
  min(1, exp((b_i - b_j) ((U_a + P V_a) - (U_b + P V_b)))) of the two replicas
  a, b at those temperatures, at every observables record after the
  production start (every pair at every record, attempted or not), with the
  standard error from 8 blocks of consecutive records. It uses the same
  criterion as the engine (U + PV; without volumes, U alone).
"""

import argparse
import json
import math

import h5py
import numpy as np

KB_EV_PER_K = 8.617333262e-5
BAR_IN_EV_PER_A3 = 1e5 * 1e-30 / 1.602176634e-19
BLOCKS = 8


def attempted(h, temperatures):
    """Accepted and attempted exchanges per neighbour pair. Round k (from 0)
    of the neighbour scheme tries the pairs (i, i+1) with i = k mod 2
    (src/sampling/replica_exchange.rs); a pair was accepted when its two
    replicas swapped rungs (the state of each replica after every round)."""
    states = h["replica_exchange/state_of_replica"][()]  # [rounds, replicas]
    n = len(temperatures)
    acc = np.zeros(n - 1, dtype=int)
    tried = np.zeros(n - 1, dtype=int)
    previous = np.arange(n)
    for k, now in enumerate(states):
        before = np.empty(n, dtype=int)
        before[previous] = np.arange(n)  # rung -> replica
        after = np.empty(n, dtype=int)
        after[now] = np.arange(n)
        for i in range(k % 2, n - 1, 2):
            tried[i] += 1
            acc[i] += int(before[i] == after[i + 1] and before[i + 1] == after[i])
        previous = now
    return acc, tried


def expected(h, pressure_ev, start_step):
    step = h["observables/potential_energy/step"][()]
    keep = step > start_step
    u = h["observables/potential_energy/value"][()][keep]  # [records, replicas]
    t = h["observables/thermostat_temperature/value"][()][keep]
    v = h["observables/volume/value"][()][keep] if "observables/volume" in h else np.zeros_like(u)
    h_ = u + pressure_ev * v
    records, n = u.shape
    p = np.zeros((records, n - 1))
    for r in range(records):
        order = np.argsort(t[r])  # replica at each rung
        beta = 1.0 / (KB_EV_PER_K * t[r][order])
        hh = h_[r][order]
        delta = (beta[:-1] - beta[1:]) * (hh[:-1] - hh[1:])
        p[r] = np.minimum(1.0, np.exp(np.minimum(delta, 0.0)))
    blocks = np.array_split(np.arange(records), BLOCKS)
    means = np.array([p[b].mean(axis=0) for b in blocks])
    return p.mean(axis=0), means.std(axis=0, ddof=1) / math.sqrt(BLOCKS), records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("observables")
    ap.add_argument("--pressure-bar", type=float, default=1.0)
    ap.add_argument("--out")
    a = ap.parse_args()
    with h5py.File(a.observables, "r") as h:
        temps = h["replica_exchange/temperatures"][()]
        first_exchange = int(h["replica_exchange/step"][0])
        exchange_interval = int(h["replica_exchange/step"][1] - first_exchange)
        start = first_exchange - exchange_interval
        acc, tried = attempted(h, temps)
        rounds = len(h["replica_exchange/step"])
        mean, se, records = expected(h, a.pressure_bar * BAR_IN_EV_PER_A3, start)
    pairs = []
    for i in range(len(temps) - 1):
        pairs.append({
            "pair": [float(temps[i]), float(temps[i + 1])],
            "accepted": int(acc[i]),
            "attempted": int(tried[i]),
            "expected": round(float(mean[i]), 4),
            "expected_se": round(float(se[i]), 4),
        })
    result = {
        "rounds": rounds,
        "production_start_step": start,
        "records": records,
        "mean_expected": round(float(mean.mean()), 4),
        "lowest_pair_expected": round(float(mean.min()), 4),
        "accepted_total": int(acc.sum()),
        "attempted_total": int(tried.sum()),
        "pairs": pairs,
    }
    print(f"{rounds} exchange rounds from step {start}; {records} records")
    print(f"{'pair (K)':>18} {'accepted':>14} {'expected':>9} {'SE':>7}")
    for q in pairs:
        print(f"{q['pair'][0]:7.1f}-{q['pair'][1]:7.1f}   {q['accepted']:6d} / {q['attempted']:5d} "
              f"{q['expected']:9.3f} {q['expected_se']:7.3f}")
    print(f"mean expected {result['mean_expected']}, accepted {result['accepted_total']} of {result['attempted_total']} attempts")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
