//! Reliability: exact continuation from checkpoints, clean stops, kill -9,
//! blow-up handling and write failures. Each test drives the real binary.

mod common;

use std::path::Path;

use common::runs::*;
use mlff_md::io::checkpoint::Checkpoint;

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
        // Stop at 55 (between records and frames), then resume the rest.
        run_whole_and_split(&c1, &c2, 55, 120);
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
        &LANGEVIN.replace("temperature = 300.0", "temperature = 310.0"),
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

/// A reader that holds observables.h5 open (h5py in a notebook) holds
/// HDF5's lock: the resume says so instead of calling the file damaged,
/// and goes through once the reader lets go, with nothing lost.
#[test]
fn a_reader_holding_the_observables_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let c = config(tmp.path(), "a.toml", &out, LANGEVIN, 20, "");
    let resume = || {
        bin()
            .args(["run", c.to_str().unwrap(), "--quiet", "--resume"])
            .args(["--steps", "40"])
            .output()
            .unwrap()
    };
    ok(bin()
        .args(["run", c.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let observables = out.join("observables.h5");
    // The shared flock an h5py read-only open takes. std opens with
    // O_CLOEXEC, so no child of another test inherits it.
    let reader = std::fs::File::open(&observables).unwrap();
    reader.lock_shared().unwrap();
    let o = resume();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another process has the file open") && !err.contains("damaged"),
        "{err}"
    );
    drop(reader);
    ok(resume());
    let steps = read_i64(
        &common::h5_open(&observables),
        "observables/temperature/step",
    );
    assert_eq!(steps.first(), Some(&0));
    assert_eq!(steps.last(), Some(&40));
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
}

/// SIGINT (once, or twice at once): the current step finishes, outputs are
/// flushed, a checkpoint is written, the exit status is 130; resuming
/// completes the run exactly. The
/// signal arrives right after a known step (the fault switch), so the test
/// checks the same thing on a fast and a slow machine.
#[test]
fn sigint_stops_cleanly_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let steps = 400;
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
    // sigint2: SIGINT twice at once (`timeout -s INT` signals the child,
    // then its process group) is one request to stop, not a forced exit.
    for (signal, status) in [("sigint", 130), ("sigterm", 143), ("sigint2", 130)] {
        let _ = std::fs::remove_dir_all(&split);
        let o = run_with_fault(
            &["run", c2.to_str().unwrap(), "--quiet"],
            &format!("{signal}@137"),
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(status), "{err}");
        assert!(
            err.contains("after step 137") && err.contains("mlff-md resume"),
            "{err}"
        );
        let (ck, _) = Checkpoint::read_latest(&split).unwrap();
        assert_eq!(
            ck.header.step, 137,
            "the checkpoint is at the step the signal came after"
        );
        ok(bin()
            .args(["resume", split.to_str().unwrap(), "--quiet"])
            .output()
            .unwrap());
        assert_bit_identical(
            &fingerprint(&whole, true),
            &fingerprint(&split, true),
            signal,
        );
    }
}

