//! The pressure observable of periodic runs with a pair model:
//! (2 K + W)/(3 V), with the virial W = −Σ v·∂E/∂v over the pair vectors.
//! Checked against a finite difference of the energy under a homogeneous
//! scaling of positions and cell (cubic and triclinic cells) and the
//! kinetic energy recomputed from velocities and masses with constants
//! written here. A continued run whose observables.h5 predates the
//! pressure goes on without it.

mod common;

use std::path::{Path, PathBuf};

use common::runs::*;
use common::*;
use mlff_md::config::Config;
use mlff_md::simulation::Simulation;
use tch::Tensor;

/// 1 eV/Å³ in bar: 1.602176634e-19 J / 1e-30 m³ = 1.602176634e11 Pa.
const BAR_PER_EV_PER_A3: f64 = 1.602_176_634e6;

/// The 256 argon-like atoms of tests/data/lj_fluid.xyz (a 23.2 Å cubic
/// box) mapped by their fractional coordinates into the cell with lower-
/// triangular rows `cell` (so no two atoms overlap in a sheared cell).
fn fluid_in(dir: &Path, cell: [[f64; 3]; 3]) -> PathBuf {
    let text = std::fs::read_to_string(root().join("tests/data/lj_fluid.xyz")).unwrap();
    let mut lines = vec!["256".to_string(), "argon-like fluid".to_string()];
    for line in text.lines().skip(2).take(256) {
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| (x.parse::<f64>().unwrap() / 23.2).rem_euclid(1.0))
            .collect();
        let x: Vec<f64> = (0..3)
            .map(|k| (0..3).map(|i| f[i] * cell[i][k]).sum())
            .collect();
        lines.push(format!("Ar {:.8} {:.8} {:.8}", x[0], x[1], x[2]));
    }
    let p = dir.join("fluid.xyz");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// Shifted-force Lennard-Jones (argon-like: smooth energy at the cutoff, so
/// a pair crossing it moves the energy by O(δ²) only) over the fluid of
/// [`fluid_in`] in `cell`; Langevin at 300 K; `extra` sections.
fn lj_config(dir: &Path, cell: [[f64; 3]; 3], members: usize, extra: &str, steps: u64) -> PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
cell = {cell:?}
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
temperature = 300.0
friction = 5.0
precision = "float64"
[ensemble]
members = {members}
seed = 5
{extra}
[run]
steps = {steps}
[output]
directory = "{}"
observables_interval = 10
checkpoint_interval = 30
"#,
        fluid_in(dir, cell).display(),
        dir.join("out").display()
    );
    let p = dir.join("pressure.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn index_of(sim: &Simulation, name: &str) -> Option<usize> {
    sim.observable_names().iter().position(|(n, _)| *n == name)
}

/// Each member's energy with positions and cell scaled by `lambda`.
fn scaled_energies(
    sim: &mut Simulation,
    positions: &Tensor,
    cells: &Tensor,
    lambda: f64,
) -> Vec<f64> {
    sim.state.positions = positions * lambda;
    sim.state.set_cells(&(cells * lambda));
    host(&sim.force.compute(&sim.state).unwrap().energies)
}

