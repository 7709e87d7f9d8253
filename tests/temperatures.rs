//! [ensemble] temperatures: members split into groups, each thermostatted
//! at its own temperature in one batch (a temperature scan without
//! exchanges), recorded as thermostat_temperature; bad combinations refused.

mod common;

use common::runs::*;
use common::*;

/// Ethanol (Morse test model), Langevin, members at 150 K and 600 K. The
/// time step is 0.25 fs: at 0.5 fs the toy model's hot members reached
/// 5,000 K in single frames (integration error near 600 K), and whether the
/// 600 K group's mean stayed within its error then depended on the CPU's
/// rounding (it failed on one machine, 685 ± 20 K, and passed on others).
fn scan_config(
    dir: &std::path::Path,
    ensemble: &str,
    integrator_extra: &str,
) -> std::path::PathBuf {
    let body = format!(
        "[integrator]\nkind = \"langevin\"\ntimestep = 0.25\nfriction = 20.0\n{integrator_extra}\n[ensemble]\nseed = 3\n{ensemble}\n"
    );
    config(dir, "scan.toml", &dir.join("out"), &body, 3000, "")
}

/// Each group's mean kinetic temperature is its thermostat's within 6
/// standard errors (each member's time average is one sample); a run at one
/// temperature would be off by far more for one of the two groups.
#[test]
fn each_member_group_samples_its_own_temperature() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = scan_config(
        tmp.path(),
        "temperatures = [150.0, 600.0]\nmembers = 32",
        "",
    );
    ok(bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let h5 = common::h5_open(tmp.path().join("out/observables.h5"));
    let step = read_i64(&h5, "observables/temperature/step");
    let t = read_f64(&h5, "observables/temperature/value");
    let set = read_f64(&h5, "observables/thermostat_temperature/value");
    let members = 32;
    assert_eq!(t.len(), step.len() * members);
    for r in 0..members {
        let expected = if r < 16 { 150.0 } else { 600.0 };
        assert!(
            (0..step.len()).all(|i| set[i * members + r] == expected),
            "member {r}: thermostat temperature {} recorded, {expected} set",
            set[r]
        );
    }
    // After 150 fs of equilibration (friction 20/ps: 50 fs relaxation).
    let first = step.iter().position(|&s| s >= 600).unwrap();
    for (group, target) in [(0..16, 150.0), (16..32, 600.0)] {
        let means: Vec<f64> = group
            .map(|r| {
                (first..step.len()).map(|i| t[i * members + r]).sum::<f64>()
                    / (step.len() - first) as f64
            })
            .collect();
        let (m, se) = (mean(&means), standard_error(&means));
        eprintln!("group at {target} K: <T> = {m:.2} ± {se:.2} K");
        assert!(se < 0.03 * target, "standard error {se} K too wide");
        assert!(
            (m - target).abs() < 6.0 * se,
            "<T> = {m} ± {se} K, thermostat at {target} K"
        );
    }
}

#[test]
fn bad_temperature_groups_are_refused() {
    for (ensemble, integrator, expected) in [
        (
            "temperatures = [300.0, 600.0]\nmembers = 3",
            "",
            "3 members cannot be split evenly over 2 temperatures",
        ),
        (
            "temperatures = [300.0, 600.0]",
            "temperature = 300.0",
            "give either [integrator] temperature",
        ),
        (
            "temperatures = [300.0, -1.0]",
            "",
            "expected positive temperatures",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = scan_config(tmp.path(), ensemble, integrator);
        let o = bin()
            .args(["run", cfg.to_str().unwrap(), "--quiet"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{}", stderr(&o));
        assert!(stderr(&o).contains("temperatures"), "{}", stderr(&o));
    }
}
