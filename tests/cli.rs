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
    let h5 = common::h5_open(out.join("observables.h5"));
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
    // The last record (step 30) against the checkpoint written at step 30:
    // kinetic energy and temperature from its velocities and chemfiles'
    // masses, with independently written constants (3N degrees of freedom
    // under Langevin); the total as E_pot + E_kin of those.
    let (ck, _) = mlff_md::io::checkpoint::Checkpoint::read_latest(&out).unwrap();
    assert_eq!(ck.header.step, 30);
    let molecule = mlff_md::system::Molecule::load(&[root().join("systems/caffeine.pdb")]).unwrap();
    let n = molecule.n_atoms();
    let last = epot.shape()[0] - 1;
    for m in 0..4 {
        let mv2: f64 = (0..n)
            .map(|i| {
                let v = &ck.velocities[(m * n + i) * 3..(m * n + i) * 3 + 3];
                molecule.masses[i] * (v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
            })
            .sum();
        let ke = 0.5 * mv2 * common::amu_a2_fs2_ev();
        let t = 2.0 * ke / (3.0 * n as f64 * common::kb_ev());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        assert!(
            close(ekin[[last, m]], ke),
            "member {m}: E_kin {} vs {ke}",
            ekin[[last, m]]
        );
        assert!(
            close(temp[[last, m]], t),
            "member {m}: T {} vs {t}",
            temp[[last, m]]
        );
        assert_eq!(epot[[last, m]], ck.energies[m]);
        assert!(close(etot[[last, m]], ck.energies[m] + ke));
    }

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
        (
            "CUDA graphs on, on a CPU",
            good.replace("steps = 30", "steps = 30\ncuda_graphs = \"on\""),
            "cuda_graphs = \"on\"",
        ),
        (
            "charged SDF (M  CHG)",
            with_structure(&data.join("acetate.sdf").display().to_string()),
            "total formal charge of -1 (M  CHG)",
        ),
        (
            "charged PDB (columns 79-80)",
            with_structure(&data.join("methylammonium.pdb").display().to_string()),
            "total formal charge of +1 (columns 79-80)",
        ),
        (
            "model path is a directory",
            good.replace(&model, &data.display().to_string()),
            "is a directory; expected a TorchScript file",
        ),
        (
            "output is a file",
            good.replace(
                &out.display().to_string(),
                &data.join("empty.xyz").display().to_string(),
            ),
            "is a file, not a directory",
        ),
        (
            "int energies",
            with_model("int_energy.pt"),
            "expected a floating-point tensor",
        ),
        (
            "energies without gradient",
            with_model("no_grad_energy.pt"),
            "no gradient",
        ),
        (
            "unknown blow-up policy",
            good.replace("steps = 30", "steps = 30\non_blowup = \"ignore\""),
            "unknown variant `ignore`",
        ),
        (
            "negative neighbour-list skin",
            good.replace("steps = 30", "steps = 30\nneighbor_skin = -0.5"),
            "run.neighbor_skin: expected a distance of 0 Å or more, got -0.5",
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

/// A batch that does not fit in device memory (the test model fails as the
/// CUDA allocator does above 80 atoms; 4 members of a 30-atom argon cluster
/// are 120) ends the run with libtorch's message and a hint of what to
/// change; 2 members fit.
#[test]
fn out_of_memory_says_what_to_change() {
    let tmp = tempfile::tempdir().unwrap();
    // Argon on a 3.8 Å grid (near the test model's minimum at 3.8 Å).
    let atoms: Vec<String> = (0..30)
        .map(|i| {
            let (x, y, z) = (i % 5, (i / 5) % 3, i / 15);
            format!(
                "Ar {} {} {}",
                3.8 * x as f64,
                3.8 * y as f64,
                3.8 * z as f64
            )
        })
        .collect();
    let xyz = write(
        tmp.path(),
        "argon.xyz",
        &format!("30\nargon cluster\n{}\n", atoms.join("\n")),
    );
    let text = config(&tmp.path().join("out"))
        .replace(
            &root().join("systems/caffeine.pdb").display().to_string(),
            &xyz.display().to_string(),
        )
        .replace(
            &root().join("models/morse_test.pt").display().to_string(),
            &root()
                .join("tests/data/oom_pairs_above_80.pt")
                .display()
                .to_string(),
        );
    let cfg = write(tmp.path(), "oom.toml", &text);
    let o = bin().args(["run"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("CUDA out of memory"), "{err}");
    assert!(
        err.contains("hint: the batch does not fit in the device's memory. Run fewer members"),
        "{err}"
    );
    let two = write(
        tmp.path(),
        "two.toml",
        &text.replace("members = 4", "members = 2"),
    );
    let o = bin().args(["run"]).arg(&two).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("hint:"), "{err}");
}

/// A screen that runs out of device memory where it cannot shrink its batch
/// (Trp-cage, 303 atoms, alone against the test model that fails above 80
/// atoms) ends with the screen's hint, not the members' one, and still
/// writes the tables: the molecule finished before it (caffeine, first by
/// name) with its result, Trp-cage pending.
#[test]
fn a_screen_out_of_memory_keeps_what_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::copy(
        root().join("systems/caffeine.pdb"),
        lib.join("a_caffeine.pdb"),
    )
    .unwrap();
    std::fs::copy(
        root().join("systems/peptides/trpcage_extended.xyz"),
        lib.join("b_trpcage.xyz"),
    )
    .unwrap();
    let cfg = write(
        tmp.path(),
        "screen.toml",
        &format!(
            "[model]\npath = \"{}\"\ndevice = \"cpu\"\ndtype = \"float64\"\n\n\
             [minimize]\nmax_force = 0.05\nmax_steps = 20\n",
            root().join("tests/data/oom_pairs_above_80.pt").display()
        ),
    );
    let out = tmp.path().join("out");
    let o = bin()
        .args(["screen"])
        .arg(&lib)
        .arg("--config")
        .arg(&cfg)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("CUDA out of memory"), "{err}");
    assert!(
        err.contains("hint: the screen ran out of device memory"),
        "{err}"
    );
    assert!(!err.contains("Run fewer members"), "{err}");
    assert!(
        err.contains("1 molecule finished before the error"),
        "{err}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let status = |name: &str| {
        csv.lines()
            .find(|l| l.contains(name))
            .and_then(|l| l.split(',').nth(3))
            .map(str::to_string)
    };
    assert_eq!(
        status("a_caffeine").as_deref(),
        Some("not converged"),
        "{csv}"
    );
    assert_eq!(status("b_trpcage").as_deref(), Some("pending"), "{csv}");
    let sdf = std::fs::read_to_string(out.join("minimized.sdf")).unwrap();
    assert!(sdf.contains("mlff_md_energy_ev"), "{sdf}");
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
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot read config file"), "{err}");
    // A file-level error has no line to point at: no `:0:0`.
    assert!(
        err.starts_with("error: /nonexistent/config.toml: cannot read"),
        "{err}"
    );
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

    let h5 = common::h5_open(out.join("observables.h5"));
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

/// Input the models cannot take at face value only warns, naming the
/// file: a periodic box that is ignored, an odd electron count, several
/// molecules in one structure, and a charged input explicitly allowed.
#[test]
fn questionable_input_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = root().join("tests/data");
    let boxed = tmp.path().join("boxed.pdb");
    let ethanol = std::fs::read_to_string(root().join("systems/ethanol.pdb")).unwrap();
    std::fs::write(
        &boxed,
        format!(
            "CRYST1   20.000   21.000   22.000  90.00  90.00  90.00 P 1           1\n{ethanol}"
        ),
    )
    .unwrap();
    let structure = root().join("systems/caffeine.pdb").display().to_string();
    let cases: [(&Path, &str, &str); 4] = [
        (
            &boxed,
            "",
            "has a periodic box (20.000 × 21.000 × 22.000 Å); it is ignored",
        ),
        (
            &data.join("hydrogen_atom.xyz"),
            "",
            "an odd number of electrons (1) at total charge 0",
        ),
        (
            &data.join("two_waters.xyz"),
            "",
            "the bond graph has 2 separate molecules",
        ),
        (
            &data.join("acetate.sdf"),
            "allow_charged = true\n",
            "total formal charge of -1 (M  CHG), but TorchScript",
        ),
    ];
    for (file, extra, expected) in cases {
        let text = config(&tmp.path().join("out"))
            .replace(&structure, &file.display().to_string())
            .replace("[system]\n", &format!("[system]\n{extra}"));
        let cfg = write(tmp.path(), "w.toml", &text);
        let o = bin()
            .args(["validate", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}: {err}", file.display());
        assert!(
            err.lines()
                .any(|l| l.starts_with("warning: ") && l.contains(expected)),
            "{}: {err}",
            file.display()
        );
    }
    // The box is not carried into the outputs either: the topology has none.
    let text =
        config(&tmp.path().join("boxed_out")).replace(&structure, &boxed.display().to_string());
    let cfg = write(tmp.path(), "b.toml", &text);
    let o = bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// topology.pdb has a CONECT record for every bond of the input (chemfiles
/// alone writes none within standard residues), so MDAnalysis and VMD see
/// the bonds; observables.h5 carries the H5MD units module and the author.
#[test]
fn topology_has_every_bond_and_observables_follow_h5md() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let peptide = root().join("systems/peptides/alanine_dipeptide.pdb");
    let text = config(&out)
        .replace(
            &root().join("systems/caffeine.pdb").display().to_string(),
            &peptide.display().to_string(),
        )
        .replace(
            "observables_interval = 5",
            "observables_interval = 5\nauthor = \"Ada Lovelace\"",
        );
    let cfg = write(tmp.path(), "t.toml", &text);
    let o = bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bonds = |p: &Path| {
        let mut t = chemfiles::Trajectory::open(p, 'r').unwrap();
        let mut f = chemfiles::Frame::new();
        t.read(&mut f).unwrap();
        let mut b = f.topology().bonds();
        b.sort();
        b
    };
    let input = bonds(&peptide);
    assert_eq!(input.len(), 21, "alanine dipeptide has 21 bonds");
    assert_eq!(bonds(&out.join("topology.pdb")), input);
    let topology = std::fs::read_to_string(out.join("topology.pdb")).unwrap();
    let conect_pairs: usize = topology
        .lines()
        .filter(|l| l.starts_with("CONECT"))
        .map(|l| (l.len() - 11) / 5)
        .sum();
    assert_eq!(
        conect_pairs,
        2 * input.len(),
        "each bond listed from both atoms"
    );

    let h5 = common::h5_open(out.join("observables.h5"));
    let units = h5.group("h5md/modules/units").unwrap();
    let version: Vec<i32> = units.attr("version").unwrap().read_raw().unwrap();
    assert_eq!(version, [1, 0]);
    let name: hdf5::types::VarLenUnicode = h5
        .group("h5md/author")
        .unwrap()
        .attr("name")
        .unwrap()
        .read_scalar()
        .unwrap();
    assert_eq!(name.as_str(), "Ada Lovelace");
    let unit: hdf5::types::VarLenUnicode = h5
        .dataset("observables/potential_energy/value")
        .unwrap()
        .attr("unit")
        .unwrap()
        .read_scalar()
        .unwrap();
    assert_eq!(unit.as_str(), "eV");
}

/// Paths printed and stored read as a person would write them (no `..`),
/// and simulated times are rounded (no 0.7000000000000001 ps).
#[test]
fn paths_are_normalised_and_times_rounded() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("configs")).unwrap();
    let text = config(Path::new("../out/x")).replace("timestep = 0.5", "timestep = 0.1");
    let text = text.replace("steps = 30", "steps = 7");
    let text = text.replace("members = 4", "members = 1");
    write(&tmp.path().join("configs"), "p.toml", &text);
    let o = bin()
        .current_dir(tmp.path())
        .args(["run", "configs/../configs/p.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // 7 × 0.1 fs is 0.7000000000000001 fs in floating point.
    assert!(err.contains("(0.7 fs at the end)"), "{err}");
    assert!(
        !err.contains("../") && !err.contains("/."),
        "unnormalised path printed: {err}"
    );
    let out = tmp.path().join("out/x");
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(
        !summary.contains("../") && !summary.contains("/."),
        "{summary}"
    );
    let h5 = common::h5_open(out.join("observables.h5"));
    let config_path: hdf5::types::VarLenUnicode = h5
        .group("parameters")
        .unwrap()
        .attr("config_path")
        .unwrap()
        .read_scalar()
        .unwrap();
    assert_eq!(config_path.as_str(), "configs/p.toml");
    let model: hdf5::types::VarLenUnicode = h5
        .group("parameters")
        .unwrap()
        .attr("model")
        .unwrap()
        .read_scalar()
        .unwrap();
    assert!(!model.as_str().contains("../"), "{}", model.as_str());
}

/// Minimisation shows progress (iteration, largest force); `minimize`
/// refuses an existing minimized.pdb before minimising.
#[test]
fn minimisation_shows_progress_and_refuses_early() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let text = config(&out) + "\n[minimize]\nmax_force = 0.01\nmax_steps = 50\n";
    let cfg = write(tmp.path(), "m.toml", &text);
    let o = bin()
        .args(["minimize", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("minimising (FIRE): iteration 0/50, largest force"),
        "{err}"
    );
    let before = std::fs::read(out.join("minimized.pdb")).unwrap();
    let o = bin()
        .args(["minimize", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("exists; pass --overwrite") && !err.contains("minimising"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("minimized.pdb")).unwrap(), before);
    // `run` with [minimize] shows it too, before the first step.
    let o = bin()
        .args(["run", cfg.to_str().unwrap(), "--overwrite"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("minimising (FIRE): iteration 0/50"), "{err}");
}
