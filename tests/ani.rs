//! The shipped ANI-1x model through the engine: it loads, refuses elements it
//! does not know, gives forces equal to minus the gradient, minimises and runs.

mod common;

use std::process::Command;

use common::*;
use mlff_md::force::{ForceProvider, TorchScriptModel};
use mlff_md::minimize::{fire, FireOptions};
use mlff_md::state::BatchState;
use mlff_md::system::Molecule;
use tch::{Device, Kind, Tensor};

fn ani() -> TorchScriptModel {
    TorchScriptModel::load(&root().join("models/ani1x.pt"), Device::Cpu, Kind::Float).unwrap()
}

fn dipeptide() -> Molecule {
    Molecule::load(&[root().join("systems/peptides/alanine_dipeptide.pdb")]).unwrap()
}

#[test]
fn ani_reports_its_elements_and_metadata() {
    let model = ani();
    assert_eq!(model.supported_elements(), Some(vec![1, 6, 7, 8]));
    let meta: serde_json::Value = serde_json::from_str(model.metadata().unwrap()).unwrap();
    assert_eq!(meta["energy_unit"], "eV");
}

#[test]
fn ani_forces_are_minus_the_gradient() {
    let model = ani();
    let m = dipeptide();
    let state = BatchState::new(&m, 2, Device::Cpu, Kind::Double);
    let out = model.compute(&state).unwrap();
    let e = host(&out.energies);
    assert!(
        (e[0] - e[1]).abs() < 1e-6,
        "identical members, energies {e:?}"
    );
    // float32 model: step 1e-3 Å; the error of the difference quotient is
    // dominated by float32 rounding of ~1e4 eV energies (~1e-3 eV / 2e-3 Å).
    let h = 1e-3;
    for (row, xyz) in [(0i64, 0i64), (7, 1), (20, 2)] {
        let energy = |d: f64| {
            let mut s = BatchState::new(&m, 2, Device::Cpu, Kind::Double);
            let bump = Tensor::zeros_like(&s.positions);
            let _ = bump.get(row).get(xyz).fill_(d);
            s.positions = &s.positions + bump;
            host(&model.compute(&s).unwrap().energies)[0]
        };
        let fd = -(energy(h) - energy(-h)) / (2.0 * h);
        let f = out.forces.get(row).get(xyz).double_value(&[]);
        assert!(
            (fd - f).abs() < 0.02 + 0.01 * f.abs(),
            "row {row}: fd {fd} vs autograd {f}"
        );
    }
}

#[test]
fn fire_minimises_alanine_dipeptide() {
    let model = ani();
    let m = dipeptide();
    let mut state = BatchState::new(&m, 2, Device::Cpu, Kind::Double);
    // Perturb member 1 so the members differ.
    let noise = mlff_md::rng::CounterRng::new(1).normal(&state.noise_index) * 0.05;
    state.positions = &state.positions
        + noise
            * Tensor::from_slice(&[0.0, 1.0])
                .index_select(0, &state.batch)
                .unsqueeze(1);
    let report = fire(
        &mut state,
        &model,
        &FireOptions {
            max_force: 0.05,
            max_steps: 1000,
            max_step: 0.2,
        },
    )
    .unwrap();
    assert!(report.converged.iter().all(|&c| c), "{report:?}");
    assert!(report.energy_after[1] < report.energy_before[1]);
    assert!(report.max_force.iter().all(|&f| f < 0.05));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mlff-md"))
}

