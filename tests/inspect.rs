//! `mlff-md inspect MODEL`: the report for the shipped models, checked
//! against facts from elsewhere (models/SHA256SUMS, torchani's energy of
//! the probe molecule), and exit 2 with the reason for every file a run
//! could not use.

mod common;

use std::process::{Command, Output};

use common::root;

fn inspect(model: &str, json: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlff-md"));
    c.arg("inspect")
        .arg(root().join(model))
        .args(["--device", "cpu"]);
    if json {
        c.arg("--json");
    }
    c.output().expect("mlff-md starts")
}

fn report(model: &str) -> serde_json::Value {
    let o = inspect(model, true);
    assert!(
        o.status.success(),
        "{model}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

/// The SHA-256 recorded for `name` in models/SHA256SUMS (written by the
/// export, not by the engine).
fn recorded_sha256(name: &str) -> String {
    let sums = std::fs::read_to_string(root().join("models/SHA256SUMS")).unwrap();
    sums.lines()
        .find_map(|l| {
            let (hash, file) = l.split_once("  ")?;
            (file.trim() == name).then(|| hash.to_string())
        })
        .unwrap_or_else(|| panic!("{name} not in models/SHA256SUMS"))
}

/// torchani 2.9's ANI-1x in float64 on systems/molecules/glycine.xyz (the
/// probe): E = −7737.5399920764 eV, max |F| = 1.5165802 eV/Å. The shipped
/// exports run their networks in float32.
const GLYCINE_ANI1X_EV: f64 = -7_737.539_992_076_4;
const GLYCINE_ANI1X_MAX_FORCE: f64 = 1.516_580_2;

#[test]
fn inspect_reports_the_contract_and_cost_of_the_shipped_models() {
    let nl = report("models/ani1x_nl.pt");
    assert_eq!(nl["contract"], 2);
    assert_eq!(nl["sha256"], recorded_sha256("ani1x_nl.pt"));
    assert_eq!(nl["cutoffs"], serde_json::json!([5.2, 3.5]));
    assert_eq!(nl["elements"], serde_json::json!(["H", "C", "N", "O"]));
    assert_eq!(nl["periodic"], true);
    assert_eq!(nl["capturable"], true);
    let methods: Vec<&str> = nl["entry_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in [
        "cutoffs",
        "forward_pairs",
        "prepare",
        "forward_pairs_prepared",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    assert!(!methods.contains(&"forward"), "{methods:?}");

    let dynamic = report("models/ani1x.pt");
    assert_eq!(dynamic["contract"], 1);
    assert_eq!(dynamic["sha256"], recorded_sha256("ani1x.pt"));
    assert_eq!(dynamic["periodic"], false);
    assert_eq!(dynamic["capturable"], false);
    assert!(
        dynamic["not_capturable_because"]
            .as_str()
            .unwrap()
            .contains("prepare()"),
        "{dynamic}"
    );
    assert_eq!(dynamic["cutoffs"], serde_json::Value::Null);

    // A gas-phase v2 model (long-range Coulomb) says it is not periodic.
    let aimnet2 = report("models/aimnet2_wb97m_nl.pt");
    assert_eq!(aimnet2["contract"], 2);
    assert_eq!(aimnet2["cutoffs"], serde_json::json!([40.0, 15.0, 5.0]));
    assert_eq!(aimnet2["periodic"], false);
    assert_eq!(aimnet2["capturable"], true);

    let stat = report("models/ani1x_static.pt");
    assert_eq!(stat["contract"], 1);
    assert_eq!(stat["capturable"], true);

    // Three exports of one model, evaluated through the engine's three
    // paths (neighbour list, static, dynamic), against torchani.
    for r in [&nl, &dynamic, &stat] {
        let e = r["probe_energy_ev"].as_f64().unwrap();
        let f = r["probe_max_force_ev_per_a"].as_f64().unwrap();
        assert!(
            ((e - GLYCINE_ANI1X_EV) / GLYCINE_ANI1X_EV).abs() < 1e-7,
            "{}: {e} eV",
            r["path"]
        );
        assert!(
            (f - GLYCINE_ANI1X_MAX_FORCE).abs() < 1e-4,
            "{}: {f}",
            r["path"]
        );
        assert!(r["call_ms"].as_f64().unwrap() > 0.0);
    }

    let ani2xt = report("models/ani2xt_nl.pt");
    assert_eq!(ani2xt["sha256"], recorded_sha256("ani2xt_nl.pt"));
    assert_eq!(
        ani2xt["elements"],
        serde_json::json!(["H", "C", "N", "O", "F", "S", "Cl"])
    );
    assert_eq!(ani2xt["cutoffs"], serde_json::json!([5.2, 3.5]));

    let text = String::from_utf8(inspect("models/ani1x_nl.pt", false).stdout).unwrap();
    for line in [
        "contract   v2",
        "cutoffs    5.2 Å, 3.5 Å",
        "timing     forward + backward",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

#[test]
fn inspect_refuses_files_a_run_could_not_use() {
    for (file, reason) in [
        (
            "tests/data/not_torchscript.pt",
            "not a loadable TorchScript module",
        ),
        (
            "tests/data/int_energy.pt",
            "expected a floating-point tensor",
        ),
        ("tests/data/no_grad_energy.pt", "do not depend on positions"),
        ("tests/data/bad_shape.pt", "expected energies[n_structures]"),
        (
            "tests/data/bad_signature.pt",
            "forward(atomic_numbers, positions, batch) failed",
        ),
        ("tests/data/nan_energy.pt", "non-finite energy"),
        ("tests/data/no_such_model.pt", "file not found"),
        ("models", "is a directory"),
    ] {
        let o = inspect(file, false);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(file) && err.contains(reason), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        assert!(o.stdout.is_empty(), "{file}: printed a report");
    }
}
