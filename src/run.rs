//! Drives a [`Simulation`] for a run: output directory, reporters
//! (trajectories, observables, exchange records), checkpoints, progress,
//! signals and blow-up handling. Observables are pulled to the host only every
//! `observables_interval` steps; nothing in between synchronises.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{BlowupPolicy, Config, GraphPolicy, TrajectoryFormat, WrapMode};
use crate::device::describe;
use crate::error::{Error, Result};
use crate::io::checkpoint::{Checkpoint, ReporterPositions, CHECKPOINT_FILE, PREVIOUS_FILE};
use crate::io::exchange::ExchangeRecorder;
use crate::io::lock::{OutputLock, LOCK_FILE};
use crate::io::trajectory::{member_file_stem, write_topology};
use crate::io::wrap::MoleculeWrapper;
use crate::io::{ObservablesWriter, TrajectoryWriter};
use crate::minimize::MinimizeReport;
use crate::sampling::{ReplicaExchange, ReplicaExchangeSummary};
use crate::simulation::{check_resume_setup, list, model_file_sha256, Simulation};
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
    /// `[run] steps` was given on the command line: when resuming it wins
    /// over the target stored in the checkpoint.
    pub steps_given: bool,
    /// Resume even though the model file's contents changed.
    pub allow_model_change: bool,
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
    /// Barostat: fraction of volume moves accepted and final volume (Å³),
    /// per member.
    pub barostat_acceptance: Option<Vec<f64>>,
    pub final_volume_a3: Option<Vec<f64>>,
    pub output_directory: PathBuf,
}

/// What `run` did.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// Ran (or continued) to the end.
    Finished(Box<RunSummary>),
    /// A resume found the run already at its target: nothing was changed.
    AlreadyComplete { step: u64, directory: PathBuf },
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

/// Whether `dir` can take a fresh run's outputs: an input error (exit 2)
/// when it is a file, or holds an earlier run's results and `overwrite` is
/// off. Writes nothing.
fn check_output_dir(dir: &Path, overwrite: bool) -> Result<()> {
    refuse_non_directory(dir)?;
    if dir.is_dir() {
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| Error::output_path(dir, format!("cannot read: {e}")))?
            .flatten()
            .any(|e| e.file_name() != LOCK_FILE);
        if non_empty && !overwrite {
            return Err(Error::Invalid(format!(
                "output directory {} already exists and is not empty; pass --resume to continue that run, --overwrite to replace its results, or --output to choose another",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// An input error (exit 2) when `dir` exists but is not a directory.
fn refuse_non_directory(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::output_path(
            dir,
            "is a file, not a directory; choose another --output (or [output] directory)",
        ));
    }
    Ok(())
}

/// Create `dir` if needed and lock it for this process (exit 2 when another
/// process holds it, or when it cannot be created or written).
fn lock_output_dir(dir: &Path) -> Result<OutputLock> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::output_path(dir, format!("cannot create the output directory: {e}")))?;
    OutputLock::acquire(dir)
}

/// Remove an earlier run's results (under `--overwrite`, with the lock held).
fn remove_owned_outputs(dir: &Path) -> Result<()> {
    for p in owned_outputs(dir) {
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::output_path(&p, e))?;
        }
    }
    Ok(())
}

