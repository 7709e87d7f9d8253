//! Reliability: exact continuation from checkpoints, clean stops, kill -9,
//! blow-up handling and write failures. Each test drives the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::root;
use mlff_md::io::checkpoint::{Checkpoint, CHECKPOINT_FILE};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlff-md"))
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "status {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Config text with absolute paths; `body` holds the [integrator] and the
/// optional sections, `output` the extra [output] keys.
fn config(dir: &Path, name: &str, out: &Path, body: &str, steps: u64, output: &str) -> PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
[model]
path = "{}"
dtype = "float64"
device = "cpu"
{body}
[run]
steps = {steps}
[output]
directory = "{}"
trajectory_format = "xtc"
trajectory_interval = 10
observables_interval = 5
{output}
"#,
        root().join("systems/ethanol.pdb").display(),
        root().join("models/morse_test.pt").display(),
        out.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const VERLET: &str = "[integrator]\nkind = \"verlet\"\ntimestep = 0.25\n[ensemble]\nmembers = 3\nseed = 1\ninitial_temperature = 300.0";
const LANGEVIN: &str = "[integrator]\nkind = \"langevin\"\ntimestep = 0.25\ntemperature = 300.0\nfriction = 5.0\n[ensemble]\nmembers = 3\nseed = 2";
const REMD: &str = "[integrator]\nkind = \"langevin\"\ntimestep = 0.25\nfriction = 5.0\n[replica_exchange]\ntemperatures = [300.0, 330.0, 370.0, 420.0]\nexchange_interval = 10\nscheme = \"all-pairs\"\nswap_attempts = 8\n[ensemble]\nseed = 3";

fn read_f64(h5: &hdf5::File, name: &str) -> Vec<f64> {
    h5.dataset(name).unwrap().read_raw::<f64>().unwrap()
}

fn read_i64(h5: &hdf5::File, name: &str) -> Vec<i64> {
    h5.dataset(name).unwrap().read_raw::<i64>().unwrap()
}

/// Everything a continued run must reproduce exactly.
fn fingerprint(out: &Path, rex: bool) -> (Vec<Vec<f64>>, Vec<Vec<i64>>) {
    let (ck, _) = Checkpoint::read_latest(out).unwrap();
    let h5 = hdf5::File::open(out.join("observables.h5")).unwrap();
    let mut floats = vec![ck.positions, ck.velocities, ck.forces, ck.energies];
    let mut ints = vec![read_i64(&h5, "observables/total_energy/step")];
    for name in [
        "potential_energy",
        "kinetic_energy",
        "total_energy",
        "temperature",
    ] {
        floats.push(read_f64(&h5, &format!("observables/{name}/value")));
    }
    if rex {
        floats.push(read_f64(&h5, "replica_exchange/potential_energy"));
        ints.push(read_i64(&h5, "replica_exchange/step"));
        ints.push(read_i64(&h5, "replica_exchange/state_of_replica"));
        ints.push(read_i64(&h5, "replica_exchange/accepts"));
        ints.push(read_i64(&h5, "replica_exchange/attempts"));
        ints.push(read_i64(&h5, "replica_exchange/occupancy"));
    }
    // Trajectory frames of member 0 (and the 300 K demultiplexed trajectory).
    let mut files = vec!["member_0000.xtc".to_string()];
    if rex {
        files.push("temperature_00_300.0K.xtc".into());
    }
    for f in files {
        let mut t = chemfiles::Trajectory::open(out.join(&f), 'r').unwrap();
        let mut frames = Vec::new();
        let mut steps = Vec::new();
        for i in 0..t.nsteps() {
            let mut fr = chemfiles::Frame::new();
            t.read_step(i, &mut fr).unwrap();
            frames.extend(fr.positions().iter().flatten().copied());
            steps.push(fr.step() as i64);
        }
        floats.push(frames);
        ints.push(steps);
    }
    (floats, ints)
}

