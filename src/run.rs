//! Wires one simulation from a config: system, device, state, force provider,
//! integrator and reporters; then runs the step loop, pulling observables to
//! the host only every `observables_interval` steps.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::config::{Config, IntegratorKind, ModelKind, VelocityInit};
use crate::device::{describe, parse_device, resolve};
use crate::error::{Error, Result};
use crate::force::{update_forces, ForceProvider, Harmonic, LennardJones, TorchScriptModel};
use crate::integrate::{degrees_of_freedom, Integrator, Langevin, VelocityVerlet};
use crate::io::exchange::ExchangeRecorder;
use crate::io::trajectory::{member_file_stem, write_topology};
use crate::io::{ObservablesWriter, TrajectoryWriter};
use crate::rng::{splitmix64, CounterRng};
use crate::sampling::{ExchangeOutcome, ReplicaExchange, ReplicaExchangeSummary};
use crate::state::{to_host_f64, BatchState};
use crate::system::Molecule;
use crate::units::{FS_PER_NS, KB_EV_PER_K};

/// Everything a run needs, built and checked from a config.
pub struct Simulation {
    pub config: Config,
    pub molecule: Molecule,
    pub device: Device,
    pub state: BatchState,
    pub force: Box<dyn ForceProvider>,
    pub integrator: Box<dyn Integrator>,
    /// Degrees of freedom per member for the kinetic temperature.
    pub dof: f64,
    /// SHA-256 of the model file (TorchScript models).
    pub model_sha256: Option<String>,
    /// Temperature replica exchange, when configured.
    pub replica_exchange: Option<ReplicaExchange>,
}

/// Names and units of the recorded observables, in record order.
pub const OBSERVABLES: [(&str, &str); 4] = [
    ("potential_energy", "eV"),
    ("kinetic_energy", "eV"),
    ("total_energy", "eV"),
    ("temperature", "K"),
];

/// Recorded in addition under replica exchange: each replica's current
/// thermostat temperature.
pub const THERMOSTAT_TEMPERATURE: (&str, &str) = ("thermostat_temperature", "K");

impl Simulation {
    /// Load the system and model, place R members on the device, draw initial
    /// velocities and evaluate the initial forces.
    pub fn from_config(config: &Config) -> Result<Simulation> {
        let molecule = Molecule::load(&config.structure_paths())?;
        let spec = parse_device(&config.model.device).map_err(Error::Invalid)?;
        let device = resolve(spec).map_err(Error::Invalid)?;
        let kind = config.integrator.precision.kind();
        let mut state = BatchState::new(&molecule, config.n_members(), device, kind);

        let mut model_sha256 = None;
        let force: Box<dyn ForceProvider> = match config.model.kind {
            ModelKind::Torchscript => {
                let path = config.resolve(config.model.path.as_deref().unwrap_or(Path::new("")));
                let model = TorchScriptModel::load(&path, device, config.model.dtype.kind())?;
                model_sha256 = std::fs::read(&path).ok().map(|b| hex(&Sha256::digest(b)));
                Box::new(model)
            }
            ModelKind::Harmonic => Box::new(Harmonic::at_current_positions(
                &state,
                config.model.k.unwrap_or_default(),
            )),
            ModelKind::LennardJones => Box::new(LennardJones {
                epsilon: config.model.epsilon.unwrap_or_default(),
                sigma: config.model.sigma.unwrap_or_default(),
            }),
        };
        check_elements(&molecule, force.as_ref(), config)?;

        let seed = config.ensemble.seed;
        let replica_exchange = config.replica_exchange.as_ref().map(|rex| {
            ReplicaExchange::new(
                rex.ladder(),
                rex.members_per_temperature,
                rex.scheme,
                rex.swap_attempts,
                seed,
            )
        });
        // Thermostat temperature of each member: its rung of the ladder, or the one temperature.
        let temperatures = match &replica_exchange {
            Some(rex) => Tensor::from_slice(&rex.replica_temperatures()).to_device(device),
            None => Tensor::full(
                [state.n_members as i64],
                config.integrator.temperature.unwrap_or_default(),
                (Kind::Double, device),
            ),
        };
        let mut rng = CounterRng::new(splitmix64(seed ^ 0x5645_4c4f_4349_5459));
        match (&replica_exchange, config.initial_temperature()) {
            // Replicas start at their own temperatures unless one is given.
            (Some(_), None) if config.ensemble.velocities == VelocityInit::MaxwellBoltzmann => {
                state.set_maxwell_boltzmann_per_member(&temperatures, &mut rng)
            }
            (_, Some(t)) => state.set_maxwell_boltzmann(t, &mut rng),
            _ => {}
        }
        let dt = config.integrator.timestep;
        let integrator: Box<dyn Integrator> = match config.integrator.kind {
            IntegratorKind::Verlet => Box::new(VelocityVerlet::new(&state, dt)),
            IntegratorKind::Langevin => Box::new(Langevin::with_temperatures(
                &state,
                dt,
                config.integrator.friction,
                temperatures,
                seed,
            )),
        };
        update_forces(&mut state, force.as_ref())?;
        let dof = degrees_of_freedom(state.n_atoms, integrator.as_ref());
        let sim = Simulation {
            config: config.clone(),
            molecule,
            device,
            state,
            force,
            integrator,
            dof,
            model_sha256,
            replica_exchange,
        };
        sim.check_finite("the starting structures")?;
        Ok(sim)
    }

