//! AOTInductor packages (.pt2): what the engine refuses, by exit status and
//! message. A real package is compiled and run against its TorchScript
//! model by python/check_pt2.py (make test), since compiling one needs
//! torch._inductor and a C++ compiler.

mod common;

use std::path::Path;

use common::runs::{bin, config_with_model, run_exiting, stderr};

/// `mlff-md run` of 5 Langevin steps of ethanol with `model`: it must exit
/// 2 without a panic; returns its stderr.
fn refused_run(dir: &Path, model: &Path) -> String {
    let integrator = "[integrator]\nkind = \"langevin\"\ntimestep = 0.5\ntemperature = 300.0\n";
    let out = dir.join("out");
    let cfg = config_with_model(dir, "run.toml", &out, (model, "float32"), integrator, 5, "");
    run_exiting(&cfg, 2)
}

#[test]
fn a_file_that_is_not_a_package_is_refused_by_run_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("not_a_package.pt2");
    std::fs::write(&fake, b"PK\x03\x04 not a zip archive").unwrap();

    let err = refused_run(dir.path(), &fake);
    assert!(
        err.contains("not_a_package.pt2") && err.contains("is not a loadable AOTInductor package"),
        "{err}"
    );

    let o = bin()
        .args(["inspect", fake.to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is an AOTInductor package (.pt2)") && err.contains("export_pt2.py"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn a_missing_package_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused_run(dir.path(), &dir.path().join("missing.pt2"));
    assert!(
        err.contains("missing.pt2") && err.contains("no such file"),
        "{err}"
    );
}
