//! Running the binary on small configs, and what a continued run must
//! reproduce exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::root;
use mlff_md::io::checkpoint::Checkpoint;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlff-md"))
}

pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "status {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Config text with absolute paths; `body` holds the [integrator] and the
/// optional sections, `output` the extra [output] keys. Ethanol with the
/// Morse test model in float64.
pub fn config(dir: &Path, name: &str, out: &Path, body: &str, steps: u64, output: &str) -> PathBuf {
    let model = root().join("models/morse_test.pt");
    config_with_model(dir, name, out, (&model, "float64"), body, steps, output)
}

/// [`config`] with another model file and the dtype of its positions.
pub fn config_with_model(
    dir: &Path,
    name: &str,
    out: &Path,
    (model, dtype): (&Path, &str),
    body: &str,
    steps: u64,
    output: &str,
) -> PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
[model]
path = "{}"
dtype = "{dtype}"
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
        model.display(),
        out.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Run config `whole` to its end; run config `split` for `first` steps, then
/// resume it for the rest (`--steps total`: a plain resume would stop at
/// the `first` it was started with). The two must then agree exactly.
pub fn run_whole_and_split(whole: &Path, split: &Path, first: u64, total: u64) {
    run_whole_and_split_with(whole, split, first, total, || ());
}

/// [`run_whole_and_split`] with `between` run after the split run's first
/// part (e.g. to rewrite its checkpoint).
pub fn run_whole_and_split_with(
    whole: &Path,
    split: &Path,
    first: u64,
    total: u64,
    between: impl FnOnce(),
) {
    ok(bin()
        .args(["run", whole.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    run_split(split, first, total, between);
}

/// Run config `split` for `first` steps, then `between`, then resume it to
/// `total` steps.
pub fn run_split(split: &Path, first: u64, total: u64, between: impl FnOnce()) {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let first = first.to_string();
    ok(bin()
        .args(["run", &path(split), "--quiet", "--steps", &first])
        .output()
        .unwrap());
    between();
    let total = total.to_string();
    ok(bin()
        .args([
            "run",
            &path(split),
            "--quiet",
            "--resume",
            "--steps",
            &total,
        ])
        .output()
        .unwrap());
}

/// Run the binary with `args` and the fault switch `MLFF_MD_TEST_FAULT`
/// set to `fault` (e.g. "sigint@40": signal itself right after step 40).
pub fn run_with_fault(args: &[&str], fault: &str) -> Output {
    bin()
        .args(args)
        .env(mlff_md::run::FAULT_ENV, fault)
        .output()
        .unwrap()
}

/// `run CONFIG --quiet`, which must stop with a blow-up (exit 1); its stderr.
pub fn run_until_blowup(config: &Path) -> String {
    run_exiting(config, 1)
}

/// `run CONFIG --quiet`, which must exit with `code` and not panic; its stderr.
pub fn run_exiting(config: &Path, code: i32) -> String {
    let o = bin()
        .args(["run", config.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub const VERLET: &str = "[integrator]\nkind = \"verlet\"\ntimestep = 0.25\n[ensemble]\nmembers = 3\nseed = 1\ninitial_temperature = 300.0";
pub const LANGEVIN: &str = "[integrator]\nkind = \"langevin\"\ntimestep = 0.25\ntemperature = 300.0\nfriction = 5.0\n[ensemble]\nmembers = 3\nseed = 2";
pub const REMD: &str = "[integrator]\nkind = \"langevin\"\ntimestep = 0.25\nfriction = 5.0\n[replica_exchange]\ntemperatures = [300.0, 330.0, 370.0, 420.0]\nexchange_interval = 10\nscheme = \"all-pairs\"\nswap_attempts = 8\n[ensemble]\nseed = 3";

pub fn read_f64(h5: &hdf5::File, name: &str) -> Vec<f64> {
    h5.dataset(name).unwrap().read_raw::<f64>().unwrap()
}

pub fn read_i64(h5: &hdf5::File, name: &str) -> Vec<i64> {
    h5.dataset(name).unwrap().read_raw::<i64>().unwrap()
}

/// Everything a continued run must reproduce exactly.
pub fn fingerprint(out: &Path, rex: bool) -> (Vec<Vec<f64>>, Vec<Vec<i64>>) {
    let (ck, _) = Checkpoint::read_latest(out).unwrap();
    let h5 = super::h5_open(out.join("observables.h5"));
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

pub fn assert_bit_identical(
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

/// Rewrite the newest checkpoint in `dir` as a checkpoint written before
/// moves were plug-ins kept it: the replica-exchange and barostat states in
/// their own header fields, no `moves` map.
pub fn rewrite_checkpoint_as_before_moves(dir: &Path) {
    use mlff_md::io::checkpoint::Checkpoint;
    let (mut ck, _) = Checkpoint::read_latest(dir).unwrap();
    let h = &mut ck.header;
    assert!(!h.moves.is_empty(), "no move states to rewrite");
    h.replica_exchange = h.move_state_as("replica_exchange");
    h.barostat = h.move_state_as("barostat");
    h.moves.clear();
    ck.write_atomic(dir).unwrap();
}
