//! CPU smoke tests of `mlff-md bench` (tiny sizes, one trial) and of the
//! automatic chunking the MD benchmark relies on for large R.

mod common;

use std::process::Command;

use common::*;
use mlff_md::force::{ForceProvider, TorchScriptModel};
use mlff_md::state::BatchState;
use tch::{Device, Kind};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlff-md"))
}

fn json_in(dir: &std::path::Path, prefix: &str) -> serde_json::Value {
    let path = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(prefix) && n.ends_with(".json")
        })
        .unwrap_or_else(|| panic!("no {prefix}*.json in {}", dir.display()));
    assert!(
        path.with_extension("md").exists(),
        "markdown table beside the JSON"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn bench_forces_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .current_dir(root())
        .args([
            "bench",
            "forces",
            "--device",
            "cpu",
            "--batch-sizes",
            "1,3",
            "--warmup",
            "0",
            "--trials",
            "1",
            "--out",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = json_in(tmp.path(), "forces_");
    assert_eq!(report["molecules"].as_array().unwrap().len(), 17);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["batch_size"], 3);
    // water + ammonia + methane = 3 + 4 + 5 atoms.
    assert_eq!(rows[1]["atoms"], 12);
    for key in ["speedup", "molecules_per_second", "sequential_ms"] {
        assert!(rows[1][key].as_f64().unwrap() > 0.0, "{key}");
    }
    // The batched call computes what the sequential calls compute (float32
    // ANI: a few ulps), and the derived figures follow from the timings.
    for row in rows {
        let de = row["max_relative_energy_deviation"].as_f64().unwrap();
        let df = row["max_force_deviation_ev_per_a"].as_f64().unwrap();
        assert!(
            de < 1e-6 && df < 1e-3,
            "batched vs alone: {de} (relative), {df} eV/Å"
        );
        let median = row["ms_per_call"]["median"].as_f64().unwrap();
        let size = row["batch_size"].as_f64().unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
        assert!(close(
            row["molecules_per_second"].as_f64().unwrap(),
            size / (median * 1e-3)
        ));
        assert!(close(
            row["speedup"].as_f64().unwrap(),
            row["sequential_ms"].as_f64().unwrap() / median
        ));
    }
    // The sequential figure of a batch is the sum of its molecules' times.
    let single: Vec<f64> = report["sequential_ms_per_molecule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    let expected: f64 = single[..3].iter().sum();
    assert!((rows[1]["sequential_ms"].as_f64().unwrap() - expected).abs() < 1e-9 * expected);
}

/// `bench md` on the CPU for alanine dipeptide, results into `out`.
fn bench_md_on_alanine_dipeptide(out: &std::path::Path) -> Command {
    let mut cmd = bin();
    cmd.current_dir(root())
        .args(["bench", "md", "--device", "cpu"])
        .args(["--structures", "systems/peptides/alanine_dipeptide.pdb"])
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn bench_md_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bench_md_on_alanine_dipeptide(tmp.path())
        .args(["--replicas", "1,2", "--steps", "2", "--warmup", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = json_in(tmp.path(), "md_");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["replicas"], 2);
    assert_eq!(rows[1]["atoms"], 22);
    // No CUDA here: "auto" measures eager steps.
    assert_eq!(rows[1]["cuda_graph"], false);
    // Derived figures follow from the step time (dt = 0.5 fs by default).
    for row in rows {
        let ms = row["ms_per_step"].as_f64().unwrap();
        let r = row["replicas"].as_f64().unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
        let rsps = r * 1e3 / ms;
        assert!(close(
            row["replica_steps_per_second"].as_f64().unwrap(),
            rsps
        ));
        assert!(close(
            row["atom_steps_per_second"].as_f64().unwrap(),
            rsps * 22.0
        ));
        assert!(close(
            row["aggregate_ns_per_day"].as_f64().unwrap(),
            rsps * 0.5 * 86_400.0 / 1e6
        ));
        assert!(close(
            row["engine_overhead_ratio"].as_f64().unwrap(),
            ms / row["ms_per_force_call"].as_f64().unwrap()
        ));
    }
}

/// A point that runs out of device memory (tests/data/oom_pairs_above_80.pt
/// fails as the CUDA allocator does above 80 atoms per call) is reported and
/// the sweep goes on: ethanol x 2 (18 atoms) is timed, x 16 (144 atoms) did
/// not fit, and x 4 after it is timed again.
#[test]
fn bench_md_reports_a_point_that_does_not_fit_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .current_dir(root())
        .args(["bench", "md", "--device", "cpu"])
        .args(["--structures", "systems/ethanol.pdb"])
        .args(["--model", "tests/data/oom_pairs_above_80.pt"])
        .args(["--replicas", "2,16,4", "--steps", "2", "--warmup", "1"])
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("x 16 (CUDA graphs auto): does not fit in device memory; skipped"),
        "{err}"
    );
    let report = json_in(tmp.path(), "md_");
    let timed: Vec<_> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["replicas"].as_u64().unwrap())
        .collect();
    assert_eq!(timed, [2, 4]);
    let skipped = report["did_not_fit"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["replicas"], 16);
    assert_eq!(skipped[0]["structure"], "ethanol.pdb");
    assert!(skipped[0]["error"]
        .as_str()
        .unwrap()
        .contains("OutOfMemoryPairsAbove"));
    let table = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "md"))
        .unwrap();
    assert!(std::fs::read_to_string(table)
        .unwrap()
        .contains("| ethanol.pdb | | 16 | auto | did not fit in device memory |"));
}

