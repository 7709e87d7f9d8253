//! Periodic systems through the command line: a Lennard-Jones fluid in a
//! cell from [system] cell (or the file's, with periodic = true) starts at
//! OpenMM's energy, writes its cell into every frame and the topology,
//! continues bit for bit, and bad periodic input is refused (exit 2).

mod common;

use std::path::{Path, PathBuf};

use common::root;
use common::runs::*;

/// OpenMM's energy of tests/data/lj_fluid.xyz in the 23.2 Å cell (member 0
/// of tests/data/lj_openmm_reference.json).
fn openmm_energy() -> f64 {
    let text = std::fs::read_to_string(root().join("tests/data/lj_openmm_reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["members"][0]["energy_ev"].as_f64().unwrap()
}

fn lj_config(dir: &Path, name: &str, out: &Path, system_extra: &str, model_extra: &str) -> PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
{system_extra}
[model]
kind = "lennard-jones"
epsilon = 0.0104
sigma = 3.4
{model_extra}
device = "cpu"
[integrator]
kind = "verlet"
timestep = 4.0
[ensemble]
members = 2
seed = 3
initial_temperature = 100.0
[run]
steps = 40
[output]
directory = "{}"
trajectory_interval = 10
observables_interval = 5
checkpoint_interval = 20
"#,
        root().join("tests/data/lj_fluid.xyz").display(),
        out.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_periodic_lennard_jones_fluid_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let cell = "cell = [23.2, 23.2, 23.2]";
    let cutoff = "cutoff = 8.5";
    let c1 = lj_config(tmp.path(), "w.toml", &whole, cell, cutoff);
    let c2 = lj_config(tmp.path(), "s.toml", &split, cell, cutoff);
    run_whole_and_split(&c1, &c2, 20, 40);
    assert_bit_identical(
        &fingerprint(&whole, false),
        &fingerprint(&split, false),
        "periodic LJ",
    );
    // A checkpoint written before neighbour-list skins (no skin, no stored
    // rows in its list shape) continues bit for bit too.
    let legacy = tmp.path().join("legacy");
    let c3 = lj_config(tmp.path(), "l.toml", &legacy, cell, cutoff);
    run_split(&c3, 20, 40, || {
        use mlff_md::io::checkpoint::Checkpoint;
        let (mut ck, _) = Checkpoint::read_latest(&legacy).unwrap();
        let shape = ck.header.neighbor_list.as_mut().unwrap();
        assert_eq!(shape.skin, mlff_md::neighbors::DEFAULT_SKIN);
        (shape.skin, shape.outer_capacity) = (0.0, 0);
        ck.write_atomic(&legacy).unwrap();
    });
    assert_bit_identical(
        &fingerprint(&whole, false),
        &fingerprint(&legacy, false),
        "periodic LJ, resumed from a checkpoint without a skin",
    );

    let h5 = common::h5_open(whole.join("observables.h5"));
    let epot = read_f64(&h5, "observables/potential_energy/value");
    let want = openmm_energy();
    assert!(
        (epot[0] - want).abs() < 1e-9 * want.abs(),
        "{} vs OpenMM {want}",
        epot[0]
    );
    assert!((epot[1] - want).abs() < 1e-9 * want.abs());
    // Each member's energy is conserved to the truncation's jumps (a pair
    // crossing the cutoff changes E by V(r_c) ≈ −1.7e-4 eV): a few meV of
    // ~3 eV kinetic energy over 40 steps. Values are [records, members].
    let etot = read_f64(&h5, "observables/total_energy/value");
    let ekin = read_f64(&h5, "observables/kinetic_energy/value");
    for (m, ekin0) in ekin[..2].iter().enumerate() {
        let series: Vec<f64> = etot.iter().skip(m).step_by(2).copied().collect();
        let drift = series
            .iter()
            .map(|e| (e - series[0]).abs())
            .fold(0.0, f64::max);
        assert!(
            drift < 0.005 * ekin0,
            "member {m}: total energy moved by {drift} eV (E_kin {ekin0})"
        );
    }

    // Every frame and the topology carry the cell.
    let mut t = chemfiles::Trajectory::open(whole.join("member_0000.xtc"), 'r').unwrap();
    assert_eq!(t.nsteps(), 5);
    for i in 0..t.nsteps() {
        let mut f = chemfiles::Frame::new();
        t.read_step(i, &mut f).unwrap();
        for l in f.cell().lengths() {
            assert!(
                (l - 23.2).abs() < 1e-4,
                "frame {i}: cell {:?}",
                f.cell().lengths()
            );
        }
    }
    // Frames are wrapped (the default [output] wrap = "molecules"): every
    // argon atom is its own molecule, so every atom lies in the cell (XTC
    // keeps 1e-3 nm).
    let mut t = chemfiles::Trajectory::open(whole.join("member_0001.xtc"), 'r').unwrap();
    let mut f = chemfiles::Frame::new();
    t.read_step(4, &mut f).unwrap();
    let outside = f
        .positions()
        .iter()
        .flatten()
        .filter(|&&x| !(-0.01..23.21).contains(&x))
        .count();
    assert_eq!(
        outside, 0,
        "wrapped frame has {outside} coordinates outside the cell"
    );
    let topology = std::fs::read_to_string(whole.join("topology.pdb")).unwrap();
    assert!(
        topology
            .lines()
            .any(|l| l.starts_with("CRYST1   23.200   23.200   23.200  90.00  90.00  90.00")),
        "{}",
        &topology[..200]
    );
}

/// `periodic = true` takes the cell from the file (here a PDB with CRYST1
/// written by chemfiles): the same energy as the explicit cell.
#[test]
fn the_files_cell_is_used_with_periodic_true() {
    let tmp = tempfile::tempdir().unwrap();
    let pdb = tmp.path().join("fluid.pdb");
    {
        let mut t =
            chemfiles::Trajectory::open(root().join("tests/data/lj_fluid.xyz"), 'r').unwrap();
        let mut f = chemfiles::Frame::new();
        t.read(&mut f).unwrap();
        f.set_cell(&chemfiles::UnitCell::new([23.2, 23.2, 23.2]));
        chemfiles::Trajectory::open(&pdb, 'w')
            .unwrap()
            .write(&f)
            .unwrap();
    }
    let text = std::fs::read_to_string(lj_config(
        tmp.path(),
        "p.toml",
        &tmp.path().join("o"),
        "periodic = true",
        "cutoff = 8.5",
    ))
    .unwrap()
    .replace(
        &root().join("tests/data/lj_fluid.xyz").display().to_string(),
        &pdb.display().to_string(),
    );
    let cfg = tmp.path().join("p.toml");
    std::fs::write(&cfg, text).unwrap();
    let o = ok(bin()
        .args(["validate", cfg.to_str().unwrap()])
        .output()
        .unwrap());
    let stdout = String::from_utf8_lossy(&o.stdout);
    // PDB keeps 3 decimals of the positions: the energy agrees to ~1e-4 eV.
    let e: f64 = stdout
        .split("initial energies (eV): ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((e - openmm_energy()).abs() < 1e-2, "{stdout}");
    assert!(
        stdout.contains("Lennard-Jones") && stdout.contains("cutoff 8.5 Å (engine neighbour list)"),
        "{stdout}"
    );
}

#[test]
fn bad_periodic_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let torchscript = format!(
        "[system]\nstructure = \"{}\"\ncell = [30.0, 30.0, 30.0]\n[model]\npath = \"{}\"\ndevice = \"cpu\"\n[integrator]\nkind = \"verlet\"\ntimestep = 0.5\n[ensemble]\ninitial_temperature = 300.0\n[run]\nsteps = 10\n[output]\ndirectory = \"{}\"\n",
        root().join("systems/ethanol.xyz").display(),
        root().join("models/morse_test.pt").display(),
        out.display()
    );
    let cases: Vec<(String, &str)> = vec![
        (
            std::fs::read_to_string(lj_config(
                tmp.path(),
                "a.toml",
                &out,
                "cell = [8.0, 23.2, 23.2]",
                "cutoff = 8.5",
            ))
            .unwrap(),
            "along a is 8.000 Å, less than the cutoff",
        ),
        (
            std::fs::read_to_string(lj_config(
                tmp.path(),
                "b.toml",
                &out,
                "cell = [23.2, 23.2, 23.2]",
                "",
            ))
            .unwrap(),
            "needs `cutoff`",
        ),
        (
            std::fs::read_to_string(lj_config(tmp.path(), "c.toml", &out, "", "shift = true"))
                .unwrap(),
            "`shift` is for kind = \"lennard-jones\" with a cutoff",
        ),
        (
            std::fs::read_to_string(lj_config(
                tmp.path(),
                "d.toml",
                &out,
                "periodic = true",
                "cutoff = 8.5",
            ))
            .unwrap(),
            "gives no cell",
        ),
        (
            std::fs::read_to_string(lj_config(
                tmp.path(),
                "e.toml",
                &out,
                "cell = [23.2, 23.2]",
                "cutoff = 8.5",
            ))
            .unwrap(),
            "system.cell: expected [a, b, c]",
        ),
        (torchscript, "is a model of interface v1"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let cfg = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        for cmd in ["validate", "run"] {
            let mut command = bin();
            command.args([cmd, cfg.to_str().unwrap()]);
            if cmd == "run" {
                command.arg("--quiet");
            }
            let o = command.output().unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "case {i} ({cmd}): {err}");
            assert!(
                err.contains(expected) && !err.contains("panicked"),
                "case {i} ({cmd}): {err}"
            );
        }
    }
    assert!(!out.exists(), "bad input must not create outputs");
}

/// A neighbour list that runs out of room is found at the next check: the
/// run goes back to the check before, enlarges the list and runs those
/// steps again, so the result is the one with room from the start (to
/// rounding: the list's width changes how sums are blocked). A run that
/// grew its list continues from a checkpoint bit for bit.
#[test]
fn a_list_that_runs_out_of_room_is_enlarged_and_the_steps_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let cell = "cell = [23.2, 23.2, 23.2]";
    let cutoff = "cutoff = 8.5";
    let roomy = tmp.path().join("roomy");
    let tight = tmp.path().join("tight");
    let split = tmp.path().join("split");
    let c_roomy = lj_config(tmp.path(), "r.toml", &roomy, cell, cutoff);
    let c_tight = lj_config(tmp.path(), "t.toml", &tight, cell, cutoff);
    let c_split = lj_config(tmp.path(), "s.toml", &split, cell, cutoff);
    let run = |cfg: &Path, room: Option<&str>, extra: &[&str]| {
        let mut cmd = bin();
        cmd.args(["run", cfg.to_str().unwrap()]).args(extra);
        if let Some(r) = room {
            cmd.env(mlff_md::force::pairs::ROOM_ENV, r);
        }
        stderr(&ok(cmd.output().unwrap()))
    };
    let quiet = run(&c_roomy, None, &[]);
    assert!(!quiet.contains("ran out of room"), "{quiet}");
    let log = run(&c_tight, Some("3"), &[]);
    assert!(
        log.contains("note: the neighbour list ran out of room between steps 0 and 5 (")
            && log.contains("neighbours in a row (room for 3)"),
        "{log}"
    );
    let (a, b) = (fingerprint(&roomy, false), fingerprint(&tight, false));
    for (x, y) in a.0.iter().zip(&b.0) {
        let scale = x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let worst = x
            .iter()
            .zip(y)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
        assert!(worst < 1e-9 * scale, "differs by {worst} (scale {scale})");
    }
    assert_eq!(a.1, b.1);
    let (ck, _) = mlff_md::io::checkpoint::Checkpoint::read_latest(&tight).unwrap();
    assert!(ck.header.neighbor_list.unwrap().capacity > 3);
    // The same tight start, stopped at 20 and continued.
    run(&c_split, Some("3"), &["--quiet", "--steps", "20"]);
    run(
        &c_split,
        Some("3"),
        &["--quiet", "--resume", "--steps", "40"],
    );
    assert_bit_identical(&b, &fingerprint(&split, false), "grown list, resumed");
}

