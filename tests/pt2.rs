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

/// `mlff-md compile` of a config with `model` (ethanol, 2 members, on the
/// CPU) and extra arguments, with an empty package cache: its exit status
/// and stderr.
fn compile(dir: &Path, model: &Path, dtype: &str, args: &[&str]) -> (Option<i32>, String) {
    let integrator = "[integrator]\nkind = \"langevin\"\ntimestep = 0.5\ntemperature = 300.0\n[ensemble]\nmembers = 2\n";
    let out = dir.join("out");
    let cfg = config_with_model(dir, "c.toml", &out, (model, dtype), integrator, 5, "");
    let o = bin()
        .arg("compile")
        .arg(&cfg)
        .args(args)
        .env("MLFF_MD_CACHE", dir.join("cache"))
        .output()
        .unwrap();
    (o.status.code(), stderr(&o))
}

#[test]
fn compile_refuses_what_no_package_can_serve() {
    let dir = tempfile::tempdir().unwrap();
    let root = common::root();
    // A model of positions with no prepare()/forward_prepared().
    let (code, err) = compile(
        dir.path(),
        &root.join("models/morse_test.pt"),
        "float32",
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("morse_test.pt") && err.contains("only static-shape models"),
        "{err}"
    );
    // Packages take float32 positions.
    let static_model = root.join("models/ani1x_static.pt");
    let (code, err) = compile(dir.path(), &static_model, "float64", &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("float32"), "{err}");
    // A Python that cannot be started is named, with what to do.
    let (code, err) = compile(
        dir.path(),
        &static_model,
        "float32",
        &["--python", "/nonexistent/python3"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot start /nonexistent/python3") && err.contains("MLFF_MD_PYTHON"),
        "{err}"
    );
    // Nothing half-written is left in the cache.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_failing_exporter_fails_compile_and_leaves_no_package() {
    let dir = tempfile::tempdir().unwrap();
    // A "Python" that exits 3 whatever it is asked.
    let fake = dir.path().join("fake_python");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'exporter: no torch here' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = common::root().join("models/ani1x_static.pt");
    let (code, err) = compile(
        dir.path(),
        &model,
        "float32",
        &["--python", fake.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("exporter: no torch here")
            && err.contains("compiling failed")
            && err.contains("exit status: 3"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
