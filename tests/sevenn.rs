//! SevenNet-0 (models/sevennet_0.pt, interface v2, exported by `make` from
//! the sevenn wheel) in the engine: a periodic silicon crystal gets the
//! energy sevenn's own ASE calculator gives (python/check_sevenn.py prints
//! it for the same file), and a short NPT run of two members with the
//! barostat and the pressure observable goes through.

mod common;

use common::runs::*;
use common::*;
use mlff_md::config::Config;
use mlff_md::simulation::Simulation;

/// sevenn 0.13.0's SevenNetCalculator on systems/crystals/si_diamond_64.pdb
/// (positions rounded to float32, as the engine holds them), eV.
const SEVENN_ENERGY: f64 = -344.942780;

fn si_config(dir: &std::path::Path, extra: &str, steps: u64) -> std::path::PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
periodic = true
[model]
path = "{}"
dtype = "float32"
device = "cpu"
[integrator]
kind = "langevin"
timestep = 1.0
temperature = 300.0
friction = 1.0
[ensemble]
members = 2
seed = 1
{extra}
[run]
steps = {steps}
[output]
directory = "{}"
observables_interval = 2
"#,
        root().join("systems/crystals/si_diamond_64.pdb").display(),
        root().join("models/sevennet_0.pt").display(),
        dir.join("out").display()
    );
    let p = dir.join("si.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn sevennet_gives_silicon_its_reference_energy_and_runs_npt() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = si_config(tmp.path(), "", 1);
    let sim = Simulation::from_config(&Config::from_file(&cfg).unwrap()).unwrap();
    for e in host(&sim.state.energies) {
        let rel = (e - SEVENN_ENERGY).abs() / SEVENN_ENERGY.abs();
        eprintln!("engine {e:.6} eV, sevenn {SEVENN_ENERGY} eV: rel {rel:.1e}");
        assert!(rel < 1e-6, "energy {e} eV, sevenn {SEVENN_ENERGY} eV");
    }
    assert!(sim.records_pressure());

    let cfg = si_config(tmp.path(), "[barostat]\npressure = 1.0\ninterval = 2", 4);
    ok(bin()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap());
    let h5 = common::h5_open(tmp.path().join("out/observables.h5"));
    assert_eq!(read_i64(&h5, "observables/pressure/step"), vec![0, 2, 4]);
    let p = read_f64(&h5, "observables/pressure/value");
    let v = read_f64(&h5, "observables/volume/value");
    assert!(p.iter().all(|x| x.is_finite()), "{p:?}");
    // Two volume moves per member were made (accepted or not): the volumes
    // stay near the crystal's 10.862³ Å³.
    assert!(
        v.iter().all(|x| (x / 10.862f64.powi(3) - 1.0).abs() < 0.05),
        "{v:?}"
    );
}
