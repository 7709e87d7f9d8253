//! Continuing runs: bit-identical with every shipped model kind, a changed
//! model file refused, the step target remembered, a finished run left
//! alone, one process per output directory, and a damaged checkpoint
//! explained.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::root;
use common::runs::*;
use mlff_md::io::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use mlff_md::io::lock::LOCK_FILE;

/// The static-shape ANI export prepares its batch once per process; its
/// first call runs TorchScript's profiling executor, whose forces differ in
/// the last bits from every later call's. A resumed process must still
/// continue exactly (replica exchange: energies decide swaps, and the
/// thermostat temperatures must match to the bit).
#[test]
fn static_model_continuation_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("models/ani1x_static.pt");
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let m = (model.as_path(), "float32");
    let c1 = config_with_model(tmp.path(), "w.toml", &whole, m, REMD, 120, "");
    let c2 = config_with_model(tmp.path(), "s.toml", &split, m, REMD, 120, "");
    run_whole_and_split(&c1, &c2, 55, 120);
    let h5 = common::h5_open(split.join("observables.h5"));
    let thermostat = read_f64(&h5, "observables/thermostat_temperature/value");
    let h5w = common::h5_open(whole.join("observables.h5"));
    let thermostat_w = read_f64(&h5w, "observables/thermostat_temperature/value");
    assert_eq!(
        thermostat.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        thermostat_w.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "thermostat temperatures"
    );
    assert_bit_identical(
        &fingerprint(&whole, true),
        &fingerprint(&split, true),
        "ani1x_static",
    );
}

/// A neighbour-list (v2) model on a small molecule: its rows hold every
/// atom of the member in place (whole rows, recorded in the checkpoint's
/// list shape), and a continued run rebuilds that list and goes on exactly.
#[test]
fn whole_row_list_continuation_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("models/ani1x_nl.pt");
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let m = (model.as_path(), "float32");
    let c1 = config_with_model(tmp.path(), "w.toml", &whole, m, LANGEVIN, 40, "");
    let c2 = config_with_model(tmp.path(), "s.toml", &split, m, LANGEVIN, 40, "");
    run_whole_and_split(&c1, &c2, 15, 40);
    let (ck, _) = Checkpoint::read_latest(&split).unwrap();
    let shape = ck.header.neighbor_list.expect("a v2 model's list shape");
    assert!(shape.rows_whole(), "{shape:?}");
    assert_bit_identical(
        &fingerprint(&whole, false),
        &fingerprint(&split, false),
        "ani1x_nl, whole rows",
    );
}

/// A replica-exchange checkpoint written before moves were plug-ins (the
/// exchange state in its own header field) continues exactly.
#[test]
fn a_checkpoint_from_before_moves_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let c1 = config(tmp.path(), "w.toml", &whole, REMD, 120, "");
    let c2 = config(tmp.path(), "s.toml", &split, REMD, 120, "");
    run_whole_and_split_with(&c1, &c2, 55, 120, || {
        rewrite_checkpoint_as_before_moves(&split)
    });
    let (ck, _) = Checkpoint::read_latest(&split).unwrap();
    assert!(
        ck.header.replica_exchange.is_none() && ck.header.moves.contains_key("replica_exchange")
    );
    assert_bit_identical(
        &fingerprint(&whole, true),
        &fingerprint(&split, true),
        "legacy checkpoint",
    );
}

