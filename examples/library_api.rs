//! Using mlff-md as a library: build a simulation from config text, step it,
//! exchange temperatures, and read observables — no files written.
//!
//!     cargo run --release --example library_api
//!
//! (Run from the repository root, inside the project venv, as for any cargo
//! command: `source .venv/bin/activate`.)

use std::path::Path;

use mlff_md::config::Config;
use mlff_md::simulation::Simulation;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Relative paths resolve against the config's directory: the repo root here.
    let text = r#"
[system]
structure = "systems/peptides/alanine_dipeptide.pdb"
[model]
path = "models/ani1x.pt"
device = "auto"
[integrator]
kind = "langevin"
timestep = 0.5
friction = 2.0
[replica_exchange]
temperatures = [300.0, 330.0, 365.0, 400.0]
exchange_interval = 20
[run]
steps = 200
"#;
    let config = Config::from_toml(text, Path::new("./example.toml"))?;
    let mut sim = Simulation::from_config(&config)?;
    let report = sim.minimize(false)?;
    println!(
        "minimised: largest force {:.3} eV/Å",
        report.max_force.iter().cloned().fold(0.0, f64::max)
    );
    for _ in 0..config.run.steps {
        sim.integrator.step(&mut sim.state, sim.force.as_ref())?;
        // The moves due at this step (here: an exchange every 20 steps).
        sim.attempt_moves(true)?;
    }
    let observables = sim.observables()?;
    println!("potential energies (eV): {:?}", observables[0]);
    println!("kinetic temperatures (K): {:?}", observables[3]);
    if let Some(rex) = sim.replica_exchange() {
        println!("{}", rex.summary(0.5).report());
    }
    Ok(())
}
