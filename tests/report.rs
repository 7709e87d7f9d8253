//! `mlff-md report`: figures and numbers of finished, running and resumed
//! runs. The free energies are also held to pymbar on the same data by
//! python/check_report.py (make test); here they are held to the exact
//! answer for harmonic wells, and the replica-exchange statistics the report
//! recomputes from the per-exchange records to the engine's own counts.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::root;
use common::runs::{bin, ok, stderr};
use mlff_md::report::data::RunData;
use mlff_md::report::remd;
use serde_json::Value;

/// tests/data/report_harmonic_rex.toml (ethanol in harmonic wells under
/// replica exchange) for `steps` steps, as DIR/rex.toml writing to DIR/out.
fn harmonic_rex(dir: &Path, steps: u64) -> (PathBuf, PathBuf) {
    let out = dir.join("out");
    let config = dir.join("rex.toml");
    let template =
        std::fs::read_to_string(root().join("tests/data/report_harmonic_rex.toml")).unwrap();
    std::fs::write(
        &config,
        template
            .replace("{root}", root().to_str().unwrap())
            .replace("{out}", out.to_str().unwrap())
            .replace("{steps}", &steps.to_string()),
    )
    .unwrap();
    (config, out)
}

/// Write `text` (its "{OUT}" replaced by DIR/name) as DIR/name.toml, run
/// it, and return the output directory.
fn run_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let out = dir.join(name);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, text.replace("{OUT}", out.to_str().unwrap())).unwrap();
    ok(bin()
        .args(["run", config.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    out
}

fn report_json(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report/report.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn run_report(out: &Path) -> String {
    let o = ok(bin()
        .args(["report", out.to_str().unwrap()])
        .output()
        .unwrap());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn harmonic_replica_exchange_report_has_the_exact_free_energies_and_heat_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let (config, out) = harmonic_rex(dir.path(), 20_000);
    ok(bin()
        .args(["run", config.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let text = run_report(&out);
    assert!(text.contains("MBAR over"), "{text}");
    assert!(text.contains("temperatures = ["), "{text}");
    let json = report_json(&out);
    let rex = &json["replica_exchange"];
    let temps = floats(&rex["temperatures_k"]);
    let mbar = &rex["mbar"];
    let (f, df) = (floats(&mbar["f_k"]), floats(&mbar["df_k"]));
    // Z_k ∝ T_k^{27/2}: f_k − f_0 = −(27/2) ln(T_k/T_0), for U − U0:
    // less (β_k − β_0) U0.
    let u0 = mbar["energy_zero_ev"].as_f64().unwrap();
    assert!((0.0..0.2).contains(&u0), "{u0}");
    let beta = |t: f64| 1.0 / (common::kb_ev() * t);
    for k in 1..temps.len() {
        let exact = -13.5 * (temps[k] / temps[0]).ln() - (beta(temps[k]) - beta(temps[0])) * u0;
        assert!(df[k] > 0.0 && df[k] < 0.05, "{df:?}");
        assert!(
            (f[k] - exact).abs() < 6.0 * df[k],
            "f_{k} = {} vs exact {exact} ± {}",
            f[k],
            df[k]
        );
    }
    // Configurational C_v = 27/2 kB at every temperature, rungs or between.
    let cv = &mbar["heat_capacity"];
    let (values, errors) = (floats(&cv["cv_kb"]), floats(&cv["cv_kb_se"]));
    assert_eq!(values.len(), 41);
    for (c, se) in values.iter().zip(&errors) {
        assert!(*se > 0.0 && *se < 1.0, "{errors:?}");
        assert!((c - 13.5).abs() < 6.0 * se, "C_v {c} ± {se} vs 13.5");
    }
    // ⟨U⟩_k = (27/2) kB T_k.
    let kb = common::kb_ev();
    for (u, t) in floats(&mbar["mean_potential_energy_ev"]).iter().zip(&temps) {
        assert!((u / (13.5 * kb * t) - 1.0).abs() < 0.03, "{u} at {t} K");
    }
    // σ_U ∝ T for harmonic wells: the even-acceptance ladder is geometric,
    // which is the ladder this run used.
    for (s, t) in floats(&rex["suggested_temperatures_k"]).iter().zip(&temps) {
        assert!((s / t - 1.0).abs() < 0.02, "suggested {s} for {t}");
    }

    // The statistics recomputed from the records equal the engine's counts.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let engine = &summary["replica_exchange"];
    assert_eq!(
        rex["round_trips_per_replica"],
        engine["round_trips_per_replica"]
    );
    let (a, b) = (
        rex["mean_round_trip_ps"].as_f64().unwrap(),
        engine["mean_round_trip_ps"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-12 * b, "{a} vs {b}");
    let mut data = RunData::read(&out).unwrap();
    let records = data.exchange.as_mut().unwrap();
    let from_matrices = remd::acceptance(records).unwrap();
    assert_eq!(from_matrices.source, "final matrices");
    records.matrices = None;
    let from_records = remd::acceptance(records).unwrap();
    assert_eq!(from_records.source, "exchange records");
    assert_eq!(from_records.attempts, from_matrices.attempts);
    assert_eq!(from_records.rate, from_matrices.rate);
    for (rate, engine_rate) in from_records
        .rate
        .iter()
        .zip(floats(&engine["neighbor_acceptance"]))
    {
        assert_eq!(rate.unwrap(), engine_rate);
    }

    // The page: self-contained, every figure inline and beside it.
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    for figure in [
        "potential_energy",
        "temperature",
        "exchange_acceptance",
        "replica_walks",
        "round_trips",
        "energy_histograms",
        "free_energy",
        "heat_capacity",
    ] {
        assert!(html.contains(&format!("id=\"{figure}\"")), "{figure}");
        let svg = std::fs::read_to_string(out.join(format!("report/{figure}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
    assert_eq!(
        html.matches("<svg").count(),
        html.matches("<figure").count()
    );
    assert!(!html.contains("<script") && !html.contains("src=\"http"));
}

/// A child process killed when the test ends, passed or not (a stopped run
/// left behind would hold the test's pipes open).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether process `pid` is stopped (state T in /proc/PID/stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

/// A report taken while the run is suspended mid-run (SIGSTOP after step
/// 3000, observables.h5 open for writing) reads the rows written so far;
/// the run then finishes untouched, and is reported again after a resume
/// that extends it, with the round trips still equal to the engine's.
#[test]
fn report_reads_a_running_run_without_disturbing_it_and_a_resumed_one() {
    let dir = tempfile::tempdir().unwrap();
    let (config, out) = harmonic_rex(dir.path(), 6000);
    let mut child = Killed(
        bin()
            .args(["run", config.to_str().unwrap(), "--quiet"])
            .env(mlff_md::run::FAULT_ENV, "stop@3000")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let started = Instant::now();
    while !is_stopped(child.id()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before step 3000"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "step 3000 never came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = run_report(&out);
    assert!(
        text.contains("running, or ended without its summary"),
        "{text}"
    );
    let json = report_json(&out);
    assert_eq!(json["run"]["finished"], Value::Bool(false));
    // Stopped right after step 3000, before its reporters: observables
    // every 20 steps from 0 to 2980, exchanges every 20 from 1020.
    assert_eq!(json["run"]["observable_rows"], 150);
    assert_eq!(json["replica_exchange"]["exchanges"], 99);
    assert_eq!(
        json["replica_exchange"]["acceptance"]["source"],
        "exchange records"
    );
    // SAFETY: kill only sends SIGCONT to the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGCONT);
    }
    assert!(child.wait().unwrap().success());
    let data = RunData::read(&out).unwrap();
    assert!(data.finished);
    assert_eq!(data.series("potential_energy").unwrap().time_fs.len(), 301);
    assert_eq!(data.exchange.as_ref().unwrap().n_exchanges(), 250);

    ok(bin()
        .args([
            "run",
            config.to_str().unwrap(),
            "--quiet",
            "--resume",
            "--steps",
            "8000",
        ])
        .output()
        .unwrap());
    run_report(&out);
    let json = report_json(&out);
    assert_eq!(json["replica_exchange"]["exchanges"], 350);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        json["replica_exchange"]["round_trips_per_replica"],
        summary["replica_exchange"]["round_trips_per_replica"]
    );
}

#[test]
fn report_of_an_ensemble_and_bad_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_config(
        dir.path(),
        "ens",
        &format!(
            "[system]\nstructure = \"{}\"\n[model]\nkind = \"harmonic\"\nk = 1.0\ndevice = \"cpu\"\n[integrator]\nkind = \"langevin\"\ntimestep = 0.5\ntemperature = 300.0\n[ensemble]\nmembers = 12\nseed = 1\n[run]\nsteps = 200\n[output]\ndirectory = \"{{OUT}}\"\nobservables_interval = 10\n",
            root().join("systems/ethanol.xyz").display()
        ),
    );
    let text = run_report(&out);
    assert!(text.contains("12 member(s), 21 observable rows"), "{text}");
    let json = report_json(&out);
    assert!(json.get("replica_exchange").is_none());
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("8 of 12 members"));
    assert!(!html.contains("exchange_acceptance"));

    // Not a run directory, no observables.h5, an unreadable one: exit 2.
    let missing = dir.path().join("nothing");
    let o = bin()
        .args(["report", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = bin()
        .args(["report", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("observables.h5: missing"),
        "{}",
        stderr(&o)
    );
    std::fs::write(empty.join("observables.h5"), b"not hdf5").unwrap();
    let o = bin()
        .args(["report", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be read"), "{}", stderr(&o));
}

/// Alanine dipeptide in harmonic wells (k = 1 eV/Å², 22 atoms) under
/// replica exchange, reported against its own starting structure: the
/// superposed mean-square RMSD is (3N − 6)/N · kT/k (the wells' 3N degrees
/// of freedom less the 6 rigid motions the superposition removes), φ stays
/// in the start's well, and the fraction folded falls with temperature.
#[test]
fn peptide_report_has_the_backbone_and_the_expected_rmsd() {
    let dir = tempfile::tempdir().unwrap();
    let start = root().join("systems/peptides/alanine_dipeptide.pdb");
    let out = run_config(
        dir.path(),
        "out",
        &format!(
            "[system]\nstructure = \"{}\"\n[model]\nkind = \"harmonic\"\nk = 1.0\ndevice = \"cpu\"\n[integrator]\nkind = \"langevin\"\ntimestep = 0.5\nfriction = 20.0\n[replica_exchange]\nt_min = 300.0\nt_max = 600.0\nn_replicas = 4\nexchange_interval = 20\nmembers_per_temperature = 2\n[ensemble]\nseed = 4\n[equilibration]\nsteps = 1000\n[run]\nsteps = 11000\n[output]\ndirectory = \"{{OUT}}\"\nobservables_interval = 20\ntrajectory_interval = 20\n",
            start.display()
        ),
    );
    ok(bin()
        .args([
            "report",
            out.to_str().unwrap(),
            "--reference",
            start.to_str().unwrap(),
            "--folded-below",
            "0.3",
        ])
        .output()
        .unwrap());
    let json = report_json(&out);
    let structure = &json["structure"];
    let rmsd = &structure["rmsd"];
    assert_eq!(rmsd["selection"], "all atoms");
    let kb = common::kb_ev();
    let temps = floats(&rmsd["temperatures_k"]);
    assert_eq!(temps.len(), 4);
    // ~200 independent frames per temperature of a χ² with 60 degrees of
    // freedom: 1.3 % standard error of the mean square; 8 % is 6 SE.
    for (msd, t) in floats(&rmsd["mean_square_a2"]).iter().zip(&temps) {
        let exact = (3.0 * 22.0 - 6.0) / 22.0 * kb * t;
        assert!(
            (msd / exact - 1.0).abs() < 0.08,
            "{msd} vs {exact} at {t} K"
        );
    }
    let folded = floats(&rmsd["fraction_folded"]);
    assert!(folded.windows(2).all(|w| w[0] > w[1]), "{folded:?}");

    let backbone = &structure["backbone"];
    assert_eq!(backbone["residues"], serde_json::json!(["ALA2"]));
    // 2 ladders × 501 production frames (steps 1000-11000) at 300 K.
    assert_eq!(backbone["frames"], 1002);
    let mut frame = chemfiles::Frame::new();
    chemfiles::Trajectory::open(&start, 'r')
        .unwrap()
        .read(&mut frame)
        .unwrap();
    // ACE C, ALA N, CA, C (0-based indices in the PDB).
    let phi0 = mlff_md::report::structure::dihedral_deg(frame.positions(), [1, 6, 7, 9]);
    let f: Vec<Option<f64>> = backbone["phi_free_energy"]["ALA2"]["f_kt"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::as_f64)
        .collect();
    let centres = floats(&backbone["phi_bin_centres_deg"]);
    let lowest = (0..f.len())
        .filter(|&b| f[b].is_some())
        .min_by(|&a, &b| f[a].partial_cmp(&f[b]).unwrap())
        .unwrap();
    assert!(
        (centres[lowest] - phi0).abs() <= 15.0,
        "F(φ) lowest at {} vs start φ {phi0}",
        centres[lowest]
    );
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    for figure in [
        "ramachandran",
        "phi_free_energy",
        "rmsd_time",
        "rmsd_histograms",
        "fraction_folded",
    ] {
        assert!(html.contains(&format!("id=\"{figure}\"")), "{figure}");
    }
}

/// A screen's directory (results.csv, no observables.h5) gets the screen's
/// report: outcome counts equal to results.csv, one line per skip reason.
#[test]
fn report_of_a_screen() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("screen");
    ok(bin()
        .args([
            "screen",
            root()
                .join("systems/screen/bad_records.sdf")
                .to_str()
                .unwrap(),
            root().join("systems/molecules").to_str().unwrap(),
            "--config",
            root().join("configs/screen.toml").to_str().unwrap(),
            "--device",
            "cpu",
            "--output",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap());
    let text = run_report(&out);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let status = |s: &str| {
        csv.lines()
            .skip(1)
            .filter(|l| l.contains(&format!(",{s},")))
            .count()
    };
    let (converged, skipped) = (status("converged"), status("skipped"));
    assert!(converged > 10 && skipped == 5, "{csv}");
    let json = report_json(&out);
    let screen = &json["screen"];
    assert_eq!(screen["records"], csv.lines().count() - 1);
    assert_eq!(screen["counts"]["converged"], converged);
    assert_eq!(screen["counts"]["skipped"], skipped);
    assert_eq!(screen["skipped_reasons"].as_object().unwrap().len(), 5);
    assert!(
        text.contains("skipped 1: the record has zero atoms"),
        "{text}"
    );
    for figure in ["screen_outcomes", "screen_iterations", "screen_relaxation"] {
        assert!(
            out.join(format!("report/{figure}.svg")).is_file(),
            "{figure}"
        );
    }
}

/// Under a barostat the report draws volume and density, and its summary
/// gives their second-half means.
#[test]
fn report_of_an_npt_run_has_volume_and_density() {
    let dir = tempfile::tempdir().unwrap();
    let a: f64 = 25.496988292785097;
    let out = run_config(
        dir.path(),
        "npt",
        &format!(
            "[system]\nstructure = \"{}\"\ncell = [{a}, {a}, {a}]\n[model]\nkind = \"lennard-jones\"\nepsilon = 0.0104\nsigma = 3.4\ncutoff = 8.5\ndevice = \"cpu\"\n[integrator]\nkind = \"langevin\"\ntimestep = 20.0\ntemperature = 181.0\nfriction = 1.0\n[ensemble]\nmembers = 2\nseed = 1\n[barostat]\npressure = 424.0\ninterval = 5\n[run]\nsteps = 200\n[output]\ndirectory = \"{{OUT}}\"\nobservables_interval = 5\n",
            root().join("tests/data/lj_npt_start.xyz").display()
        ),
    );
    let text = run_report(&out);
    assert!(
        text.contains("Volume:") && text.contains("Density:"),
        "{text}"
    );
    let json = report_json(&out);
    let volume = json["observables"]["volume"]["second_half_mean"]
        .as_f64()
        .unwrap();
    assert!((volume / a.powi(3) - 1.0).abs() < 0.2, "{volume}");
    for figure in ["volume", "density"] {
        assert!(
            out.join(format!("report/{figure}.svg")).is_file(),
            "{figure}"
        );
    }
}