/// kill -9 right after known steps (before that step's records, and right
/// after a checkpoint step, before its checkpoint): every output still
/// opens, the checkpoint left is the last one before the kill, and after
/// resuming nothing is duplicated or missing and the result equals an
/// uninterrupted run.
#[test]
fn kill_minus_nine_loses_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let steps = 300;
    let extra = "checkpoint_interval = 35";
    let c1 = config(tmp.path(), "w.toml", &whole, REMD, steps, extra);
    let c2 = config(tmp.path(), "s.toml", &split, REMD, steps, extra);
    ok(bin()
        .args(["run", c1.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    // (killed after step, checkpoint expected then)
    for (i, (kill_at, checkpoint_at)) in [(101u64, 70u64), (105, 70), (173, 140), (246, 245)]
        .into_iter()
        .enumerate()
    {
        let args: Vec<&str> = if i == 0 {
            vec!["run", c2.to_str().unwrap(), "--quiet"]
        } else {
            vec!["resume", split.to_str().unwrap(), "--quiet"]
        };
        let o = run_with_fault(&args, &format!("kill@{kill_at}"));
        assert_eq!(o.status.signal(), Some(9), "not killed: {}", stderr(&o));
        let (ck, _) = Checkpoint::read_latest(&split).unwrap();
        assert_eq!(
            ck.header.step, checkpoint_at,
            "after kill at step {kill_at}"
        );
        // The observables still open as HDF5 (h5_open panics otherwise).
        drop(common::h5_open(split.join("observables.h5")));
    }
    ok(bin()
        .args(["resume", split.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let h5 = common::h5_open(split.join("observables.h5"));
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
    // The killed processes' lock file is left behind and was taken over.
    assert!(split.join(mlff_md::io::lock::LOCK_FILE).exists());
}

/// The command in backquotes after `after` in a message, split into words.
fn quoted_command<'a>(message: &'a str, after: &str) -> Vec<&'a str> {
    let at = message
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in {message}"));
    let rest = &message[at..];
    let start = rest.find('`').expect("a quoted command") + 1;
    let len = rest[start..].find('`').expect("closing backquote");
    rest[start..start + len].split_whitespace().collect()
}

/// A 2000-step Langevin config whose members "blow up" by exceeding a
/// deliberately low temperature limit (420 K at 300 K).
fn hot_limited(dir: &Path, name: &str, out: &Path, output: &str) -> std::path::PathBuf {
    let c = config(dir, name, out, LANGEVIN, 2000, output);
    let text = std::fs::read_to_string(&c)
        .unwrap()
        .replace("steps = 2000", "steps = 2000\nmax_temperature = 420.0");
    std::fs::write(&c, text).unwrap();
    c
}

/// A member that "blows up" (here: exceeds a deliberately low temperature
/// limit) stops the run with a clear message naming it and commands that
/// work: continue from the last checkpoint with a smaller time step or with
/// reinitialisation, or, before the first checkpoint, start again. With
/// on_blowup = "reinitialize", the member is restored and the run goes on.
#[test]
fn blowups_are_detected_and_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let stop_out = tmp.path().join("stop");
    let c = hot_limited(
        tmp.path(),
        "stop.toml",
        &stop_out,
        "checkpoint_interval = 20",
    );
    let err = run_until_blowup(&c);
    assert!(
        err.contains("blew up at step") && err.contains("member(s)"),
        "{err}"
    );
    assert!(err.contains("K > max_temperature = 420"), "{err}");
    // The checkpoint left behind is from before the blow-up and healthy.
    let (ck, _) = Checkpoint::read_latest(&stop_out).unwrap();
    assert!(ck.header.step < 2000);
    assert!(ck.positions.iter().all(|x| x.is_finite()));
    let at = ck.header.step;
    assert!(
        err.contains(&format!("step {at}) is from before it")),
        "{err}"
    );

    // The smaller-time-step command is accepted (it may blow up again, at
    // this deliberately low limit: exit 1, never 2), and it continues the
    // clock from the checkpoint's time at the new time step.
    let cmd = quoted_command(&err, "smaller time step");
    assert_eq!(&cmd[..3], ["mlff-md", "resume", stop_out.to_str().unwrap()]);
    assert_eq!(&cmd[3..], ["--timestep", "0.125"]);
    let o = bin().args(&cmd[1..]).arg("--quiet").output().unwrap();
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
    let h5 = common::h5_open(stop_out.join("observables.h5"));
    let steps = read_i64(&h5, "observables/temperature/step");
    let times = read_f64(&h5, "observables/temperature/time");
    for (s, t) in steps.iter().zip(&times) {
        let s = *s as u64;
        let expected = if s <= at {
            s as f64 * 0.25
        } else {
            at as f64 * 0.25 + (s - at) as f64 * 0.125
        };
        assert_eq!(*t, expected, "time of step {s}");
    }
    drop(h5);

    // The reinitialise command finishes the run.
    let cmd = quoted_command(&err, "by reinitialising");
    assert_eq!(&cmd[3..], ["--on-blowup", "reinitialize"]);
    let o = ok(bin().args(&cmd[1..]).output().unwrap());
    assert!(
        stderr(&o).contains("reinitialised from step"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        Checkpoint::read_latest(&stop_out).unwrap().0.header.step,
        2000
    );

    // Before the first checkpoint there is none to name: start again.
    let early_out = tmp.path().join("early");
    let c = hot_limited(
        tmp.path(),
        "early.toml",
        &early_out,
        "checkpoint_interval = 0",
    );
    let err = run_until_blowup(&c);
    assert!(
        err.contains("No checkpoint was written") && !err.contains("checkpoint.bin"),
        "{err}"
    );
    let cmd = quoted_command(&err, "with reinitialisation");
    assert_eq!(cmd[1], "run");
    ok(bin().args(&cmd[1..]).arg("--quiet").output().unwrap());
    assert_eq!(
        Checkpoint::read_latest(&early_out).unwrap().0.header.step,
        2000
    );

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
    // A bad output path is bad input (exit 2), found before any step.
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: output") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // A directory that cannot be created (here under /proc, which even
    // root cannot write) is also exit 2.
    let c = config(
        tmp.path(),
        "p.toml",
        Path::new("/proc/mlff-md-test/out"),
        LANGEVIN,
        10,
        "",
    );
    let o = bin()
        .args(["run", c.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot create the output directory"),
        "{stderr}"
    );
}
