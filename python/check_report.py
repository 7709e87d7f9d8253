"""Check `mlff-md report`'s free-energy analysis against pymbar on the same
data, and its HTML page.

    python python/check_report.py target/release/mlff-md
    python python/check_report.py --h5 path/to/observables.h5

Runs CONFIG (ethanol in harmonic wells, 6 temperatures x 4 ladders of replica
exchange), then `mlff-md report`. The MBAR samples are rebuilt here from
observables.h5 alone (series()): exchange rows at or after /parameters
production_start_step; replica r's energy at row e was sampled in its state
before exchange e (r % K at e = 0, else state_of_replica[e-1, r]); each
(ladder, state) series is subsampled with pymbar.timeseries defaults and
pooled state-major, ladder-minor; pymbar.MBAR (defaults) on U / (kB T_k).
report/report.json must match: g 1e-9 relative, N_k exactly, f_k and df_k
1e-6 absolute, mean energies 1e-6 relative. Energies count from U0, the
lowest production energy, as in the report. Exact answer for the wells:
f_k - f_0 = -(27/2) ln(T_k / T_0) - (beta_k - beta_0) U0, each state within 6 df_k. index.html must
be self-contained (no <script src, no http(s) src/href) with an inline <svg>.
--h5 runs only the analysis and the exact check on an existing file and prints
the numbers. A missing dependency (h5py, numpy, pymbar) fails, never skips.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET

from deps import require

h5py = require("h5py", "check_report")
np = require("numpy", "check_report")
pymbar = require("pymbar", "check_report")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KB_EV_PER_K = 8.617333262e-5  # CODATA 2018, written here rather than taken from the engine
DOF = 27  # ethanol: 9 atoms, each in its own 3-d harmonic well

# The run: shared with tests/report.rs ({root}, {out} and {steps} filled in).
CONFIG = os.path.join(ROOT, "tests", "data", "report_harmonic_rex.toml")
STEPS = 20000


def fail(message: str):
    raise SystemExit(f"check_report: FAIL: {message}")


def series(path: str):
    """Temperatures [K] and the production energies [L, K, E] (eV) of ladder l sampled in state s."""
    with h5py.File(path, "r") as h5:
        rx = h5["replica_exchange"]
        temps, step = rx["temperatures"][()], rx["step"][()]
        state, energy = rx["state_of_replica"][()], rx["potential_energy"][()]
        start = int(h5["parameters"].attrs["production_start_step"])
    k, r = len(temps), state.shape[1]
    if r % k:
        fail(f"{r} replicas is not a multiple of {k} temperatures")
    before = np.vstack([np.arange(r) % k, state[:-1]])
    keep = step >= start
    before, energy = before[keep], energy[keep]
    out = np.empty((r // k, k, len(energy)))
    for l in range(r // k):
        order = np.argsort(before[:, l * k:(l + 1) * k], axis=1, kind="stable")
        if not (np.sort(before[:, l * k:(l + 1) * k], axis=1) == np.arange(k)).all():
            fail(f"ladder {l}: states before an exchange are not a permutation of 0..{k}")
        out[l] = np.take_along_axis(energy[:, l * k:(l + 1) * k], order, axis=1).T
    return temps, out


def analyse(temps, u_lse) -> dict:
    """pymbar's MBAR on the subsampled, pooled series."""
    n_l, k = u_lse.shape[:2]
    g = np.empty((n_l, k))
    pool, n_k = [], np.zeros(k, dtype=int)
    for s in range(k):
        for l in range(n_l):
            g[l, s] = pymbar.timeseries.statistical_inefficiency(u_lse[l, s])
            idx = pymbar.timeseries.subsample_correlated_data(u_lse[l, s], g=g[l, s])
            pool.append(u_lse[l, s][idx])
            n_k[s] += len(idx)
    u_n = np.concatenate(pool)
    # Energies from the lowest production energy (before thinning), as the report.
    u0 = u_lse.min()
    mbar = pymbar.MBAR((u_n - u0)[None, :] / (KB_EV_PER_K * temps[:, None]), n_k)
    return {"statistical_inefficiency": g.ravel(), "samples_per_state": n_k, "f_k": mbar.f_k,
            "df_k": mbar.compute_free_energy_differences()["dDelta_f"][0],
            "mean_potential_energy_ev": mbar.compute_expectations(u_n - u0)["mu"] + u0, "energy_zero_ev": u0}


def check_analytic(temps, res) -> float:
    """Largest |f_k - f_0 - exact| / df_k over k > 0; fails beyond 6."""
    # Z_k of U - U0 is e^{beta_k U0} Z_k: f_k shifts by -beta_k U0.
    exact = 0.5 * DOF * np.log(temps[0] / temps) - res["energy_zero_ev"] / KB_EV_PER_K * (1 / temps - 1 / temps[0])
    df = res["df_k"][1:]
    if not (df > 0).all():
        fail(f"df_k not positive: {res['df_k']}")
    z = np.abs(res["f_k"] - res["f_k"][0] - exact)[1:] / df
    if z.max() > 6:
        fail(f"f_k - f_0 = {res['f_k'] - res['f_k'][0]} vs exact {exact}: {z.max():.2f} df off")
    return float(z.max())


def compare(report: dict, res: dict) -> None:
    """report.json's replica_exchange.mbar against pymbar."""
    rep = report["replica_exchange"]["mbar"]
    if list(rep["samples_per_state"]) != res["samples_per_state"].tolist():
        fail(f"samples_per_state {rep['samples_per_state']} != pymbar {res['samples_per_state'].tolist()}")
    for key, rtol, atol in [("energy_zero_ev", 0, 0), ("statistical_inefficiency", 1e-9, 0), ("f_k", 0, 1e-6),
                            ("df_k", 0, 1e-6), ("mean_potential_energy_ev", 1e-6, 0)]:
        got, want = np.asarray(rep[key], dtype=float), np.asarray(res[key])
        if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol):
            i = int(np.argmax(np.abs(got - want))) if got.shape == want.shape else None
            fail(f"{key}: report {got.tolist()} != pymbar {want.tolist()} (worst index {i})")