    /// The observables recorded for this run, (name, unit) in record order.
    pub fn observable_names(&self) -> Vec<(&'static str, &'static str)> {
        let mut names = OBSERVABLES.to_vec();
        if self.replica_exchange.is_some() {
            names.push(THERMOSTAT_TEMPERATURE);
        }
        names
    }

    /// Host copies of the observables ([R] each, in `observable_names` order),
    /// from one device→host transfer.
    pub fn observables(&self) -> Vec<Vec<f64>> {
        let r = self.state.n_members;
        let both = Tensor::cat(&[&self.state.energies, &self.state.kinetic_energy()], 0);
        let host = to_host_f64(&both);
        let (epot, ke) = host.split_at(r);
        let total: Vec<f64> = epot.iter().zip(ke).map(|(a, b)| a + b).collect();
        let temp: Vec<f64> = ke
            .iter()
            .map(|k| 2.0 * k / (self.dof * KB_EV_PER_K))
            .collect();
        let mut values = vec![epot.to_vec(), ke.to_vec(), total, temp];
        if let Some(rex) = &self.replica_exchange {
            values.push(rex.replica_temperatures());
        }
        values
    }

    /// One replica-exchange attempt (call every exchange interval): pulls the
    /// [R] energies to the host, decides, and pushes temperatures and velocity
    /// scales back only if a swap was accepted.
    pub fn exchange(&mut self) -> Result<Option<(ExchangeOutcome, Vec<f64>)>> {
        let Some(rex) = self.replica_exchange.as_mut() else {
            return Ok(None);
        };
        let energies = to_host_f64(&self.state.energies);
        let old = rex.replica_temperatures();
        let outcome = rex.exchange(&energies, self.state.step);
        if outcome.accepted > 0 {
            rex.apply(&old, &mut self.state, self.integrator.as_mut())?;
        }
        Ok(Some((outcome, energies)))
    }

    /// Fail with the offending members if any energy or force is not finite.
    pub fn check_finite(&self, when: &str) -> Result<()> {
        let r = self.state.n_members as i64;
        let bad_force = self
            .state
            .forces
            .isfinite()
            .logical_not()
            .view([r, -1])
            .any_dim(1, false);
        let bad = self
            .state
            .energies
            .isfinite()
            .logical_not()
            .logical_or(&bad_force);
        let flags = to_host_f64(&bad.to_kind(Kind::Double));
        let members: Vec<usize> = flags
            .iter()
            .enumerate()
            .filter(|(_, &f)| f != 0.0)
            .map(|(i, _)| self.state.member_ids[i])
            .collect();
        if members.is_empty() {
            return Ok(());
        }
        let msg = format!(
            "non-finite energy or forces for member(s) {} at {when} (step {}); the model {} produced NaN/inf",
            list(&members),
            self.state.step,
            self.force.describe()
        );
        if self.state.step == 0 {
            let path = self.config.model.path.clone().unwrap_or_default();
            Err(Error::model(&self.config.resolve(&path), msg))
        } else {
            Err(Error::Simulation(msg))
        }
    }

