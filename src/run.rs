//! Drives a [`Simulation`] for a run: output directory, reporters
//! (trajectories, observables, exchange records), checkpoints, progress,
//! signals and blow-up handling. Observables are pulled to the host only every
//! `observables_interval` steps; nothing in between synchronises.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{BlowupPolicy, Config, GraphPolicy, TrajectoryFormat};
use crate::device::describe;
use crate::error::{Error, Result};
use crate::io::checkpoint::{Checkpoint, ReporterPositions, CHECKPOINT_FILE, PREVIOUS_FILE};
use crate::io::exchange::ExchangeRecorder;
use crate::io::trajectory::{member_file_stem, write_topology};
use crate::io::{ObservablesWriter, TrajectoryWriter};
use crate::minimize::MinimizeReport;
use crate::sampling::{ReplicaExchange, ReplicaExchangeSummary};
use crate::simulation::{list, Simulation};
use crate::state::to_host_f64;
use crate::stepper::Stepper;
use crate::units::FS_PER_NS;
use tch::Device;

pub use crate::simulation::{OBSERVABLES, THERMOSTAT_TEMPERATURE};

/// Options of `mlff-md run` that are not part of the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub quiet: bool,
    /// Replace the results of an earlier run in the output directory.
    pub overwrite: bool,
    /// Continue from the checkpoint in the output directory.
    pub resume: bool,
    /// Set to a signal number (e.g. by a SIGINT handler) to stop cleanly
    /// after the current step.
    pub stop: Option<Arc<AtomicUsize>>,
}

/// Figures of a finished run (also written to `summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Steps taken by the whole run (including before a resume).
    pub steps: u64,
    /// Step this invocation started from (0 unless resumed).
    pub started_at_step: u64,
    pub members: usize,
    pub atoms_per_member: usize,
    pub device: String,
    pub timestep_fs: f64,
    /// Wall time of this invocation's step loop.
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
    /// Members reinitialised after blowing up: (member id, step).
    pub reinitialized: Vec<(usize, u64)>,
    /// Whether steps were replayed from a CUDA graph, or why not.
    pub cuda_graphs: String,
    pub output_directory: PathBuf,
}

/// Files a run writes into its output directory (removed by --overwrite).
fn owned_outputs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "observables.h5",
        "summary.json",
        "topology.pdb",
        "config.toml",
        CHECKPOINT_FILE,
        PREVIOUS_FILE,
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        v.extend(entries.flatten().map(|e| e.path()).filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("member_") || n.starts_with("temperature_"))
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
                "output directory {} already exists and is not empty; pass --resume to continue that run, --overwrite to replace its results, or --output to choose another",
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
    first: u64,
    total: u64,
    last_log: Instant,
    next_log_step: u64,
}