/// Simulated time for messages: "50 fs", "0.7 ps", "2 ns".
pub fn format_time_fs(fs: f64) -> String {
    let (value, unit) = if fs.abs() >= 1e6 {
        (fs * 1e-6, "ns")
    } else if fs.abs() >= 100.0 {
        (fs * 1e-3, "ps")
    } else {
        (fs, "fs")
    };
    // Rounded to 1e-6 of the unit, without trailing zeros: 0.7 ps, not 0.7000000000000001 ps.
    let text = format!("{value:.6}");
    let shown = text.trim_end_matches('0').trim_end_matches('.');
    format!("{shown} {unit}")
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

    /// A line that must not tear the bar.
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.log_lines => eprintln!("{line}"),
            None => {}
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
    /// Makes periodic members' molecules whole in written frames
    /// ([output] wrap = "molecules").
    wrapper: Option<MoleculeWrapper>,
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
            None => ObservablesWriter::create(
                &path,
                sim.state.n_members,
                &names,
                &sim.metadata(),
                &config.author(),
            )?,
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
        let wrapper = (sim.state.cells.is_some() && config.output.wrap == WrapMode::Molecules)
            .then(|| MoleculeWrapper::new(template.size(), &template.topology().bonds()));
        Ok(Reporters {
            trajectories,
            demux,
            observables,
            exchanges,
            slots,
            wrapper,
        })
    }

    /// Append one observables record; returns the mean kinetic temperature.
    fn record_observables(&mut self, sim: &Simulation) -> Result<f64> {
        let values = sim.observables();
        let refs: Vec<&[f64]> = values.iter().map(Vec::as_slice).collect();
        let step = sim.state.step;
        self.observables.append(step, sim.time_fs(), &refs)?;
        self.observables.flush()?;
        Ok(mean(&values[3]))
    }

    fn write_frames(&mut self, sim: &Simulation) -> Result<()> {
        if self.trajectories.is_none() && self.demux.is_none() {
            return Ok(());
        }
        let step = sim.state.step;
        let mut positions = sim.state.positions_host();
        let cells = sim.cells()?;
        if let (Some(w), Some(cells)) = (&self.wrapper, &cells) {
            w.wrap(&mut positions, cells);
        }
        let time = sim.time_fs();
        let cells = cells.as_deref();
        if let Some(t) = self.trajectories.as_mut() {
            t.write(step, time, &positions, &self.slots, cells)?;
        }
        if let (Some(t), Some(rex)) = (self.demux.as_mut(), &sim.replica_exchange) {
            t.write(step, time, &positions, &demux_slots(rex), cells)?;
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

/// The step count a resumed run goes to: `--steps` when given; else the
/// config's `[run] steps` if the config file was edited to change it; else
/// the target stored in the checkpoint (what the interrupted run was asked
/// for, `--steps` included).
fn resume_target(config: &Config, options: &RunOptions, ck: &Checkpoint) -> u64 {
    if options.steps_given {
        return config.run.steps;
    }
    let steps_then = ck
        .header
        .config_text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("run")?.get("steps")?.as_integer());
    let edited = steps_then.is_some_and(|s| s != config.run.steps as i64);
    match ck.header.target_steps {
        Some(target) if !edited => target,
        _ => config.run.steps,
    }
}

/// Run a config to completion (or continue it with `options.resume`),
/// writing its outputs. Everything that can be refused is refused before
/// anything is written: the model, structures, device, CUDA-graph policy and
/// output directory are checked first, and the output directory is locked
/// for the whole run.
/// The stepper for the simulation as it is now: at the start, and after
/// anything that changed the shapes a captured step reads (a grown list).
fn stepper_for(config: &Config, sim: &mut Simulation) -> Result<Stepper> {
    Stepper::new(
        config.run.cuda_graphs,
        &sim.state,
        sim.force.as_ref(),
        sim.integrator.as_mut(),
    )
}

pub fn run(config: &Config, options: &RunOptions) -> Result<RunOutcome> {
    if options.resume && options.overwrite {
        return Err(Error::Invalid(
            "--resume and --overwrite exclude each other".into(),
        ));
    }
    let out = config.output_dir();
    let mut config = config.clone();
    let mut lock = None;
    let mut resumed = None;
    if options.resume {
        if !out.is_dir() {
            return Err(Error::Invalid(format!(
                "no run to resume in {}: the directory does not exist",
                out.display()
            )));
        }
        lock = Some(OutputLock::acquire(&out)?);
        let (ck, path, note) = Checkpoint::read_latest_noting(&out)?;
        // A different setup is refused before anything else, even for a
        // finished run.
        check_resume_setup(
            &config,
            &ck.header,
            model_file_sha256(&config).as_deref(),
            options.allow_model_change,
        )?;
        let target = resume_target(&config, options, &ck);
        let at = ck.header.step;
        if at == target {
            return Ok(RunOutcome::AlreadyComplete {
                step: at,
                directory: out,
            });
        }
        if at > target {
            return Err(Error::Invalid(format!(
                "the checkpoint is at step {at}, beyond the {target} steps asked for; pass --steps N with N > {at} to extend the run"
            )));
        }
        config.run.steps = target;
        resumed = Some((ck, path, note));
    }
    let config = &config;
    let mut sim = Simulation::from_config(config)?;
    if !options.quiet {
        for w in &sim.molecule.warnings {
            eprintln!("warning: {w}");
        }
    }
    let slots: Vec<usize> = match &config.output.trajectory_members {
        Some(m) => m.clone(),
        None => (0..sim.state.n_members).collect(),
    };
    let mut elapsed_before = 0.0;
    // Step of the checkpoint the run can go back to, if any.
    let mut last_checkpoint: Option<u64> = None;
    if let Some((ck, _, _)) = &resumed {
        sim.restore(ck, options.allow_model_change)?;
    }
    // Built on the restored state: prepare() sees the batch it will step.
    let mut stepper = stepper_for(config, &mut sim)?;
    let mut reporters = if let Some((ck, path, note)) = resumed {
        elapsed_before = ck.header.elapsed_seconds;
        last_checkpoint = Some(ck.header.step);
        if !options.quiet {
            if let Some(note) = note {
                eprintln!("warning: {note}");
            }
            eprintln!(
                "resuming from {} at step {}",
                path.display(),
                ck.header.step
            );
        }
        let r = Reporters::open(&sim, &out, slots, Some(&ck.header.reporters))?;
        if let (Some(then), Some(now)) = (&ck.header.model_sha256, &sim.model_sha256) {
            if then != now {
                eprintln!(
                    "warning: continuing with a changed model file (SHA-256 {then} until step {}, {now} from then on; --allow-model-change)",
                    ck.header.step
                );
                let history = format!("{then} until step {}; {now} after", ck.header.step);
                r.observables.set_parameter("model_sha256", now)?;
                r.observables
                    .set_parameter("model_sha256_history", &history)?;
            }
        }
        r
    } else {
        check_output_dir(&out, options.overwrite)?;
        lock = Some(lock_output_dir(&out)?);
        if config.minimize.is_some() {
            let report = sim.minimize(!options.quiet)?;
            if !options.quiet {
                eprintln!("{}", minimize_summary(&report));
            }
        }
        remove_owned_outputs(&out)?;
        std::fs::write(out.join("config.toml"), &config.source.text)
            .map_err(|e| Error::output(&out.join("config.toml"), e))?;
        let mut r = Reporters::open(&sim, &out, slots, None)?;
        r.observables.set_parameter(
            "production_start_step",
            &config.production_start().to_string(),
        )?;
        r.record_observables(&sim)?;
        if config.production_start() == 0 {
            r.write_frames(&sim)?;
        }
        r
    };
    let _lock = lock;

    let dt = sim.integrator.timestep();
    let first = sim.state.step;
    let steps = config.run.steps;
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
    let barostat_every = config.barostat.as_ref().map(|b| b.interval);
    let production_start = config.production_start();

    if !options.quiet {
        eprintln!(
            "mlff-md: {} member(s) × {} atoms on {} | {} | {} | steps {first}..{steps} ({} at the end)",
            sim.state.n_members,
            sim.state.n_atoms,
            describe(sim.device),
            sim.force.describe(),
            sim.integrator.describe(),
            format_time_fs(sim.time_fs() + (steps - first) as f64 * dt)
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

    if !options.quiet && production_start > first {
        eprintln!(
            "equilibration: steps {first}..{production_start} without exchanges or trajectory frames (observables recorded)"
        );
    }
    let mut announced_production = false;

    if !options.quiet && (sim.device != Device::Cpu || config.run.cuda_graphs != GraphPolicy::Auto)
    {
        eprintln!("{}", stepper.status());
    }

    let reinit = config.run.on_blowup == BlowupPolicy::Reinitialize;
    let mut last_good = reinit.then(|| sim.snapshot());
    // Where to go back to when a neighbour list turns out to have run out
    // of room: the state at the last check.
    let mut last_check = sim.can_overflow().then(|| sim.snapshot());
    let mut regrown = 0usize;
    let mut reinitialized = Vec::new();
    let mut last_checkpoint_time = Instant::now();
    let mut progress = Progress::new(first, steps, options.quiet);
    let start = Instant::now();
    let mut temps = Vec::new();
    let mut exchange_time = Duration::ZERO;
    let fault = FaultInjection::from_env()?;
    while sim.state.step < steps {
        stepper.step(&mut sim.state, sim.force.as_ref(), sim.integrator.as_mut())?;
        let step = sim.state.step;
        if let Some(f) = &fault {
            f.at(step);
        }
        let stop = options
            .stop
            .as_ref()
            .map_or(0, |s| s.load(Ordering::SeqCst));
        let wall_due = ck_wall.is_some_and(|w| last_checkpoint_time.elapsed() >= w);
        let ck_due =
            (ck_every > 0 && step % ck_every == 0) || wall_due || step == steps || stop != 0;
        // Equilibration: no exchanges, no frames; production's first frame
        // is the state it starts from.
        let producing = step > production_start;
        let exchange_due = producing && exchange_every.is_some_and(|every| step % every == 0);
        let barostat_due = barostat_every.is_some_and(|every| step % every == 0);
        let traj_due = traj_every > 0
            && step >= production_start
            && (step % traj_every == 0 || (step == production_start && step > 0));
        let check_due = step % obs_every == 0 || ck_due || exchange_due || barostat_due || traj_due;

        // Before anything reads the state: a neighbour list that ran out of
        // room since the last check may have dropped pairs, so every step
        // since then is run again with a larger list.
        if check_due {
            if let (Some(what), Some(snapshot)) = (sim.force.overflow(), last_check.as_ref()) {
                let from = snapshot.step;
                sim.rewind(snapshot);
                sim.force.grow(&sim.state)?;
                regrown += 1;
                if regrown > MAX_REGROWTHS {
                    return Err(Error::Simulation(format!(
                        "the neighbour list ran out of room {regrown} times ({what}); the system keeps compressing (a blow-up?)"
                    )));
                }
                drop(stepper);
                stepper = stepper_for(config, &mut sim)?;
                if !options.quiet {
                    eprintln!(
                        "note: the neighbour list ran out of room between steps {from} and {step} ({what}); enlarged it and running those steps again"
                    );
                }
                continue;
            }
        }

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
                            "{}; stopped. {}",
                            sim.describe_blowup(&bad),
                            blowup_advice(config, &out, last_checkpoint)
                        )));
                    }
                }
            } else if reinit {
                last_good = Some(sim.snapshot());
            }
        }
        if exchange_due {
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
        if barostat_due {
            if let Some(moved) = sim.barostat_move()? {
                if moved.grew_list {
                    // Trial volumes needed a larger list: new shapes.
                    drop(stepper);
                    stepper = stepper_for(config, &mut sim)?;
                }
            }
        }
        if step % obs_every == 0 {
            let mean_t = reporters.record_observables(&sim)?;
            temps.push(mean_t);
            progress.update(step, start.elapsed(), dt, mean_t);
        }
        if step == production_start && production_start > 0 && !announced_production {
            announced_production = true;
            if !options.quiet {
                progress.note(&format!(
                    "equilibration done at step {step} ({}): replica exchange and trajectory frames from here on",
                    format_time_fs(step as f64 * dt)
                ));
            }
        }
        if traj_due {
            reporters.write_frames(&sim)?;
        }
        if ck_due {
            checkpoint(
                &sim,
                &mut reporters,
                &out,
                elapsed_before + start.elapsed().as_secs_f64(),
            )?;
            last_checkpoint = Some(step);
            last_checkpoint_time = Instant::now();
        }
        if check_due && last_check.is_some() {
            last_check = Some(sim.snapshot());
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
        barostat_acceptance: sim.barostat.as_ref().map(|(b, _)| b.acceptance()),
        final_volume_a3: sim.volumes()?,
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
    Ok(RunOutcome::Finished(Box::new(summary)))
}

/// Enlargements of a neighbour list a run accepts: each at least 1.3×
/// the room, so more means a system collapsing, not a list too small.
const MAX_REGROWTHS: usize = 20;

/// Name of the test-only environment switch that makes a run signal or kill
/// itself right after a given step: `sigint@K`, `sigterm@K` or `kill@K`.
/// It lets tests stop a run at a known step instead of after a guessed
/// delay, so they test the same thing on any machine.
pub const FAULT_ENV: &str = "MLFF_MD_TEST_FAULT";

/// A signal this process sends itself after step `step` ([`FAULT_ENV`]).
struct FaultInjection {
    signal: i32,
    /// How many times it is raised, back to back.
    times: usize,
    step: u64,
}

impl FaultInjection {
    fn from_env() -> Result<Option<FaultInjection>> {
        let Ok(spec) = std::env::var(FAULT_ENV) else {
            return Ok(None);
        };
        let bad = || {
            Error::Invalid(format!(
                "{FAULT_ENV}={spec:?}: expected sigint@STEP, sigint2@STEP, sigterm@STEP or kill@STEP"
            ))
        };
        let (name, step) = spec.split_once('@').ok_or_else(bad)?;
        let (signal, times) = match name {
            "sigint" => (libc::SIGINT, 1),
            "sigint2" => (libc::SIGINT, 2),
            "sigterm" => (libc::SIGTERM, 1),
            "kill" => (libc::SIGKILL, 1),
            _ => return Err(bad()),
        };
        let step = step.trim().parse().map_err(|_| bad())?;
        Ok(Some(FaultInjection {
            signal,
            times,
            step,
        }))
    }

    fn at(&self, step: u64) {
        if step == self.step {
            // SAFETY: raise only delivers a signal to this process; the
            // handlers installed by main (or the default action) take it.
            for _ in 0..self.times {
                unsafe {
                    libc::raise(self.signal);
                }
            }
        }
    }
}

/// What to do after a blow-up, as commands that work: continue from the
/// last checkpoint with a smaller time step or with reinitialisation (both
/// may change on resume), or start again when there is no checkpoint yet.
fn blowup_advice(config: &Config, out: &Path, last_checkpoint: Option<u64>) -> String {
    let dt = config.integrator.timestep;
    let smaller = format!("{}", dt / 2.0);
    let dir = out.display();
    match last_checkpoint {
        Some(step) => format!(
            "The last checkpoint ({}, step {step}) is from before it; continue from there with a smaller time step, `mlff-md resume {dir} --timestep {smaller}`, or by reinitialising blown-up members, `mlff-md resume {dir} --on-blowup reinitialize`",
            out.join(CHECKPOINT_FILE).display()
        ),
        None => format!(
            "No checkpoint was written before it; start again with a smaller time step, `mlff-md run {cfg} --overwrite --timestep {smaller}`, or with reinitialisation, `mlff-md run {cfg} --overwrite --on-blowup reinitialize` (add the --output/--steps/--seed options you used), or fix the starting structure (a [minimize] section relaxes it first)",
            cfg = config.source.path.display()
        ),
    }
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
/// `minimized.pdb` (one MODEL per member) in the output directory, which is
/// locked meanwhile. An existing `minimized.pdb` is refused (without
/// `overwrite`) before any minimising.
pub fn minimize(
    config: &Config,
    overwrite: bool,
    quiet: bool,
) -> Result<(MinimizeReport, PathBuf)> {
    let mut sim = Simulation::from_config(config)?;
    let out = config.output_dir();
    refuse_non_directory(&out)?;
    let path = out.join("minimized.pdb");
    if path.exists() && !overwrite {
        return Err(Error::Invalid(format!(
            "{} exists; pass --overwrite to replace it",
            path.display()
        )));
    }
    let _lock = lock_output_dir(&out)?;
    let report = sim.minimize(!quiet)?;
    let mut writer = TrajectoryWriter::create(
        &out,
        TrajectoryFormat::Pdb,
        &["minimized".to_string()],
        &sim.molecule.template,
    )?;
    let positions = sim.state.positions_host();
    let cells = sim.cells()?;
    for slot in 0..sim.state.n_members {
        writer.write(slot as u64, 0.0, &positions, &[slot], cells.as_deref())?;
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
    /// Whether steps would be graphed, or why not.
    pub cuda_graphs: String,
    /// What `run` would need for the output directory (e.g. --overwrite).
    pub output_note: Option<String>,
}

/// Build everything `run` builds (system, model, device, the stepper with
/// its CUDA-graph policy) and evaluate the model once, writing nothing, so
/// whatever `run` would refuse is refused here too.
pub fn validate(config: &Config) -> Result<Validation> {
    let mut sim = Simulation::from_config(config)?;
    // The same stepper `run` builds, so the same refusals.
    let stepper = stepper_for(config, &mut sim)?;
    let out = config.output_dir();
    refuse_non_directory(&out)?;
    let output_note = check_output_dir(&out, false).err().map(|_| {
        format!(
            "{} holds an earlier run: `run` needs --resume (continue it) or --overwrite (replace it)",
            out.display()
        )
    });
    Ok(Validation {
        members: sim.state.n_members,
        atoms: sim.state.n_atoms,
        structures: sim.molecule.structures.len(),
        device: describe(sim.device),
        model: sim.force.describe(),
        energies_ev: to_host_f64(&sim.state.energies),
        warnings: sim.molecule.warnings.clone(),
        cuda_graphs: stepper.status().to_string(),
        output_note,
    })
}

#[cfg(test)]
mod tests {
    use super::format_time_fs;

    #[test]
    fn times_read_as_written() {
        assert_eq!(format_time_fs(0.1 * 7000.0), "0.7 ps");
        assert_eq!(format_time_fs(50.0), "50 fs");
        assert_eq!(format_time_fs(2.0e6), "2 ns");
        assert_eq!(format_time_fs(1.0e8 * 0.5), "50 ns");
        assert_eq!(format_time_fs(1250.0), "1.25 ps");
    }
}
