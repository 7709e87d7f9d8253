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
}

#[test]
fn bench_md_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .current_dir(root())
        .args([
            "bench",
            "md",
            "--device",
            "cpu",
            "--replicas",
            "1,2",
            "--steps",
            "2",
            "--warmup",
            "1",
        ])
        .args([
            "--structures",
            "systems/peptides/alanine_dipeptide.pdb",
            "--out",
        ])
        .arg(tmp.path())
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
    assert!(rows[1]["engine_overhead_ratio"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["aggregate_ns_per_day"].as_f64().unwrap() > 0.0);
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