impl Progress {
    fn new(first: u64, total: u64, quiet: bool) -> Self {
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
            bar.set_position(first);
            bar.reset_eta();
            bar
        });
        let tenth = ((total - first.min(total)) / 10).max(1);
        Progress {
            bar,
            log_lines: !quiet && !tty,
            first,
            total,
            last_log: Instant::now(),
            next_log_step: first + tenth,
        }
    }

    fn update(&mut self, step: u64, elapsed: Duration, dt_fs: f64, mean_t: f64) {
        let sps = (step - self.first) as f64 / elapsed.as_secs_f64().max(1e-9);
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
            let tenth = ((self.total - self.first) / 10).max(1);
            while self.next_log_step <= step {
                self.next_log_step += tenth;
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Mean, or NaN for no values (written as null in summary.json).
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// The output files of a run, and where each stands.
struct Reporters {
    trajectories: Option<TrajectoryWriter>,
    /// Demultiplexed per-temperature trajectories (replica exchange).
    demux: Option<TrajectoryWriter>,
    observables: ObservablesWriter,
    exchanges: Option<ExchangeRecorder>,
    /// Batch slots whose trajectories are written.
    slots: Vec<usize>,
    dt: f64,
}

impl Reporters {
    fn stems(sim: &Simulation, slots: &[usize]) -> Vec<String> {
        slots
            .iter()
            .map(|&s| member_file_stem(sim.state.member_ids[s]))
            .collect()
    }

    /// Open the outputs in `out`: fresh ones, or (`resume_at`) those of an
    /// earlier run, cut back to what its checkpoint recorded.
    fn open(
        sim: &Simulation,
        out: &Path,
        slots: Vec<usize>,
        resume_at: Option<&ReporterPositions>,
    ) -> Result<Self> {
        let config = &sim.config;
        let format = config.output.trajectory_format;
        let template = &sim.molecule.template;
        let writing = config.output.trajectory_interval > 0;
        if writing && resume_at.is_none() {
            write_topology(out, template)?;
        }
        let open_trajectories = |stems: &[String]| match resume_at {
            None => TrajectoryWriter::create(out, format, stems, template),
            Some(at) => {
                TrajectoryWriter::append(out, format, stems, template, &at.trajectory_bytes)
            }
        };
        let trajectories = writing
            .then(|| open_trajectories(&Self::stems(sim, &slots)))
            .transpose()?;
        let demux = match (&sim.replica_exchange, writing) {
            (Some(rex), true) => Some(open_trajectories(&demux_stems(rex))?),
            _ => None,
        };
        let path = out.join("observables.h5");
        let names = sim.observable_names();
        let observables = match resume_at {
            None => ObservablesWriter::create(&path, sim.state.n_members, &names, &sim.metadata())?,
            Some(at) => ObservablesWriter::open_existing(
                &path,
                sim.state.n_members,
                &names,
                at.observables_rows,
            )?,
        };
        let exchanges = match (&sim.replica_exchange, resume_at) {
            (None, _) => None,
            (Some(rex), None) => Some(ExchangeRecorder::create(&observables, rex)?),
            (Some(_), Some(at)) => Some(ExchangeRecorder::open_existing(
                &observables,
                at.exchange_rows,
            )?),
        };
        Ok(Reporters {
            trajectories,
            demux,
            observables,
            exchanges,
            slots,
            dt: sim.integrator.timestep(),
        })
    }

    /// Append one observables record; returns the mean kinetic temperature.
    fn record_observables(&mut self, sim: &Simulation) -> Result<f64> {
        let values = sim.observables();
        let refs: Vec<&[f64]> = values.iter().map(Vec::as_slice).collect();
        let step = sim.state.step;
        self.observables
            .append(step, step as f64 * self.dt, &refs)?;
        self.observables.flush()?;
        Ok(mean(&values[3]))
    }

    fn write_frames(&mut self, sim: &Simulation) -> Result<()> {
        if self.trajectories.is_none() && self.demux.is_none() {
            return Ok(());
        }
        let step = sim.state.step;
        let positions = sim.state.positions_host();
        if let Some(t) = self.trajectories.as_mut() {
            t.write(step, step as f64 * self.dt, &positions, &self.slots)?;
        }
        if let (Some(t), Some(rex)) = (self.demux.as_mut(), &sim.replica_exchange) {
            t.write(step, step as f64 * self.dt, &positions, &demux_slots(rex))?;
        }
        Ok(())
    }

    /// Put everything on disk and say where each output stands.
    fn sync(&mut self) -> Result<ReporterPositions> {
        let mut trajectory_bytes = Vec::new();
        for t in [self.trajectories.as_mut(), self.demux.as_mut()]
            .into_iter()
            .flatten()
        {
            trajectory_bytes.extend(t.sync()?);
        }
        self.observables.flush()?;
        Ok(ReporterPositions {
            observables_rows: self.observables.rows(),
            exchange_rows: self.exchanges.as_ref().map_or(0, ExchangeRecorder::rows),
            trajectory_bytes,
        })
    }
}

/// Write a checkpoint of the current state with synced reporters.
fn checkpoint(sim: &Simulation, reporters: &mut Reporters, out: &Path, elapsed: f64) -> Result<()> {
    let positions = reporters.sync()?;
    sim.checkpoint(positions, elapsed).write_atomic(out)
}

fn signal_name(signal: usize) -> &'static str {
    match signal as i32 {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Run a config to completion (or continue it with `options.resume`),
/// writing its outputs.
pub fn run(config: &Config, options: &RunOptions) -> Result<RunSummary> {
    let mut sim = Simulation::from_config(config)?;
    if !options.quiet {
        for w in &sim.molecule.warnings {
            eprintln!("warning: {w}");
        }
    }
    let out = config.output_dir();
    let slots: Vec<usize> = match &config.output.trajectory_members {
        Some(m) => m.clone(),
        None => (0..sim.state.n_members).collect(),
    };
    let mut elapsed_before = 0.0;
    let mut reporters = if options.resume {
        if options.overwrite {
            return Err(Error::Invalid(
                "--resume and --overwrite exclude each other".into(),
            ));
        }
        let (ck, path) = Checkpoint::read_latest(&out)?;
        sim.restore(&ck)?;
        elapsed_before = ck.header.elapsed_seconds;
        if !options.quiet {
            eprintln!(
                "resuming from {} at step {}",
                path.display(),
                ck.header.step
            );
        }
        Reporters::open(&sim, &out, slots, Some(&ck.header.reporters))?
    } else {
        if config.minimize.is_some() {
            let report = sim.minimize()?;
            if !options.quiet {
                eprintln!("{}", minimize_summary(&report));
            }
        }
        prepare_output_dir(&out, options.overwrite)?;
        std::fs::write(out.join("config.toml"), &config.source.text)
            .map_err(|e| Error::output(&out.join("config.toml"), e))?;
        let mut r = Reporters::open(&sim, &out, slots, None)?;
        r.record_observables(&sim)?;
        r.write_frames(&sim)?;
        r
    };

    let dt = sim.integrator.timestep();
    let first = sim.state.step;
    let steps = config.run.steps;
    if first > steps {
        return Err(Error::Invalid(format!(
            "the checkpoint is at step {first}, beyond the {steps} steps asked for; pass --steps N with N > {first}"
        )));
    }
    let obs_every = config.output.observables_interval;
    let traj_every = config.output.trajectory_interval;
    let ck_every = config.output.checkpoint_interval;
    let ck_wall = config
        .output
        .checkpoint_minutes
        .map(|m| Duration::from_secs_f64(m * 60.0));
    let exchange_every = config
        .replica_exchange
        .as_ref()
        .map(|r| r.exchange_interval);

    if !options.quiet {
        eprintln!(
            "mlff-md: {} member(s) × {} atoms on {} | {} | {} | steps {first}..{steps} ({} ps)",
            sim.state.n_members,
            sim.state.n_atoms,
            describe(sim.device),
            sim.force.describe(),
            sim.integrator.describe(),
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

    let mut stepper = Stepper::new(
        config.run.cuda_graphs,
        &sim.state,
        sim.force.as_ref(),
        sim.integrator.as_mut(),
    )?;
    if !options.quiet && (sim.device != Device::Cpu || config.run.cuda_graphs != GraphPolicy::Auto)
    {
        eprintln!("{}", stepper.status());
    }

    let reinit = config.run.on_blowup == BlowupPolicy::Reinitialize;
    let mut last_good = reinit.then(|| sim.snapshot());
    let mut reinitialized = Vec::new();
    let mut last_checkpoint_step = first;
    let mut last_checkpoint_time = Instant::now();
    let mut progress = Progress::new(first, steps, options.quiet);
    let start = Instant::now();
    let mut temps = Vec::new();
    let mut exchange_time = Duration::ZERO;
    while sim.state.step < steps {
        stepper.step(&mut sim.state, sim.force.as_ref(), sim.integrator.as_mut())?;
        let step = sim.state.step;
        let stop = options
            .stop
            .as_ref()
            .map_or(0, |s| s.load(Ordering::SeqCst));
        let wall_due = ck_wall.is_some_and(|w| last_checkpoint_time.elapsed() >= w);
        let ck_due =
            (ck_every > 0 && step % ck_every == 0) || wall_due || step == steps || stop != 0;

        // Health is checked wherever values leave the device or a checkpoint
        // is written, so no checkpoint ever holds a blown-up state.
        if step % obs_every == 0 || ck_due {
            let bad = sim.unhealthy_members();
            if !bad.is_empty() {
                match last_good.as_ref() {
                    Some(snapshot) => {
                        let message = sim.describe_blowup(&bad);
                        sim.reinitialize(&bad, snapshot)?;
                        eprintln!(
                            "warning: {message}; reinitialised from step {} with new velocities",
                            snapshot.step
                        );
                        reinitialized.extend(bad.iter().map(|&s| (sim.state.member_ids[s], step)));
                    }
                    None => {
                        progress.finish();
                        return Err(Error::Simulation(format!(
                            "{}; stopped. The last checkpoint ({}, step {last_checkpoint_step}) is from before it: resume with --resume after fixing the cause (smaller timestep, better starting structure), or set [run] on_blowup = \"reinitialize\"",
                            sim.describe_blowup(&bad),
                            out.join(CHECKPOINT_FILE).display()
                        )));
                    }
                }
            } else if reinit {
                last_good = Some(sim.snapshot());
            }
        }
        if exchange_every.is_some_and(|every| step % every == 0) {
            let t0 = Instant::now();
            if let Some((outcome, energies)) = sim.exchange()? {
                if let (Some(rec), Some(rex)) =
                    (reporters.exchanges.as_mut(), &sim.replica_exchange)
                {
                    rec.record(step, rex, &energies, &outcome)?;
                }
            }
            exchange_time += t0.elapsed();
        }
        if step % obs_every == 0 {
            let mean_t = reporters.record_observables(&sim)?;
            temps.push(mean_t);
            progress.update(step, start.elapsed(), dt, mean_t);
        }
        if traj_every > 0 && step % traj_every == 0 {
            reporters.write_frames(&sim)?;
        }
        if ck_due {
            checkpoint(
                &sim,
                &mut reporters,
                &out,
                elapsed_before + start.elapsed().as_secs_f64(),
            )?;
            last_checkpoint_step = step;
            last_checkpoint_time = Instant::now();
        }
        if stop != 0 {
            progress.finish();
            let resume_hint = format!("mlff-md resume {}", out.display());
            return Err(Error::Interrupted {
                signal: stop as i32,
                message: format!(
                    "interrupted by {} after step {step}: trajectories and observables flushed, checkpoint written to {}; continue with `{resume_hint}`",
                    signal_name(stop),
                    out.join(CHECKPOINT_FILE).display()
                ),
            });
        }
    }
    // The last checkpoint pulled data to the host, so the clock is honest.
    let wall = start.elapsed().as_secs_f64();
    progress.finish();

    let rex_summary = sim.replica_exchange.as_ref().map(|r| r.summary(dt));
    let done = (steps - first) as f64;
    let sps = done / wall.max(1e-12);
    let r = sim.state.n_members as f64;
    let summary = RunSummary {
        steps,
        started_at_step: first,
        members: sim.state.n_members,
        atoms_per_member: sim.state.n_atoms,
        device: describe(sim.device),
        timestep_fs: dt,
        wall_seconds: wall,
        steps_per_second: sps,
        member_steps_per_second: sps * r,
        ns_per_day: sps * dt * 86_400.0 / FS_PER_NS,
        aggregate_ns_per_day: sps * dt * 86_400.0 / FS_PER_NS * r,
        mean_temperature_k: mean(&temps),
        final_potential_energy_ev: to_host_f64(&sim.state.energies),
        exchange_seconds: exchange_time.as_secs_f64(),
        replica_exchange: rex_summary.clone(),
        reinitialized,
        cuda_graphs: stepper.status().to_string(),
        output_directory: out.clone(),
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    reporters.observables.set_parameter("summary", &json)?;
    if let (Some(rec), Some(rex), Some(rs)) =
        (&reporters.exchanges, &sim.replica_exchange, &rex_summary)
    {
        rec.finish(
            rex,
            &serde_json::to_string_pretty(rs).expect("summary serialises"),
        )?;
    }
    reporters.observables.flush()?;
    std::fs::write(out.join("summary.json"), &json)
        .map_err(|e| Error::output(&out.join("summary.json"), e))?;
    if !options.quiet {
        let mean_t = if temps.is_empty() {
            "n/a (no observables interval reached)".to_string()
        } else {
            format!("{:.1} K", summary.mean_temperature_k)
        };
        eprintln!(
            "done: steps {first}..{steps} in {wall:.2} s: {sps:.1} steps/s, {:.3} ns/day per member, {:.1} member-steps/s; <T> = {mean_t}",
            summary.ns_per_day, summary.member_steps_per_second
        );
        if let Some(rs) = &rex_summary {
            eprintln!("{}", rs.report());
            eprintln!(
                "  exchange overhead: {:.3} s of {wall:.2} s ({:.2} %)",
                summary.exchange_seconds,
                100.0 * summary.exchange_seconds / wall.max(1e-12)
            );
        }
        if !summary.reinitialized.is_empty() {
            let ids: Vec<usize> = summary.reinitialized.iter().map(|(m, _)| *m).collect();
            eprintln!(
                "warning: {} blow-up(s) reinitialised (members {})",
                ids.len(),
                list(&ids)
            );
        }
        eprintln!("outputs: {}", out.display());
    }
    Ok(summary)
}

/// One line about a minimisation.
pub fn minimize_summary(report: &MinimizeReport) -> String {
    let n = report.converged.len();
    let converged = report.converged.iter().filter(|&&c| c).count();
    let worst = report.max_force.iter().cloned().fold(0.0, f64::max);
    let de: Vec<f64> = report
        .energy_after
        .iter()
        .zip(&report.energy_before)
        .map(|(a, b)| a - b)
        .collect();
    format!(
        "minimised {n} member(s) with FIRE in {} iterations: {converged}/{n} converged, largest force {worst:.4} eV/Å, mean energy change {:.4} eV",
        report.iterations,
        mean(&de)
    )
}

/// `mlff-md minimize`: minimise every member and write the structures to
/// `minimized.pdb` (one MODEL per member) in the output directory.
pub fn minimize(config: &Config, overwrite: bool) -> Result<(MinimizeReport, PathBuf)> {
    let mut sim = Simulation::from_config(config)?;
    let report = sim.minimize()?;
    let out = config.output_dir();
    std::fs::create_dir_all(&out).map_err(|e| Error::output(&out, e))?;
    let path = out.join("minimized.pdb");
    if path.exists() && !overwrite {
        return Err(Error::Invalid(format!(
            "{} exists; pass --overwrite to replace it",
            path.display()
        )));
    }
    let mut writer = TrajectoryWriter::create(
        &out,
        TrajectoryFormat::Pdb,
        &["minimized".to_string()],
        &sim.molecule.template,
    )?;
    let positions = sim.state.positions_host();
    for slot in 0..sim.state.n_members {
        writer.write(slot as u64, 0.0, &positions, &[slot])?;
    }
    Ok((report, path))
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