def check_html(path: str) -> None:
    if not os.path.isfile(path):
        fail(f"no {path}")
    with open(path, encoding="utf-8") as f:
        html = f.read()
    if re.search(r"<script\b[^>]*\bsrc\s*=", html, re.I):
        fail("index.html loads a script (<script src=...>)")
    links = re.findall(r"\b(?:src|href)\s*=\s*[\"']?\s*(https?://[^\"'\s>]*)", html, re.I)
    if links:
        fail(f"index.html links outside itself: {links[:3]}")
    if "<svg" not in html.lower():
        fail("index.html has no inline <svg>")
    # Every figure is also a file beside the page, and a valid SVG document.
    figures = re.findall(r'<figure id="([^"]+)"', html)
    if not figures:
        fail("index.html has no figures")
    for name in figures:
        svg = os.path.join(os.path.dirname(path), name + ".svg")
        try:
            root = ET.parse(svg).getroot()
        except (OSError, ET.ParseError) as exc:
            fail(f"{svg}: not a valid SVG file ({exc})")
        if root.tag != "{http://www.w3.org/2000/svg}svg":
            fail(f"{svg}: root element {root.tag}, expected svg")
    return figures


def check_summary_numbers(h5_path: str, report: dict) -> None:
    """The summary's observables equal the HDF5 data: for each member the mean
    of its second half of rows, then the mean over members."""
    with h5py.File(h5_path, "r") as h5:
        for name, entry in report["observables"].items():
            value = h5[f"observables/{name}/value"][()]
            want = value[value.shape[0] // 2:].mean(axis=0).mean()
            if not np.isclose(entry["second_half_mean"], want, rtol=1e-12, atol=0):
                fail(f"summary {name}: {entry['second_half_mean']} != {want} from observables.h5")


def screenshot(page: str, png: str) -> bool:
    """Render the page in headless Chromium (system package chromium) and check
    the PNG; False (with a message) when Chromium is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("check_report: SKIP screenshot: chromium is not installed (apt-get install chromium)")
        return False
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={png}", "--window-size=900,2400", "file://" + os.path.abspath(page)]
    done = subprocess.run(cmd, capture_output=True, timeout=120)
    if done.returncode != 0 or not os.path.isfile(png):
        fail(f"chromium could not render {page}: {done.stderr.decode(errors='replace')[-400:]}")
    with open(png, "rb") as f:
        data = f.read()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 20_000:
        fail(f"{png}: not a PNG of a rendered page ({len(data)} bytes)")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", nargs="?", help="path to mlff-md")
    parser.add_argument("--h5", help="only analyse this observables.h5 and print the numbers")
    parser.add_argument("--screenshot", help="keep the Chromium screenshot in this folder")
    args = parser.parse_args()
    np.set_printoptions(precision=6, linewidth=120)
    if args.h5:
        temps, u = series(args.h5)
        res = analyse(temps, u)
        z = check_analytic(temps, res)
        for key in ["f_k", "df_k", "samples_per_state", "mean_potential_energy_ev"]:
            print(f"{key}: {np.asarray(res[key])}")
        print(f"statistical_inefficiency [ladder, state]:\n{res['statistical_inefficiency'].reshape(u.shape[:2])}")
        print(f"energy zero U0: {res['energy_zero_ev']} eV; the exact values shift by -(beta_k - beta_0) U0")
        print(f"check_report: analysis only, largest deviation from exact {z:.2f} df")
        return
    if not args.binary or not os.path.isfile(args.binary):
        fail(f"no binary at {args.binary} (`make build` builds it)")
    binary = os.path.abspath(args.binary)
    with tempfile.TemporaryDirectory() as tmp:
        out, cfg = os.path.join(tmp, "out"), os.path.join(tmp, "run.toml")
        with open(CONFIG) as f:
            template = f.read()
        with open(cfg, "w") as f:
            f.write(template.replace("{root}", ROOT).replace("{out}", out).replace("{steps}", str(STEPS)))
        for cmd in [[binary, "run", cfg, "--quiet"], [binary, "report", out, "--quiet"]]:
            if subprocess.run(cmd).returncode != 0:
                fail(f"`{' '.join(cmd[1:3])}` exited non-zero")
        temps, u = series(os.path.join(out, "observables.h5"))
        res = analyse(temps, u)
        try:
            with open(os.path.join(out, "report", "report.json")) as f:
                compare(json.load(f), res)
        except (OSError, KeyError, ValueError) as exc:
            fail(f"report/report.json: {type(exc).__name__}: {exc}")
        z = check_analytic(temps, res)
        page = os.path.join(out, "report", "index.html")
        figures = check_html(page)
        with open(os.path.join(out, "report", "report.json")) as f:
            check_summary_numbers(os.path.join(out, "observables.h5"), json.load(f))
        shot = os.path.join(args.screenshot or tmp, "report_screenshot.png")
        rendered = screenshot(page, shot)
    print(f"check_report: report matches pymbar (K={len(temps)}, N_k={res['samples_per_state'].tolist()}); "
          f"largest deviation from exact {z:.2f} df; {len(figures)} valid SVG figures; summary equals observables.h5; "
          f"{'rendered in Chromium' if rendered else 'not rendered (no Chromium)'}; 1 passed, 0 failed")


if __name__ == "__main__":
    main()
