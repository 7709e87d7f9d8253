#![allow(dead_code)]

pub mod runs;

use std::path::{Path, PathBuf};

use mlff_md::system::Molecule;
use tch::Tensor;

/// Opens an HDF5 file for reading without HDF5's file lock.
///
/// HDF5 opens files without `O_CLOEXEC`, and the tests of one binary run
/// in parallel threads: a child that another test spawns while this file
/// is open inherits the descriptor, and with it the lock, for its whole
/// life. A resume started after this handle is dropped then fails with
/// "unable to lock file" (CI, stop 34). Without the lock, an inherited
/// descriptor is harmless.
pub fn h5_open(path: impl AsRef<Path>) -> hdf5::File {
    h5_open_as(path, hdf5::OpenMode::Read)
}

/// [`h5_open`] for writing.
pub fn h5_open_rw(path: impl AsRef<Path>) -> hdf5::File {
    h5_open_as(path, hdf5::OpenMode::ReadWrite)
}

fn h5_open_as(path: impl AsRef<Path>, mode: hdf5::OpenMode) -> hdf5::File {
    let path = path.as_ref();
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open_as(path, mode)
        .unwrap_or_else(|e| panic!("{} opens: {e}", path.display()))
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn ethanol() -> Molecule {
    Molecule::load(&[root().join("systems/ethanol.xyz")]).expect("ethanol loads")
}

pub fn host(t: &Tensor) -> Vec<f64> {
    mlff_md::state::to_host_f64(t)
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Standard error of the mean of independent samples.
pub fn standard_error(v: &[f64]) -> f64 {
    let m = mean(v);
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0);
    (var / v.len() as f64).sqrt()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Written here from their definitions, independently of `mlff_md::units`,
/// so that tests of the engine's numbers do not reuse its constants.
/// CODATA 2018 defining and recommended values, in SI.
pub const BOLTZMANN_J_PER_K: f64 = 1.380_649e-23;
pub const ELEMENTARY_CHARGE_C: f64 = 1.602_176_634e-19;
pub const ATOMIC_MASS_UNIT_KG: f64 = 1.660_539_066_60e-27;
pub const HARTREE_J: f64 = 4.359_744_722_207_1e-18;

pub fn kb_ev() -> f64 {
    BOLTZMANN_J_PER_K / ELEMENTARY_CHARGE_C
}

/// 1 amu·Å²/fs² in eV: kg · (1e-10 m)² / (1e-15 s)² = kg · 1e10 m²/s².
pub fn amu_a2_fs2_ev() -> f64 {
    ATOMIC_MASS_UNIT_KG * 1.0e10 / ELEMENTARY_CHARGE_C
}

/// 32 argon-like atoms from tests/data/lj_fluid.xyz spread over a 19 Å
/// box (a gas for Lennard-Jones NPT runs), written to DIR/gas.xyz.
pub fn argon_gas(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("tests/data/lj_fluid.xyz")).unwrap();
    let mut lines = vec!["32".to_string(), "argon-like gas".to_string()];
    for line in text.lines().skip(2).step_by(8).take(32) {
        let x: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| (v.parse::<f64>().unwrap() / 23.2).rem_euclid(1.0) * 19.0)
            .collect();
        lines.push(format!("Ar {:.6} {:.6} {:.6}", x[0], x[1], x[2]));
    }
    let p = dir.join("gas.xyz");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// A config of the [`argon_gas`] as a shifted Lennard-Jones fluid under the
/// Monte Carlo barostat (200 bar, a move every 5 steps), Langevin at 2 fs:
/// `sampling` adds sections ([replica_exchange], [ensemble]), `output` the
/// [output] keys.
pub fn argon_npt_config(dir: &std::path::Path, sampling: &str, steps: u64, output: &str) -> String {
    format!(
        r#"[system]
structure = "{}"
cell = [19.0, 19.0, 19.0]
[model]
kind = "lennard-jones"
epsilon = 0.0104
sigma = 3.4
cutoff = 8.5
shift = true
device = "cpu"
[integrator]
kind = "langevin"
timestep = 2.0
friction = 20.0
precision = "float64"
[barostat]
pressure = 200.0
interval = 5
{sampling}
[run]
steps = {steps}
[output]
{output}
"#,
        argon_gas(dir).display()
    )
}