#[test]
fn the_pressure_is_the_volume_derivative_of_the_energy_plus_the_kinetic_term() {
    let cubic = [[23.2, 0.0, 0.0], [0.0, 23.2, 0.0], [0.0, 0.0, 23.2]];
    let triclinic = [[23.2, 0.0, 0.0], [4.1, 22.6, 0.0], [-3.3, 2.7, 23.9]];
    for cell in [cubic, triclinic] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = lj_config(tmp.path(), cell, 2, "", 10);
        let mut sim = Simulation::from_config(&Config::from_file(&cfg).unwrap()).unwrap();
        // Away from the lattice-like start, with velocities of its own.
        for _ in 0..20 {
            sim.integrator
                .step(&mut sim.state, sim.force.as_ref())
                .unwrap();
        }
        let at = index_of(&sim, "pressure").expect("a periodic pair-model run records pressure");
        assert_eq!(sim.observable_names()[at].1, "bar");
        let recorded = sim.observables().unwrap()[at].clone();

        // K = ½ Σ m v² per member, from the state's velocities and masses.
        let n: usize = 256;
        let v = host(&sim.state.velocities);
        let m = host(
            &sim.state
                .masses
                .expand([2 * n as i64, 3], false)
                .contiguous(),
        );
        let kinetic: Vec<f64> = (0..2)
            .map(|r| {
                let range = 3 * n * r..3 * n * (r + 1);
                0.5 * range.map(|i| m[i] * v[i] * v[i]).sum::<f64>() * amu_a2_fs2_ev()
            })
            .collect();
        let cells = sim.state.cells.as_ref().unwrap().copy();
        let c = host(&cells);
        // Lower-triangular rows: the volume is the product of the diagonal.
        let volume: Vec<f64> = (0..2)
            .map(|r| c[9 * r] * c[9 * r + 4] * c[9 * r + 8])
            .collect();

        // W = −dE/dλ at λ = 1 for x → λx, H → λH (every pair vector → λv).
        let positions = sim.state.positions.copy();
        let h = 1e-5;
        let up = scaled_energies(&mut sim, &positions, &cells, 1.0 + h);
        let down = scaled_energies(&mut sim, &positions, &cells, 1.0 - h);
        for r in 0..2 {
            let w = -(up[r] - down[r]) / (2.0 * h);
            let expected = (2.0 * kinetic[r] + w) / (3.0 * volume[r]) * BAR_PER_EV_PER_A3;
            let virial_part = w / (3.0 * volume[r]) * BAR_PER_EV_PER_A3;
            eprintln!(
                "cell {cell:?}, member {r}: P = {:.6} bar recorded, {expected:.6} expected (virial part {virial_part:.3} bar)",
                recorded[r]
            );
            assert!(
                virial_part.abs() > 10.0,
                "the virial must matter in this check ({virial_part} bar)"
            );
            assert!(
                (recorded[r] - expected).abs() < 1e-6 * expected.abs().max(virial_part.abs()),
                "member {r}: pressure {} bar, expected {expected} bar",
                recorded[r]
            );
        }
    }
}

/// A continued NPT run whose observables.h5 was written before the
/// pressure was recorded (its series removed here) goes on, says so, and
/// keeps the file consistent; a free (non-periodic) run records no pressure,
/// and neither does a periodic one with [output] pressure = false.
#[test]
fn a_file_from_before_the_pressure_continues_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "[barostat]\npressure = 500.0\ninterval = 5\n";
    let cubic = [[23.2, 0.0, 0.0], [0.0, 23.2, 0.0], [0.0, 0.0, 23.2]];
    let cfg = lj_config(tmp.path(), cubic, 2, extra, 60);
    let obs = tmp.path().join("out/observables.h5");
    ok(bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet", "--steps", "30"])
        .output()
        .unwrap());
    {
        let f = common::h5_open_rw(&obs);
        assert!(f.link_exists("observables/pressure"));
        f.unlink("observables/pressure").unwrap();
    }
    let o = ok(bin()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--quiet",
            "--resume",
            "--steps",
            "60",
        ])
        .output()
        .unwrap());
    assert!(
        stderr(&o).contains("was written before pressure was recorded"),
        "{}",
        stderr(&o)
    );
    let f = common::h5_open(&obs);
    assert!(!f.link_exists("observables/pressure"));
    assert_eq!(
        read_i64(&f, "observables/volume/step"),
        (0..=60).step_by(10).collect::<Vec<i64>>()
    );

    // The same model on the free cluster: no volume, no pressure.
    let free_dir = tmp.path().join("free");
    std::fs::create_dir_all(&free_dir).unwrap();
    let free = lj_config(&free_dir, cubic, 2, "", 10);
    let text = std::fs::read_to_string(&free).unwrap();
    let without_cell: Vec<&str> = text.lines().filter(|l| !l.starts_with("cell =")).collect();
    std::fs::write(&free, without_cell.join("\n")).unwrap();
    let sim = Simulation::from_config(&Config::from_file(&free).unwrap()).unwrap();
    assert!(sim.state.cells.is_none());
    assert_eq!(index_of(&sim, "pressure"), None);

    // [output] pressure = false turns it off for a periodic run.
    let off_dir = tmp.path().join("off");
    std::fs::create_dir_all(&off_dir).unwrap();
    let off = lj_config(&off_dir, cubic, 2, "", 10);
    let text = std::fs::read_to_string(&off).unwrap();
    std::fs::write(
        &off,
        text.replace("[output]\n", "[output]\npressure = false\n"),
    )
    .unwrap();
    let sim = Simulation::from_config(&Config::from_file(&off).unwrap()).unwrap();
    assert!(sim.state.cells.is_some());
    assert_eq!(index_of(&sim, "pressure"), None);
    assert!(sim.observable_names().iter().any(|(n, _)| *n == "volume"));
}