fn assert_bit_identical(
    a: &(Vec<Vec<f64>>, Vec<Vec<i64>>),
    b: &(Vec<Vec<f64>>, Vec<Vec<i64>>),
    what: &str,
) {
    assert_eq!(a.1, b.1, "{what}: integer records differ");
    assert_eq!(a.0.len(), b.0.len());
    for (i, (x, y)) in a.0.iter().zip(&b.0).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: array {i} length");
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{what}: array {i} not bit-identical");
    }
}

/// 2N steps in one go == N steps, stop, resume to 2N: bit for bit, for
/// velocity Verlet, Langevin and replica exchange.
#[test]
fn continuation_is_bit_identical() {
    for (name, body, rex) in [
        ("verlet", VERLET, false),
        ("langevin", LANGEVIN, false),
        ("remd", REMD, true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let whole = tmp.path().join("whole");
        let split = tmp.path().join("split");
        let c1 = config(tmp.path(), "whole.toml", &whole, body, 120, "");
        let c2 = config(tmp.path(), "split.toml", &split, body, 120, "");
        ok(bin()
            .args(["run", c1.to_str().unwrap(), "--quiet"])
            .output()
            .unwrap());
        // Stop at 55 (between records and frames), then resume the rest.
        ok(bin()
            .args(["run", c2.to_str().unwrap(), "--quiet", "--steps", "55"])
            .output()
            .unwrap());
        ok(bin()
            .args(["run", c2.to_str().unwrap(), "--quiet", "--resume"])
            .output()
            .unwrap());
        assert_bit_identical(&fingerprint(&whole, rex), &fingerprint(&split, rex), name);
        // `resume DIR` can extend the run further.
        ok(bin()
            .args([
                "resume",
                split.to_str().unwrap(),
                "--quiet",
                "--steps",
                "150",
            ])
            .output()
            .unwrap());
        let (ck, _) = Checkpoint::read_latest(&split).unwrap();
        assert_eq!(ck.header.step, 150);
    }
}

/// Resuming refuses a changed setup, and a run asked for fewer steps than
/// the checkpoint holds.
#[test]
fn resume_refuses_a_different_setup() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let c = config(tmp.path(), "a.toml", &out, LANGEVIN, 20, "");
    ok(bin()
        .args(["run", c.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let changed = config(
        tmp.path(),
        "b.toml",
        &out,
        &LANGEVIN.replace("friction = 5.0", "friction = 2.0"),
        40,
        "",
    );
    let o = bin()
        .args(["run", changed.to_str().unwrap(), "--quiet", "--resume"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("config differs"));
    let o = bin()
        .args([
            "run",
            c.to_str().unwrap(),
            "--quiet",
            "--resume",
            "--seed",
            "9",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin()
        .args([
            "run",
            c.to_str().unwrap(),
            "--quiet",
            "--resume",
            "--steps",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("beyond"));
    // No checkpoint at all.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = bin()
        .args(["resume", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no checkpoint"));
}

/// SIGINT: the current step finishes, outputs are flushed, a checkpoint is
/// written, the exit status is 130; resuming completes the run exactly.
#[test]
fn sigint_stops_cleanly_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let steps = 4000;
    let c1 = config(
        tmp.path(),
        "w.toml",
        &whole,
        REMD,
        steps,
        "checkpoint_interval = 0",
    );
    let c2 = config(
        tmp.path(),
        "s.toml",
        &split,
        REMD,
        steps,
        "checkpoint_interval = 0",
    );
    ok(bin()
        .args(["run", c1.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let child = bin()
        .args(["run", c2.to_str().unwrap(), "--quiet"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let (ck, _) = Checkpoint::read_latest(&split).unwrap();
    if o.status.success() {
        // The machine was fast enough to finish first: nothing to test here.
        assert_eq!(ck.header.step, steps);
    } else {
        assert_eq!(o.status.code(), Some(130));
        assert!(ck.header.step < steps && ck.header.step > 0);
        ok(bin()
            .args(["resume", split.to_str().unwrap(), "--quiet"])
            .output()
            .unwrap());
    }
    assert_bit_identical(
        &fingerprint(&whole, true),
        &fingerprint(&split, true),
        "sigint",
    );
}

/// kill -9 at arbitrary moments: every output still opens, and after
/// resuming nothing is duplicated or missing and the result equals an
/// uninterrupted run.
#[test]
fn kill_minus_nine_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let steps = 3000;
    let extra = "checkpoint_interval = 35";
    let c1 = config(tmp.path(), "w.toml", &whole, REMD, steps, extra);
    let c2 = config(tmp.path(), "s.toml", &split, REMD, steps, extra);
    ok(bin()
        .args(["run", c1.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let mut first = true;
    for delay_ms in [900u64, 1300, 700] {
        let mut cmd = bin();
        if first {
            cmd.args(["run", c2.to_str().unwrap(), "--quiet"]);
        } else {
            cmd.args(["resume", split.to_str().unwrap(), "--quiet"]);
        }
        let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if split.join(CHECKPOINT_FILE).exists() {
            first = false;
        }
        // Every file still opens.
        if split.join("observables.h5").exists() {
            hdf5::File::open(split.join("observables.h5"))
                .expect("observables.h5 opens after kill -9");
        }
    }
    let mut cmd = bin();
    if first {
        cmd.args(["run", c2.to_str().unwrap(), "--quiet", "--overwrite"]);
    } else {
        cmd.args(["resume", split.to_str().unwrap(), "--quiet"]);
    }
    ok(cmd.output().unwrap());
    let h5 = hdf5::File::open(split.join("observables.h5")).unwrap();
    let expected: Vec<i64> = (0..=steps as i64).step_by(5).collect();
    assert_eq!(
        read_i64(&h5, "observables/temperature/step"),
        expected,
        "observables records"
    );
    let exchange_steps: Vec<i64> = (1..=(steps as i64) / 10).map(|i| i * 10).collect();
    assert_eq!(
        read_i64(&h5, "replica_exchange/step"),
        exchange_steps,
        "exchange records"
    );
    assert_bit_identical(
        &fingerprint(&whole, true),
        &fingerprint(&split, true),
        "kill -9",
    );
}

/// A member that "blows up" (here: exceeds a deliberately low temperature
/// limit) stops the run with a clear message naming it, or, with
/// on_blowup = "reinitialize", is restored and the run goes on.
#[test]
fn blowups_are_detected_and_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let stop_out = tmp.path().join("stop");
    let c = config(
        tmp.path(),
        "stop.toml",
        &stop_out,
        LANGEVIN,
        2000,
        "checkpoint_interval = 20",
    );
    let text = std::fs::read_to_string(&c)
        .unwrap()
        .replace("steps = 2000", "steps = 2000\nmax_temperature = 420.0");
    std::fs::write(&c, text).unwrap();
    let o = bin()
        .args(["run", c.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("blew up at step") && stderr.contains("member(s)"),
        "{stderr}"
    );
    // The checkpoint left behind is from before the blow-up and healthy.
    let (ck, _) = Checkpoint::read_latest(&stop_out).unwrap();
    assert!(ck.header.step < 2000);
    assert!(ck.positions.iter().all(|x| x.is_finite()));

    let re_out = tmp.path().join("reinit");
    let c = config(tmp.path(), "re.toml", &re_out, LANGEVIN, 600, "");
    let text = std::fs::read_to_string(&c).unwrap().replace(
        "steps = 600",
        "steps = 600\nmax_temperature = 420.0\non_blowup = \"reinitialize\"",
    );
    std::fs::write(&c, text).unwrap();
    let o = ok(bin().args(["run", c.to_str().unwrap()]).output().unwrap());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("reinitialised from step"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(re_out.join("summary.json")).unwrap())
            .unwrap();
    assert!(!summary["reinitialized"].as_array().unwrap().is_empty());
}

/// An output path that cannot be created is a clear error (no panic).
#[test]
fn unwritable_output_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("a_file");
    std::fs::write(&blocker, "x").unwrap();
    let c = config(tmp.path(), "c.toml", &blocker.join("out"), LANGEVIN, 10, "");
    let o = bin()
        .args(["run", c.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: output") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
