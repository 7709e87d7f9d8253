//! `[equilibration]`: the first steps of a run sample nothing (no replica
//! exchanges, no trajectory frames) while its observables are recorded, and
//! the stage continues from a checkpoint like any other part of the run.

mod common;

use std::path::Path;

use common::runs::*;

const EQUILIBRATION: &str = "[equilibration]\nsteps = 40";

/// Steps of the frames in a trajectory file.
fn frame_steps(path: &Path) -> Vec<usize> {
    let mut t = chemfiles::Trajectory::open(path, 'r').unwrap();
    (0..t.nsteps())
        .map(|i| {
            let mut f = chemfiles::Frame::new();
            t.read_step(i, &mut f).unwrap();
            f.step()
        })
        .collect()
}

/// Replica exchange of 4 rungs, an exchange attempt every 10 steps and a
/// frame every 10, over 100 steps: with 40 steps of equilibration the
/// exchanges are those of steps 50..100 and the frames start with the
/// state production starts from (step 40); the same run without it
/// exchanges from step 10 and writes frames from step 0. Observables cover
/// both stages, and the file says where production starts.
#[test]
fn equilibration_holds_exchanges_and_frames_until_production() {
    let tmp = tempfile::tempdir().unwrap();
    let (eq_out, plain_out) = (tmp.path().join("eq"), tmp.path().join("plain"));
    let body = format!("{REMD}\n{EQUILIBRATION}");
    let with = config(tmp.path(), "eq.toml", &eq_out, &body, 100, "");
    let without = config(tmp.path(), "plain.toml", &plain_out, REMD, 100, "");
    let log = stderr(&ok(bin()
        .args(["run", with.to_str().unwrap()])
        .output()
        .unwrap()));
    assert!(
        log.contains("equilibration: steps 0..40 without exchanges"),
        "{log}"
    );
    assert!(log.contains("equilibration done at step 40"), "{log}");
    ok(bin()
        .args(["run", without.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());

    let exchange_steps = |out: &Path| {
        let h5 = common::h5_open(out.join("observables.h5"));
        read_i64(&h5, "replica_exchange/step")
    };
    assert_eq!(exchange_steps(&eq_out), vec![50, 60, 70, 80, 90, 100]);
    assert_eq!(
        exchange_steps(&plain_out),
        (1..=10).map(|k| k * 10).collect::<Vec<i64>>()
    );

    for file in ["member_0000.xtc", "temperature_00_300.0K.xtc"] {
        assert_eq!(
            frame_steps(&eq_out.join(file)),
            vec![40, 50, 60, 70, 80, 90, 100],
            "{file}"
        );
        assert_eq!(
            frame_steps(&plain_out.join(file)),
            (0..=10).map(|k| k * 10).collect::<Vec<usize>>(),
            "{file}"
        );
    }

    let h5 = common::h5_open(eq_out.join("observables.h5"));
    let steps = read_i64(&h5, "observables/total_energy/step");
    assert_eq!(steps, (0..=20).map(|k| k * 5).collect::<Vec<i64>>());
    let start: hdf5::types::VarLenUnicode = h5
        .group("parameters")
        .unwrap()
        .attr("production_start_step")
        .unwrap()
        .read_scalar()
        .unwrap();
    assert_eq!(start.as_str(), "40");
}

/// 20 steps, then resumed to 100: the checkpoint falls inside the
/// equilibration, and the continued run equals the uninterrupted one bit
/// for bit (states, observables, exchange records, frames).
#[test]
fn a_run_continued_from_inside_its_equilibration_equals_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let body = format!("{REMD}\n{EQUILIBRATION}");
    let c1 = config(
        tmp.path(),
        "w.toml",
        &whole,
        &body,
        100,
        "checkpoint_interval = 20",
    );
    let c2 = config(
        tmp.path(),
        "s.toml",
        &split,
        &body,
        100,
        "checkpoint_interval = 20",
    );
    run_whole_and_split(&c1, &c2, 20, 100);
    assert_bit_identical(
        &fingerprint(&whole, true),
        &fingerprint(&split, true),
        "equilibration + resume",
    );
}
