//! The command line end to end: runs that write readable files, and bad input
//! that exits with status 2 and one clear message (never a panic).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlff-md"))
}

/// A valid config body, with absolute paths so it can live anywhere.
fn config(out: &Path) -> String {
    let r = root();
    format!(
        r#"[system]
structure = "{}"

[model]
path = "{}"
device = "cpu"

[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0

[ensemble]
members = 4
seed = 7

[run]
steps = 30

[output]
directory = "{}"
trajectory_interval = 10
observables_interval = 5
"#,
        r.join("systems/caffeine.pdb").display(),
        r.join("models/morse_test.pt").display(),
        out.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn run_writes_trajectories_and_observables() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cfg = write(tmp.path(), "run.toml", &config(&out));
    let o = bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Trajectories: topology PDB + one XTC per member, 4 frames (steps 0, 10, 20, 30).
    let mut topo = chemfiles::Trajectory::open(out.join("topology.pdb"), 'r').unwrap();
    let mut frame = chemfiles::Frame::new();
    topo.read(&mut frame).unwrap();
    assert_eq!(frame.size(), 24);
    assert!(
        frame.topology().bonds_count() > 20,
        "topology PDB carries bonds"
    );
    for m in 0..4 {
        let mut t =
            chemfiles::Trajectory::open(out.join(format!("member_{m:04}.xtc")), 'r').unwrap();
        assert_eq!(t.nsteps(), 4);
        let mut f = chemfiles::Frame::new();
        t.read_step(3, &mut f).unwrap();
        assert_eq!(f.size(), 24);
        assert_eq!(f.step(), 30);
        assert!(f.positions().iter().flatten().all(|x| x.is_finite()));
    }

    // Observables: H5MD-style series with one column per member.
    let h5 = hdf5::File::open(out.join("observables.h5")).unwrap();
    let temp = h5
        .dataset("observables/temperature/value")
        .unwrap()
        .read_2d::<f64>()
        .unwrap();
    assert_eq!(temp.shape(), &[7, 4]);
    let steps = h5
        .dataset("observables/temperature/step")
        .unwrap()
        .read_1d::<i64>()
        .unwrap();
    assert_eq!(steps.to_vec(), vec![0, 5, 10, 15, 20, 25, 30]);
    let epot = h5
        .dataset("observables/potential_energy/value")
        .unwrap()
        .read_2d::<f64>()
        .unwrap();
    let ekin = h5
        .dataset("observables/kinetic_energy/value")
        .unwrap()
        .read_2d::<f64>()
        .unwrap();
    let etot = h5
        .dataset("observables/total_energy/value")
        .unwrap()
        .read_2d::<f64>()
        .unwrap();
    assert!((&epot + &ekin - &etot).iter().all(|d| d.abs() < 1e-9));
    assert!(temp.iter().all(|t| t.is_finite() && *t > 0.0));

    // The first record's energies are those `validate` reports for the same config.
    let v = bin()
        .args(["validate", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(v.status.success());
    let stdout = String::from_utf8_lossy(&v.stdout);
    assert!(
        stdout.contains(&format!("{:.6}", epot[[0, 0]])),
        "{stdout} vs {}",
        epot[[0, 0]]
    );

    // summary.json has the throughput figures.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 30);
    assert!(summary["ns_per_day"].as_f64().unwrap() > 0.0);

    // A second run refuses to overwrite results unless asked to.
    let again = bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    let forced = bin()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--quiet",
            "--overwrite",
            "--steps",
            "10",
        ])
        .output()
        .unwrap();
    assert!(forced.status.success());
}

#[test]
fn command_line_overrides_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "run.toml", &config(&tmp.path().join("unused")));
    let out = tmp.path().join("elsewhere");
    let o = bin()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--quiet",
            "--steps",
            "10",
            "--seed",
            "3",
            "--device",
            "cpu",
        ])
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("\"steps\": 10"));
    assert!(!tmp.path().join("unused").exists());
}