/// The stored neighbour list's rebuild schedule does not change results: a
/// hot fluid run whose schedule starts at a rebuild every step (the
/// schedule may lengthen it), and one that starts at every 1000 steps (so
/// checks find atoms that moved beyond half the skin, go back, and rebuild
/// more often), give the same trajectory bit for bit.
#[test]
fn the_rebuild_schedule_does_not_change_the_trajectory() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, every: &str| {
        let out = tmp.path().join(name);
        let cfg = lj_config(
            tmp.path(),
            &format!("{name}.toml"),
            &out,
            "cell = [23.2, 23.2, 23.2]",
            "cutoff = 8.5",
        );
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "initial_temperature = 100.0",
            "initial_temperature = 2500.0",
        );
        std::fs::write(&cfg, text).unwrap();
        let mut cmd = bin();
        cmd.args(["run", cfg.to_str().unwrap()])
            .env(mlff_md::force::pairs::REBUILD_ENV, every);
        (stderr(&ok(cmd.output().unwrap())), fingerprint(&out, false))
    };
    let (log_often, often) = run("often", "1");
    let (log_rarely, rarely) = run("rarely", "1000");
    assert!(!log_often.contains("went stale"), "{log_often}");
    assert!(
        log_rarely.contains("an atom moved") && log_rarely.contains("half the skin is 0.5 Å"),
        "{log_rarely}"
    );
    assert_bit_identical(
        &often,
        &rarely,
        "schedule from every step vs from every 1000",
    );
}