/// A model file replaced at the same path is refused on resume (exit 2,
/// naming both hashes), unless --allow-model-change, which records the new
/// hash.
#[test]
fn changed_model_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.pt");
    std::fs::copy(root().join("models/morse_test.pt"), &model).unwrap();
    let out = tmp.path().join("out");
    let c = config_with_model(
        tmp.path(),
        "c.toml",
        &out,
        (&model, "float64"),
        LANGEVIN,
        20,
        "",
    );
    ok(bin()
        .args(["run", c.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let sha = |p: &Path| {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(p).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let old = sha(&model);
    std::fs::copy(root().join("models/ani1x.pt"), &model).unwrap();
    let new = sha(&model);
    for args in [
        vec!["run", c.to_str().unwrap(), "--resume", "--steps", "40"],
        vec!["resume", out.to_str().unwrap(), "--steps", "40"],
    ] {
        let o = bin().args(&args).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&old) && err.contains(&new), "{err}");
        assert!(err.contains("--allow-model-change"), "{err}");
    }
    let (ck, _) = Checkpoint::read_latest(&out).unwrap();
    assert_eq!(ck.header.step, 20, "a refused resume changes nothing");
    let o = ok(bin()
        .args([
            "resume",
            out.to_str().unwrap(),
            "--steps",
            "40",
            "--allow-model-change",
        ])
        .output()
        .unwrap());
    assert!(stderr(&o).contains("changed model file"), "{}", stderr(&o));
    let h5 = common::h5_open(out.join("observables.h5"));
    let stored: hdf5::types::VarLenUnicode = h5
        .group("parameters")
        .unwrap()
        .attr("model_sha256")
        .unwrap()
        .read_scalar()
        .unwrap();
    assert_eq!(stored.as_str(), new);
    assert_eq!(
        Checkpoint::read_latest(&out).unwrap().0.header.model_sha256,
        Some(new)
    );
}

/// `run --steps N`, interrupted, then a plain `resume DIR` goes to N (not
/// the config's steps); a finished run resumed again is "already complete"
/// and nothing in its directory changes.
#[test]
fn resume_keeps_the_target_and_leaves_a_finished_run_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let c = config(
        tmp.path(),
        "c.toml",
        &out,
        LANGEVIN,
        60,
        "checkpoint_interval = 20",
    );
    let o = run_with_fault(
        &["run", c.to_str().unwrap(), "--quiet", "--steps", "100"],
        "sigterm@45",
    );
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    ok(bin()
        .args(["resume", out.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let (ck, _) = Checkpoint::read_latest(&out).unwrap();
    assert_eq!(
        ck.header.step, 100,
        "resume goes to the --steps the run was started with"
    );
    assert_eq!(ck.header.target_steps, Some(100));

    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != LOCK_FILE)
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&out);
    for args in [
        vec!["resume", out.to_str().unwrap()],
        vec!["run", c.to_str().unwrap(), "--resume"],
    ] {
        let o = ok(bin().args(&args).output().unwrap());
        assert!(
            stderr(&o).contains("already complete at step 100"),
            "{}",
            stderr(&o)
        );
        assert!(
            snapshot(&out) == before,
            "{args:?} changed the finished run's files"
        );
    }
    // Extending is still possible, and an edited [run] steps counts as asking.
    ok(bin()
        .args(["resume", out.to_str().unwrap(), "--quiet", "--steps", "120"])
        .output()
        .unwrap());
    let edited = std::fs::read_to_string(&c)
        .unwrap()
        .replace("steps = 60", "steps = 140");
    std::fs::write(&c, edited).unwrap();
    ok(bin()
        .args(["run", c.to_str().unwrap(), "--quiet", "--resume"])
        .output()
        .unwrap());
    assert_eq!(Checkpoint::read_latest(&out).unwrap().0.header.step, 140);
}

/// Two processes, one directory: while a run holds it, a second `run
/// --overwrite`, a `resume` and a `minimize` into it are refused (exit 2,
/// naming the pid), and the first run's files are untouched.
#[test]
fn a_second_process_cannot_take_a_running_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let c = config(
        tmp.path(),
        "c.toml",
        &out,
        LANGEVIN,
        100_000_000,
        "checkpoint_interval = 50",
    );
    let mut first = bin()
        .args(["run", c.to_str().unwrap(), "--quiet"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    // Wait until it holds the lock and has written a checkpoint.
    let t0 = Instant::now();
    while !(out.join(CHECKPOINT_FILE).exists()
        && std::fs::read_to_string(out.join(LOCK_FILE))
            .is_ok_and(|t| t.starts_with(&format!("pid {pid}\n"))))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the first run never started"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for args in [
        vec!["run", c.to_str().unwrap(), "--overwrite", "--quiet"],
        vec!["resume", out.to_str().unwrap(), "--quiet"],
        vec!["minimize", c.to_str().unwrap(), "--quiet"],
    ] {
        let o = bin().args(&args).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("process {pid}")) && err.contains("in use"),
            "{err}"
        );
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run must go on"
    );
    assert!(out.join("observables.h5").exists() && out.join("config.toml").exists());
    // Stop it cleanly; its checkpoint is whole.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let o = first.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (ck, _) = Checkpoint::read_latest(&out).unwrap();
    assert!(ck.header.step > 0);
    // Once it has ended, the directory is free again.
    ok(bin()
        .args([
            "resume",
            out.to_str().unwrap(),
            "--quiet",
            "--steps",
            &(ck.header.step + 10).to_string(),
        ])
        .output()
        .unwrap());
}

/// A damaged newest checkpoint: the resume says why it was skipped and how
/// many steps that costs, and the result is still exact.
#[test]
fn a_damaged_newest_checkpoint_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let extra = "checkpoint_interval = 20";
    let c1 = config(tmp.path(), "w.toml", &whole, LANGEVIN, 100, extra);
    let c2 = config(tmp.path(), "s.toml", &split, LANGEVIN, 100, extra);
    ok(bin()
        .args(["run", c1.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let o = run_with_fault(&["run", c2.to_str().unwrap(), "--quiet"], "kill@65");
    assert!(!o.status.success());
    // Newest at 60, previous at 40: damage the newest's arrays.
    let path = split.join(CHECKPOINT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let o = ok(bin()
        .args(["resume", split.to_str().unwrap()])
        .output()
        .unwrap());
    let err = stderr(&o);
    assert!(
        err.contains("checksum mismatch")
            && err.contains("resuming from checkpoint.prev.bin at step 40")
            && err.contains("it was at step 60, so the 20 steps after step 40 are run again"),
        "{err}"
    );
    assert_bit_identical(
        &fingerprint(&whole, false),
        &fingerprint(&split, false),
        "damaged",
    );
}