/// Each bad input: exit status 2, one line on stderr starting with `error:`
/// that contains the expected words, and no panic.
#[test]
fn bad_input_is_reported_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let good = config(&out);
    let data = root().join("tests/data");
    let model = root().join("models/morse_test.pt").display().to_string();
    let structure = root().join("systems/caffeine.pdb").display().to_string();
    let with_model = |name: &str| good.replace(&model, &data.join(name).display().to_string());
    let with_structure = |path: &str| good.replace(&structure, path);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            good.replace("seed = 7", "seed = 7\ncolour = \"red\""),
            "unknown field `colour`",
        ),
        (
            "wrong type",
            good.replace("members = 4", "members = \"four\""),
            "invalid type",
        ),
        ("TOML syntax", good.replace("[run]", "[run"), "run.toml:"),
        (
            "negative timestep",
            good.replace("timestep = 0.5", "timestep = -1.0"),
            "integrator.timestep",
        ),
        (
            "zero temperature",
            good.replace("temperature = 300.0", "temperature = 0.0"),
            "integrator.temperature",
        ),
        (
            "negative friction",
            good.replace("timestep = 0.5", "timestep = 0.5\nfriction = -2.0"),
            "integrator.friction",
        ),
        (
            "zero members",
            good.replace("members = 4", "members = 0"),
            "ensemble.members",
        ),
        (
            "absurd members",
            good.replace("members = 4", "members = 100000000000"),
            "ensemble.members",
        ),
        (
            "bad device",
            good.replace("device = \"cpu\"", "device = \"tpu\""),
            "model.device",
        ),
        (
            "unknown integrator",
            good.replace("kind = \"langevin\"", "kind = \"leapfrog\""),
            "unknown variant `leapfrog`",
        ),
        (
            "missing structure",
            with_structure("/nonexistent/mol.pdb"),
            "file not found",
        ),
        (
            "unknown element",
            with_structure(&data.join("unknown_element.xyz").display().to_string()),
            "not a known chemical element",
        ),
        (
            "empty structure",
            with_structure(&data.join("empty.xyz").display().to_string()),
            "structure",
        ),
        (
            "truncated structure",
            with_structure(&data.join("truncated.xyz").display().to_string()),
            "truncated.xyz",
        ),
        (
            "wrong extension",
            with_structure(&data.join("bad_shape.pt").display().to_string()),
            "cannot open",
        ),
        (
            "missing model",
            good.replace(&model, "/nonexistent/model.pt"),
            "file not found",
        ),
        (
            "not TorchScript",
            with_model("not_torchscript.pt"),
            "not a loadable TorchScript module",
        ),
        (
            "wrong signature",
            with_model("bad_signature.pt"),
            "forward(atomic_numbers, positions, batch) failed",
        ),
        (
            "wrong output shape",
            with_model("bad_shape.pt"),
            "expected energies[n_structures] = [4]",
        ),
        (
            "NaN energy",
            with_model("nan_energy.pt"),
            "non-finite energy",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, expected) in &cases {
        let cfg = write(dir, "run.toml", text);
        for cmd in ["validate", "run"] {
            let mut command = bin();
            command.args([cmd, cfg.to_str().unwrap()]);
            if cmd == "run" {
                command.arg("--quiet");
            }
            let o = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.starts_with("warning:"))
                .collect();
            let ok = o.status.code() == Some(2)
                && lines.len() == 1
                && lines[0].starts_with("error: ")
                && stderr.contains(expected)
                && !stderr.contains("panicked");
            if !ok {
                failures.push(format!(
                    "{name} ({cmd}): status {:?}, stderr {stderr:?}",
                    o.status.code()
                ));
            }
        }
    }
    assert!(!out.exists(), "bad input must not create outputs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn overlapping_atoms_only_warn() {
    let tmp = tempfile::tempdir().unwrap();
    let text = config(&tmp.path().join("out")).replace(
        &root().join("systems/caffeine.pdb").display().to_string(),
        &root()
            .join("tests/data/overlapping.xyz")
            .display()
            .to_string(),
    );
    let cfg = write(tmp.path(), "o.toml", &text);
    let o = bin()
        .args(["validate", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: structure 1: atoms 2 and 3 are only 0.100 Å apart"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_and_help() {
    let o = bin()
        .args(["run", "/nonexistent/config.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read config file"));
    let h = bin().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&h.stdout);
    assert!(text.contains("--steps") && text.contains("--overwrite") && text.contains("--device"));
}

/// A replica-exchange run writes per-replica and per-temperature trajectories
/// that agree with the recorded replica → temperature map, and the exchange
/// records in HDF5.
#[test]
fn replica_exchange_outputs_are_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rex");
    let text = format!(
        r#"[system]
structure = "{}"
[model]
path = "{}"
device = "cpu"
[integrator]
kind = "langevin"
timestep = 0.25
friction = 5.0
[replica_exchange]
temperatures = [300.0, 340.0, 390.0, 450.0]
exchange_interval = 10
[ensemble]
seed = 11
[run]
steps = 200
[output]
directory = "{}"
trajectory_format = "xyz"
trajectory_interval = 10
observables_interval = 10
"#,
        root().join("systems/ethanol.pdb").display(),
        root().join("models/morse_test.pt").display(),
        out.display()
    );
    let cfg = write(tmp.path(), "rex.toml", &text);
    let o = bin().args(["run", cfg.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("acceptance per neighbour pair") && stderr.contains("round trips"),
        "{stderr}"
    );

    let h5 = hdf5::File::open(out.join("observables.h5")).unwrap();
    let states = h5
        .dataset("replica_exchange/state_of_replica")
        .unwrap()
        .read_2d::<i64>()
        .unwrap();
    let steps = h5
        .dataset("replica_exchange/step")
        .unwrap()
        .read_1d::<i64>()
        .unwrap();
    assert_eq!(states.shape(), &[20, 4]);
    assert_eq!(
        steps.to_vec(),
        (1..=20).map(|i| i * 10).collect::<Vec<i64>>()
    );
    for row in states.rows() {
        let mut v = row.to_vec();
        v.sort();
        assert_eq!(v, vec![0, 1, 2, 3], "each exchange leaves a permutation");
    }
    let accepts = h5
        .dataset("replica_exchange/accepts")
        .unwrap()
        .read_2d::<i64>()
        .unwrap();
    let attempts = h5
        .dataset("replica_exchange/attempts")
        .unwrap()
        .read_2d::<i64>()
        .unwrap();
    assert_eq!(attempts.shape(), &[4, 4]);
    assert!(attempts[[0, 1]] >= accepts[[0, 1]] && attempts[[0, 1]] == 10);
    let thermostat = h5
        .dataset("observables/thermostat_temperature/value")
        .unwrap()
        .read_2d::<f64>()
        .unwrap();
    // Record i (step 10 i) sees the map written by exchange i (same step).
    for (i, row) in thermostat.rows().into_iter().enumerate().skip(1) {
        for r in 0..4 {
            let ladder = [300.0, 340.0, 390.0, 450.0];
            assert_eq!(row[r], ladder[states[[i - 1, r]] as usize]);
        }
    }

    // The 300 K trajectory's frame at each step is the frame of the replica at 300 K then.
    let read_all = |name: &str| -> Vec<Vec<[f64; 3]>> {
        let mut t = chemfiles::Trajectory::open(out.join(name), 'r').unwrap();
        (0..t.nsteps())
            .map(|i| {
                let mut f = chemfiles::Frame::new();
                t.read_step(i, &mut f).unwrap();
                f.positions().to_vec()
            })
            .collect()
    };
    let cold = read_all("temperature_00_300.0K.xyz");
    let replicas: Vec<_> = (0..4)
        .map(|r| read_all(&format!("member_{r:04}.xyz")))
        .collect();
    assert_eq!(cold.len(), 21);
    for (frame, positions) in cold.iter().enumerate().skip(1) {
        let row = states.row(frame - 1);
        let r = row.iter().position(|&s| s == 0).unwrap();
        assert_eq!(
            positions, &replicas[r][frame],
            "frame {frame}: 300 K is replica {r}"
        );
    }
}