fn write_config(dir: &std::path::Path, structure: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
[model]
path = "{}"
device = "cpu"
[minimize]
max_force = 0.05
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
[ensemble]
members = 3
[run]
steps = 20
[output]
directory = "{}"
trajectory_interval = 10
observables_interval = 10
{extra}"#,
        root().join(structure).display(),
        root().join("models/ani1x.pt").display(),
        dir.join("out").display()
    );
    let p = dir.join("ani.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn unsupported_elements_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "tests/data/h2s.xyz", "");
    let o = bin()
        .args(["validate", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not support element(s) S"), "{stderr}");
}

#[test]
fn minimize_command_and_short_md_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "systems/peptides/alanine_dipeptide_conformers.pdb",
        "",
    );
    let o = bin()
        .args(["minimize", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("3/3 converged"), "{stdout}");
    let mut t = chemfiles::Trajectory::open(tmp.path().join("out/minimized.pdb"), 'r').unwrap();
    assert_eq!(t.nsteps(), 3);
    let o = bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet", "--overwrite"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let h5 = common::h5_open(tmp.path().join("out/observables.h5"));
    let epot = h5
        .dataset("observables/potential_energy/value")
        .unwrap()
        .read_2d::<f64>()
        .unwrap();
    assert_eq!(epot.shape(), &[3, 3]);
    // Minimisation lowered each conformer's energy below torchani's value
    // for the structure as built (the first record is after minimising).
    for m in 0..3 {
        assert!(
            epot[[0, m]] < TORCHANI_CONFORMERS_EV[m],
            "member {m}: {} after minimising, {} before",
            epot[[0, m]],
            TORCHANI_CONFORMERS_EV[m]
        );
    }
}

/// torchani 2.9 (float64, its own ANI-1x built from the same NeuroChem
/// weights, energies × 27.211386245988 eV/Hartree) on the four structures of
/// systems/peptides/alanine_dipeptide_conformers.pdb, as read from the file
/// (C7eq, C5, αR, and a fourth), computed once with python/export_ani.py's
/// load_torchani("ani1x").
const TORCHANI_CONFORMERS_EV: [f64; 4] = [
    -13489.567237035419,
    -13489.468235867025,
    -13489.343552199976,
    -13489.434667639041,
];

/// The exported model through the engine gives torchani's energies on the
/// shipped conformers (float32 model: within 1e-6 relative, ~0.01 eV; the
/// conformers differ by 0.1-0.2 eV), for the neighbour-list and the static
/// export alike.
#[test]
fn ani_energies_equal_torchani_on_the_shipped_conformers() {
    let m = Molecule::load(&[root().join("systems/peptides/alanine_dipeptide_conformers.pdb")])
        .unwrap();
    assert_eq!(m.structures.len(), 4);
    let state = BatchState::new(&m, 4, Device::Cpu, Kind::Double);
    for file in ["models/ani1x.pt", "models/ani1x_static.pt"] {
        let model = TorchScriptModel::load(&root().join(file), Device::Cpu, Kind::Float).unwrap();
        let e = host(&model.compute(&state).unwrap().energies);
        for (i, (got, want)) in e.iter().zip(TORCHANI_CONFORMERS_EV).enumerate() {
            assert!(
                (got - want).abs() < 1e-6 * want.abs(),
                "{file}, conformer {i}: {got} eV, torchani {want} eV"
            );
        }
    }
}

/// ANI-2xt (models/ani2xt_nl.pt, interface v2, exported from the Auto3D
/// wheel by python/export_ani2xt.py) through the engine's neighbour list, on
/// a molecule with F, S and Cl: energy and largest force equal the
/// reference torchani model built as Auto3D builds it, in float64
/// (python/export_ani2xt.py reference_model(): −37951.20510232262 eV,
/// max |F| = 1.5721505 eV/Å for systems/ani2xt/chlorofluorobenzenesulfonamide.xyz).
#[test]
fn ani2xt_takes_fluorine_sulfur_and_chlorine() {
    let text = format!(
        r#"
[system]
structure = "{}"
[model]
path = "{}"
device = "cpu"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
[ensemble]
members = 2
[run]
steps = 10
"#,
        root()
            .join("systems/ani2xt/chlorofluorobenzenesulfonamide.xyz")
            .display(),
        root().join("models/ani2xt_nl.pt").display()
    );
    let config = mlff_md::config::Config::from_toml(&text, &root().join("ani2xt.toml")).unwrap();
    let sim = mlff_md::simulation::Simulation::from_config(&config).unwrap();
    assert_eq!(
        sim.force.supported_elements(),
        Some(vec![1, 6, 7, 8, 9, 16, 17])
    );
    let reference = -37_951.205_102_322_62;
    for e in host(&sim.state.energies) {
        assert!(((e - reference) / reference).abs() < 1e-8, "{e} eV");
    }
    let max_force = host(&sim.state.forces.abs().max())[0];
    assert!((max_force - 1.572_150_5).abs() < 1e-4, "{max_force} eV/Å");
}