    /// Metadata stored with the observables.
    fn metadata(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        vec![
            ("config", c.source.text.clone()),
            ("config_path", c.source.path.display().to_string()),
            ("model", self.force.describe()),
            (
                "model_sha256",
                self.model_sha256.clone().unwrap_or_default(),
            ),
            ("integrator", self.integrator.describe()),
            ("device", describe(self.device)),
            ("members", self.state.n_members.to_string()),
            ("atoms_per_member", self.state.n_atoms.to_string()),
            ("degrees_of_freedom_per_member", self.dof.to_string()),
            ("timestep_fs", self.integrator.timestep().to_string()),
            ("seed", c.ensemble.seed.to_string()),
            (
                "replica_exchange",
                self.replica_exchange
                    .as_ref()
                    .map(|r| {
                        format!(
                            "{:?} scheme, {} temperatures, {} ladder(s)",
                            r.scheme,
                            r.n_states(),
                            r.n_ladders
                        )
                    })
                    .unwrap_or_default(),
            ),
            ("mlff_md_version", env!("CARGO_PKG_VERSION").to_string()),
            ("libtorch", "tch 0.24.0 / libtorch 2.11.0".to_string()),
            ("chemfiles_version", chemfiles::version()),
        ]
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn list(v: &[usize]) -> String {
    let shown: Vec<String> = v.iter().take(10).map(|x| x.to_string()).collect();
    if v.len() > 10 {
        format!("{} and {} more", shown.join(", "), v.len() - 10)
    } else {
        shown.join(", ")
    }
}

fn element_symbol(z: i64) -> String {
    let mut atom = chemfiles::Atom::new("X");
    for name in [
        "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
        "Cl", "Ar", "K", "Ca",
    ] {
        atom.set_atomic_type(name);
        if atom.atomic_number() as i64 == z {
            return name.to_string();
        }
    }
    format!("Z={z}")
}

/// Refuse systems with elements the model says it does not support.
fn check_elements(molecule: &Molecule, force: &dyn ForceProvider, config: &Config) -> Result<()> {
    let Some(supported) = force.supported_elements() else {
        return Ok(());
    };
    let mut missing: Vec<i64> = molecule
        .atomic_numbers
        .iter()
        .copied()
        .filter(|z| !supported.contains(z))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|&z| element_symbol(z)).collect();
    let path = config.resolve(config.model.path.as_deref().unwrap_or(Path::new("")));
    Err(Error::model(
        &path,
        format!(
            "does not support element(s) {} present in {}",
            names.join(", "),
            molecule.sources[0].display()
        ),
    ))
}

/// Options of `mlff-md run` that are not part of the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub quiet: bool,
    pub overwrite: bool,
}

/// Figures of a finished run (also written to `summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub steps: u64,
    pub members: usize,
    pub atoms_per_member: usize,
    pub device: String,
    pub timestep_fs: f64,
    pub wall_seconds: f64,
    pub steps_per_second: f64,
    pub member_steps_per_second: f64,
    pub ns_per_day: f64,
    pub aggregate_ns_per_day: f64,
    pub mean_temperature_k: f64,
    pub final_potential_energy_ev: Vec<f64>,
    /// Wall time spent in replica-exchange moves (energy copy, decision, update).
    pub exchange_seconds: f64,
    pub replica_exchange: Option<ReplicaExchangeSummary>,
    pub output_directory: PathBuf,
}

/// Files a run writes into its output directory (removed by --overwrite).
fn owned_outputs(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![
        dir.join("observables.h5"),
        dir.join("summary.json"),
        dir.join("topology.pdb"),
        dir.join("config.toml"),
    ];
    if let Ok(entries) = std::fs::read_dir(dir) {
        v.extend(entries.flatten().map(|e| e.path()).filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("member_"))
        }));
    }
    v
}

fn prepare_output_dir(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| Error::output(dir, e))?
            .next()
            .is_some();
        if non_empty && !overwrite {
            return Err(Error::Invalid(format!(
                "output directory {} already exists and is not empty; pass --overwrite to replace its results or --output to choose another",
                dir.display()
            )));
        }
        for p in owned_outputs(dir) {
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| Error::output(&p, e))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))
}