/// A list too small for the structure (the test switch sizes it at 3
/// neighbours per atom) overflows in the timed steps: bench md grows it and
/// times again instead of reporting the speed of a list missing pairs, and
/// the row it writes is from a list with room.
#[test]
fn bench_md_grows_an_overflowing_list_and_times_again() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bench_md_on_alanine_dipeptide(tmp.path())
        .env(mlff_md::force::pairs::ROOM_ENV, "3")
        .args(["--replicas", "2", "--steps", "2", "--warmup", "1"])
        .args(["--model", "models/ani1x_nl.pt"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches("enlarged it and timing again").count(),
        1,
        "one regrowth, then a list with room: {err}"
    );
    let report = json_in(tmp.path(), "md_");
    assert_eq!(report["rows"].as_array().unwrap().len(), 1);
}

/// A model that fails as the CUDA allocator does above 3 structures per
/// call (tests/data/oom_above_3.pt): forward_prepared fails after its
/// warm-up, the engine falls back to forward(), which fails for 8 members
/// and is retried in halving chunks (4, then 2) until it fits, with a
/// warning each time; the forces equal the Morse model's evaluated whole.
#[test]
fn out_of_memory_falls_back_and_halves_the_chunks() {
    let m = mlff_md::system::Molecule::load(&[root().join("systems/ethanol.pdb")]).unwrap();
    let state = BatchState::new(&m, 8, Device::Cpu, Kind::Double);
    let oom = TorchScriptModel::load(
        &root().join("tests/data/oom_above_3.pt"),
        Device::Cpu,
        Kind::Double,
    )
    .unwrap();
    // The warm-up calls of prepare succeed (the model fails from its third).
    oom.prepare_static(&state).unwrap();
    let out = oom.compute(&state).unwrap();
    assert_eq!(oom.chunk_size(), 2, "8 → 4 → 2 members per call");
    let reference = TorchScriptModel::load(
        &root().join("models/morse_test.pt"),
        Device::Cpu,
        Kind::Double,
    )
    .unwrap()
    .compute(&state)
    .unwrap();
    assert!(max_abs_diff(&out.energies, &reference.energies) < 1e-12);
    assert!(max_abs_diff(&out.forces, &reference.forces) < 1e-12);
    // Later calls go straight to the chunk size that worked.
    let again = oom.compute(&state).unwrap();
    assert!(max_abs_diff(&again.energies, &reference.energies) < 1e-12);

    // Through the binary: the run completes and says what happened.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("oom.toml");
    std::fs::write(
        &cfg,
        format!(
            "[system]\nstructure = \"{}\"\n[model]\npath = \"{}\"\ndtype = \"float64\"\ndevice = \"cpu\"\n\
[integrator]\nkind = \"verlet\"\ntimestep = 0.25\n[ensemble]\nmembers = 8\ninitial_temperature = 300.0\n\
[run]\nsteps = 10\n[output]\ndirectory = \"{}\"\n",
            root().join("systems/ethanol.pdb").display(),
            root().join("tests/data/oom_above_3.pt").display(),
            tmp.path().join("out").display()
        ),
    )
    .unwrap();
    // forward() on 8 members fails at set-up already; the run still goes through.
    let o = bin().args(["run", cfg.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(
            "evaluating 8 members at once ran out of device memory; evaluating in chunks of 4"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "evaluating 4 members at once ran out of device memory; evaluating in chunks of 2"
        ),
        "{err}"
    );
}

/// Evaluating in chunks (what happens when R does not fit in memory) gives
/// the same energies and forces as one call.
#[test]
fn chunked_evaluation_matches_one_call() {
    let model = TorchScriptModel::load(
        &root().join("models/morse_test.pt"),
        Device::Cpu,
        Kind::Double,
    )
    .unwrap();
    let m = mlff_md::system::Molecule::load(&[root().join("systems/ethanol.pdb")]).unwrap();
    let state = BatchState::new(&m, 7, Device::Cpu, Kind::Double);
    let whole = model.compute(&state).unwrap();
    model.set_chunk_size(3);
    let chunked = model.compute(&state).unwrap();
    assert!(max_abs_diff(&whole.energies, &chunked.energies) < 1e-10);
    assert!(max_abs_diff(&whole.forces, &chunked.forces) < 1e-10);
    assert_eq!(model.chunk_size(), 3);
}