/// Progress: a bar on a terminal, a line every ~10% (and at most every 30 s) otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    log_lines: bool,
    total: u64,
    last_log: Instant,
    next_log_step: u64,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {pos}/{len} steps  {msg}  ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            log_lines: !quiet && !tty,
            total,
            last_log: Instant::now(),
            next_log_step: (total / 10).max(1),
        }
    }

    fn update(&mut self, step: u64, elapsed: Duration, dt_fs: f64, mean_t: f64) {
        let sps = step as f64 / elapsed.as_secs_f64().max(1e-9);
        let ns_day = sps * dt_fs * 86_400.0 / FS_PER_NS;
        let msg = format!("{sps:.1} steps/s  {ns_day:.3} ns/day  <T> {mean_t:.1} K");
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(msg);
        } else if self.log_lines
            && (step >= self.next_log_step || self.last_log.elapsed() > Duration::from_secs(30))
        {
            let eta = (self.total - step) as f64 / sps.max(1e-9);
            eprintln!("step {step}/{}  {msg}  ETA {eta:.0} s", self.total);
            self.last_log = Instant::now();
            while self.next_log_step <= step {
                self.next_log_step += (self.total / 10).max(1);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Run a config to completion, writing its outputs.
pub fn run(config: &Config, options: &RunOptions) -> Result<RunSummary> {
    let mut sim = Simulation::from_config(config)?;
    for w in &sim.molecule.warnings {
        eprintln!("warning: {w}");
    }
    let out = config.output_dir();
    prepare_output_dir(&out, options.overwrite)?;
    std::fs::write(out.join("config.toml"), &config.source.text)
        .map_err(|e| Error::output(&out.join("config.toml"), e))?;

    let dt = sim.integrator.timestep();
    let steps = config.run.steps;
    let obs_every = config.output.observables_interval;
    let traj_every = config.output.trajectory_interval;

    let slots: Vec<usize> = match &config.output.trajectory_members {
        Some(m) => m.clone(),
        None => (0..sim.state.n_members).collect(),
    };
    let mut trajectories = if traj_every > 0 {
        write_topology(&out, &sim.molecule.template)?;
        let stems: Vec<String> = slots
            .iter()
            .map(|&s| member_file_stem(sim.state.member_ids[s]))
            .collect();
        Some(TrajectoryWriter::create(
            &out,
            config.output.trajectory_format,
            &stems,
            &sim.molecule.template,
        )?)
    } else {
        None
    };
    // Demultiplexed trajectories: one per temperature (and ladder).
    let mut demux = match (&sim.replica_exchange, traj_every > 0) {
        (Some(rex), true) => Some(TrajectoryWriter::create(
            &out,
            config.output.trajectory_format,
            &demux_stems(rex),
            &sim.molecule.template,
        )?),
        _ => None,
    };
    let names = sim.observable_names();
    let mut observables = ObservablesWriter::create(
        &out.join("observables.h5"),
        sim.state.n_members,
        &names,
        &sim.metadata(),
    )?;
    let mut exchanges = match &sim.replica_exchange {
        Some(rex) => Some(ExchangeRecorder::create(&observables, rex)?),
        None => None,
    };
    let exchange_every = config
        .replica_exchange
        .as_ref()
        .map(|r| r.exchange_interval);

    if !options.quiet {
        eprintln!(
            "mlff-md: {} member(s) × {} atoms on {} | {} | {} | {} steps ({} ps)",
            sim.state.n_members,
            sim.state.n_atoms,
            describe(sim.device),
            sim.force.describe(),
            sim.integrator.describe(),
            steps,
            steps as f64 * dt * 1e-3
        );
        if let Some(rex) = &sim.replica_exchange {
            let ladder: Vec<String> = rex.temperatures.iter().map(|t| format!("{t:.1}")).collect();
            eprintln!(
                "replica exchange: {:?}, every {} steps, {} ladder(s) of [{}] K",
                rex.scheme,
                exchange_every.unwrap_or_default(),
                rex.n_ladders,
                ladder.join(", ")
            );
        }
    }

    let record = |sim: &Simulation, obs: &mut ObservablesWriter, step: u64| -> Result<f64> {
        let values = sim.observables();
        let refs: Vec<&[f64]> = values.iter().map(Vec::as_slice).collect();
        obs.append(step, step as f64 * dt, &refs)?;
        Ok(mean(&values[3]))
    };
    let write_frames = |sim: &Simulation,
                        trajectories: &mut Option<TrajectoryWriter>,
                        demux: &mut Option<TrajectoryWriter>|
     -> Result<()> {
        if trajectories.is_none() && demux.is_none() {
            return Ok(());
        }
        let step = sim.state.step;
        let positions = sim.state.positions_host();
        if let Some(t) = trajectories.as_mut() {
            t.write(step, step as f64 * dt, &positions, &slots)?;
        }
        if let (Some(t), Some(rex)) = (demux.as_mut(), &sim.replica_exchange) {
            t.write(step, step as f64 * dt, &positions, &demux_slots(rex))?;
        }
        Ok(())
    };
    record(&sim, &mut observables, 0)?;
    write_frames(&sim, &mut trajectories, &mut demux)?;

    let mut progress = Progress::new(steps, options.quiet);
    let start = Instant::now();
    let mut temps = Vec::new();
    let mut exchange_time = Duration::ZERO;
    for _ in 0..steps {
        sim.integrator.step(&mut sim.state, sim.force.as_ref())?;
        let step = sim.state.step;
        if exchange_every.is_some_and(|every| step % every == 0) {
            let t0 = Instant::now();
            if let Some((outcome, energies)) = sim.exchange()? {
                if let (Some(rec), Some(rex)) = (exchanges.as_mut(), &sim.replica_exchange) {
                    rec.record(step, rex, &energies, &outcome)?;
                }
            }
            exchange_time += t0.elapsed();
        }
        if step % obs_every == 0 || step == steps {
            sim.check_finite("an observables report")?;
            let mean_t = record(&sim, &mut observables, step)?;
            temps.push(mean_t);
            progress.update(step, start.elapsed(), dt, mean_t);
        }
        if traj_every > 0 && step % traj_every == 0 {
            write_frames(&sim, &mut trajectories, &mut demux)?;
        }
    }
    // The last record above pulled data to the host, so the clock is honest.
    let wall = start.elapsed().as_secs_f64();
    progress.finish();
    drop(trajectories);
    drop(demux);

    let rex_summary = sim.replica_exchange.as_ref().map(|r| r.summary(dt));
    let sps = steps as f64 / wall.max(1e-12);
    let summary = RunSummary {
        steps,
        members: sim.state.n_members,
        atoms_per_member: sim.state.n_atoms,
        device: describe(sim.device),
        timestep_fs: dt,
        wall_seconds: wall,
        steps_per_second: sps,
        member_steps_per_second: sps * sim.state.n_members as f64,
        ns_per_day: sps * dt * 86_400.0 / FS_PER_NS,
        aggregate_ns_per_day: sps * dt * 86_400.0 / FS_PER_NS * sim.state.n_members as f64,
        mean_temperature_k: mean(&temps),
        final_potential_energy_ev: to_host_f64(&sim.state.energies),
        exchange_seconds: exchange_time.as_secs_f64(),
        replica_exchange: rex_summary.clone(),
        output_directory: out.clone(),
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    observables.set_parameter("summary", &json)?;
    if let (Some(rec), Some(rex), Some(rs)) = (&exchanges, &sim.replica_exchange, &rex_summary) {
        rec.finish(
            rex,
            &serde_json::to_string_pretty(rs).expect("summary serialises"),
        )?;
    }
    observables.flush()?;
    std::fs::write(out.join("summary.json"), &json)
        .map_err(|e| Error::output(&out.join("summary.json"), e))?;
    if !options.quiet {
        eprintln!(
            "done: {steps} steps in {wall:.2} s: {sps:.1} steps/s, {:.3} ns/day per member, {:.1} member-steps/s; <T> = {:.1} K",
            summary.ns_per_day,
            summary.member_steps_per_second,
            summary.mean_temperature_k
        );
        if let Some(rs) = &rex_summary {
            eprintln!("{}", rs.report());
            eprintln!(
                "  exchange overhead: {:.3} s of {wall:.2} s ({:.2} %)",
                summary.exchange_seconds,
                100.0 * summary.exchange_seconds / wall.max(1e-12)
            );
        }
        eprintln!("outputs: {}", out.display());
    }
    Ok(summary)
}

/// File stems of demultiplexed trajectories: one per temperature (and ladder).
fn demux_stems(rex: &ReplicaExchange) -> Vec<String> {
    let mut stems = Vec::new();
    for l in 0..rex.n_ladders {
        for (k, t) in rex.temperatures.iter().enumerate() {
            let ladder = if rex.n_ladders > 1 {
                format!("_ladder{l}")
            } else {
                String::new()
            };
            stems.push(format!("temperature_{k:02}_{t:.1}K{ladder}"));
        }
    }
    stems
}

/// Batch slot now holding each demultiplexed temperature, in `demux_stems` order.
fn demux_slots(rex: &ReplicaExchange) -> Vec<usize> {
    (0..rex.n_ladders)
        .flat_map(|l| (0..rex.n_states()).map(move |k| rex.replica_at(l, k)))
        .collect()
}

/// What `mlff-md validate` reports.
#[derive(Debug, Clone)]
pub struct Validation {
    pub members: usize,
    pub atoms: usize,
    pub structures: usize,
    pub device: String,
    pub model: String,
    pub energies_ev: Vec<f64>,
    pub warnings: Vec<String>,
}

/// Build everything and evaluate the model once, without running or writing.
pub fn validate(config: &Config) -> Result<Validation> {
    let sim = Simulation::from_config(config)?;
    Ok(Validation {
        members: sim.state.n_members,
        atoms: sim.state.n_atoms,
        structures: sim.molecule.structures.len(),
        device: describe(sim.device),
        model: sim.force.describe(),
        energies_ev: to_host_f64(&sim.state.energies),
        warnings: sim.molecule.warnings.clone(),
    })
}
