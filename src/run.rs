//! Drives a [`Simulation`] for a run: output directory, the step loop with
//! its checks (neighbour-list room, blow-ups), the moves and the reporters
//! due at each step ([`crate::sampling::moves`], [`crate::reporters`]),
//! checkpoints and signals. Values are pulled to the host only at those
//! steps; nothing in between synchronises.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{BlowupPolicy, CompiledPolicy, Config, GraphPolicy, TrajectoryFormat};
use crate::device::describe;
use crate::error::{Error, Result};
use crate::io::checkpoint::{Checkpoint, CHECKPOINT_FILE, PREVIOUS_FILE};
use crate::io::lock::{OutputLock, LOCK_FILE};
use crate::io::TrajectoryWriter;
use crate::minimize::MinimizeReport;
use crate::parallel::{Communicator, Solo};
use crate::reporters::{HostFrame, ReporterSet, Wants};
use crate::sampling::ReplicaExchangeSummary;
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
pub(crate) fn refuse_non_directory(dir: &Path) -> Result<()> {
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

/// Mean, or NaN for no values (written as null in summary.json).
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
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
    let mut stepper = Stepper::new(
        config.run.cuda_graphs,
        &sim.state,
        sim.force.as_ref(),
        sim.integrator.as_mut(),
    )?;
    // The barostat's trial volumes and the pressure evaluate forces
    // outside the captured step.
    if sim.barostat().is_some() || sim.records_pressure() {
        stepper.keep_room_for_eager_forces();
    }
    Ok(stepper)
}

pub fn run(config: &Config, options: &RunOptions) -> Result<RunOutcome> {
    run_on(config, options, Rc::new(Solo))
}

/// [`run`] as one rank of `comm` (mpirun): every rank steps its share of
/// the members; rank 0 alone writes the outputs and checkpoints, from
/// frames gathered at the steps they are due, so they are the files one
/// process writes. Ranks agree once per step on signals and on what is
/// due, and move together when a neighbour list must be rebuilt.
pub fn run_on(
    config: &Config,
    options: &RunOptions,
    comm: Rc<dyn Communicator>,
) -> Result<RunOutcome> {
    let leads = comm.rank() == 0;
    let quiet = options.quiet || !leads;
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
        if leads {
            lock = Some(OutputLock::acquire(&out)?);
        }
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
        // The force path the run was started with (model file or compiled
        // package), so the continuation equals an uninterrupted run.
        if !options.allow_model_change {
            config.model.compiled = CompiledPolicy::AsStarted(ck.header.package_sha256.clone());
        }
        resumed = Some((ck, path, note));
    }
    let config = &config;
    let mut sim = Simulation::for_rank(config, comm)?;
    let team = sim.team.clone();
    if !quiet {
        for w in &sim.molecule.warnings {
            eprintln!("warning: {w}");
        }
    }
    let slots: Vec<usize> = match &config.output.trajectory_members {
        Some(m) => m.clone(),
        None => (0..team.total).collect(),
    };
    let mut elapsed_before = 0.0;
    // Step of the checkpoint the run can go back to, if any.
    let mut last_checkpoint: Option<u64> = None;
    if let Some((ck, _, _)) = &resumed {
        sim.restore(ck, options.allow_model_change)?;
    }
    // Built on the restored state: prepare() sees the batch it will step.
    let mut stepper = stepper_for(config, &mut sim)?;
    // Rank 0's; the other ranks write nothing.
    let mut reporters = if let Some((ck, path, note)) = resumed {
        elapsed_before = ck.header.elapsed_seconds;
        last_checkpoint = Some(ck.header.step);
        leads
            .then(|| reopen_outputs(&sim, &out, slots, &ck, &path, note, quiet))
            .transpose()?
    } else {
        if leads {
            check_output_dir(&out, options.overwrite)?;
            lock = Some(lock_output_dir(&out)?);
        }
        if config.minimize.is_some() {
            let report = sim.minimize(!quiet)?;
            if !quiet {
                eprintln!("{}", minimize_summary(&report));
            }
        }
        let mut r = leads
            .then(|| create_outputs(&sim, &out, slots, quiet))
            .transpose()?;
        let wants = team.agree_wants(r.as_ref().map(ReporterSet::start_wants));
        let frame = HostFrame::pull(&sim, wants.unwrap_or_default())?;
        if let (Some(frame), Some(r)) = (team.gather_frame(frame, sim.state.n_atoms), r.as_mut()) {
            r.start(&frame, &sim)?;
        }
        r
    };
    let _lock = lock;

    let dt = sim.integrator.timestep();
    let first = sim.state.step;
    let steps = config.run.steps;
    let obs_every = config.output.observables_interval;
    let ck_every = config.output.checkpoint_interval;
    let ck_wall = config
        .output
        .checkpoint_minutes
        .map(|m| Duration::from_secs_f64(m * 60.0));
    let production_start = config.production_start();

    if !quiet {
        let ranks = match team.comm.size() {
            1 => String::new(),
            k => format!(" (rank 0 of {k}: {} of them)", sim.state.n_members),
        };
        eprintln!(
            "mlff-md: {} member(s) × {} atoms{ranks} on {} | {} | {} | steps {first}..{steps} ({} at the end)",
            team.total,
            sim.state.n_atoms,
            describe(sim.device),
            sim.force.describe(),
            sim.integrator.describe(),
            format_time_fs(sim.time_fs() + (steps - first) as f64 * dt)
        );
        for m in sim.moves.iter() {
            eprintln!("{}", m.describe());
        }
        if sim.package_sha256.is_some() {
            eprintln!(
                "compiled package from `mlff-md compile` in place of the model file ([model] compiled = \"off\" runs the file itself)"
            );
        }
        if let Some(hint) = &sim.compile_hint {
            eprintln!("note: {hint}");
        }
    }

    if !quiet && production_start > first {
        eprintln!(
            "equilibration: steps {first}..{production_start} without exchanges or trajectory frames (observables recorded)"
        );
    }
    let mut announced_production = false;

    if !quiet && (sim.device != Device::Cpu || config.run.cuda_graphs != GraphPolicy::Auto) {
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
    if let Some(r) = reporters.as_mut() {
        r.progress().restart_clock();
    }
    let start = Instant::now();
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
        let reporting = reporters.as_ref().and_then(|r| r.wants(&sim));
        // Across ranks: a signal or the wall clock on any rank, and what
        // rank 0's reporters read, hold for all.
        let (stop, wall_due, reporting) = team.agree_step(stop, wall_due, reporting);
        let ck_due =
            (ck_every > 0 && step % ck_every == 0) || wall_due || step == steps || stop != 0;
        // Equilibration: no exchanges, no frames; production's first frame
        // is the state it starts from.
        let producing = step > production_start;
        let moves_due = sim.moves.any_due(step, producing);
        let check_due = step % obs_every == 0 || ck_due || moves_due || reporting.is_some();

        // Before anything reads the state: a neighbour list that ran out of
        // room since the last check may have dropped pairs, so every step
        // since then is run again with a larger list.
        // Every rank goes back when any rank's list did (their steps stay
        // in line); only those whose list did grow it.
        let overflow = check_due.then(|| sim.force.overflow()).flatten();
        if check_due && team.any(overflow.is_some()) {
            if let Some(snapshot) = last_check.as_ref() {
                let what = overflow.clone().unwrap_or_else(|| "on another rank".into());
                let from = snapshot.step;
                // The captured graphs go first, and their memory pools with
                // them: the larger list and the eager steps after it must not
                // find the GPU still holding the old step's pool.
                drop(stepper);
                crate::cuda_graph::release_cached_memory();
                sim.rewind(snapshot);
                if overflow.is_some() {
                    sim.force.grow(&sim.state)?;
                }
                regrown += 1;
                if regrown > MAX_REGROWTHS {
                    return Err(Error::Simulation(format!(
                        "the neighbour list ran out of room {regrown} times ({what}); the system keeps compressing (a blow-up?)"
                    )));
                }
                stepper = stepper_for(config, &mut sim)?;
                if !quiet {
                    let done = if what.starts_with("an atom moved") {
                        format!("went stale between steps {from} and {step} ({what}); rebuilding it more often")
                    } else {
                        format!(
                            "ran out of room between steps {from} and {step} ({what}); enlarged it"
                        )
                    };
                    eprintln!("note: the neighbour list {done} and running those steps again");
                }
                continue;
            }
        }

        // Health is checked wherever values leave the device or a checkpoint
        // is written, so no checkpoint ever holds a blown-up state.
        if step % obs_every == 0 || ck_due {
            let bad = sim.unhealthy_members();
            // When any rank found one, no rank takes this step as its last
            // good state (one process would not).
            if team.any(!bad.is_empty()) {
                if !bad.is_empty() {
                    match last_good.as_ref() {
                        Some(snapshot) => {
                            let message = sim.describe_blowup(&bad);
                            sim.reinitialize(&bad, snapshot)?;
                            eprintln!(
                            "warning: {message}; reinitialised from step {} with new velocities",
                            snapshot.step
                        );
                            reinitialized
                                .extend(bad.iter().map(|&s| (sim.state.member_ids[s], step)));
                        }
                        None => {
                            if let Some(r) = reporters.as_mut() {
                                r.progress().finish();
                            }
                            return Err(Error::Simulation(format!(
                                "{}; stopped. {}",
                                sim.describe_blowup(&bad),
                                blowup_advice(config, &out, last_checkpoint)
                            )));
                        }
                    }
                }
            } else if reinit {
                last_good = Some(sim.snapshot());
            }
        }
        if moves_due {
            let report = sim.attempt_moves(producing)?;
            if report.new_list_shape {
                // A move (the barostat's trial volumes) needed a larger
                // neighbour list: new shapes.
                drop(stepper);
                stepper = stepper_for(config, &mut sim)?;
            }
        }
        if step == production_start && production_start > 0 && !announced_production {
            announced_production = true;
            if let (false, Some(r)) = (quiet, reporters.as_mut()) {
                r.progress().note(&format!(
                    "equilibration done at step {step} ({}): replica exchange and trajectory frames from here on",
                    format_time_fs(step as f64 * dt)
                ));
            }
        }
        // One host copy serves every reporter due now and the checkpoint
        // (the moves have acted: an exchange is now due for its record).
        // Reporters are due only at check steps, the steps ranks agree at.
        let due = match check_due {
            true => team.agree_wants(reporters.as_ref().and_then(|r| r.wants(&sim))),
            false => None,
        };
        let wants = match ck_due {
            true => Some(due.unwrap_or_default().or(Wants {
                positions: true,
                dynamics: true,
                virial: false,
            })),
            false => due,
        };
        if let Some(wants) = wants {
            let mine = HostFrame::pull(&sim, wants)?;
            let frame = team.gather_frame(mine, sim.state.n_atoms);
            if let (Some(frame), Some(r)) = (frame, reporters.as_mut()) {
                r.report(&frame, &sim)?;
                if ck_due {
                    let at = r.sync()?;
                    let elapsed = elapsed_before + start.elapsed().as_secs_f64();
                    sim.checkpoint_from(&frame, at, elapsed)
                        .write_atomic(&out)?;
                }
            }
            if ck_due {
                last_checkpoint = Some(step);
                last_checkpoint_time = Instant::now();
            }
        }
        if check_due && last_check.is_some() {
            last_check = Some(sim.snapshot());
        }
        if stop != 0 {
            if let Some(r) = reporters.as_mut() {
                r.progress().finish();
            }
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
    let temps = match reporters.as_mut() {
        Some(r) => {
            r.progress().finish();
            r.progress().temperatures.clone()
        }
        None => Vec::new(),
    };
    let final_energies = team.all_members(&to_host_f64(&sim.state.energies), 1);
    let final_volumes = sim.volumes()?.map(|v| team.all_members(&v, 1));

    let rex_summary = sim.replica_exchange().map(|r| r.summary(dt));
    let done = (steps - first) as f64;
    let sps = done / wall.max(1e-12);
    let r = team.total as f64;
    let summary = RunSummary {
        steps,
        started_at_step: first,
        members: team.total,
        atoms_per_member: sim.state.n_atoms,
        device: describe(sim.device),
        timestep_fs: dt,
        wall_seconds: wall,
        steps_per_second: sps,
        member_steps_per_second: sps * r,
        ns_per_day: sps * dt * 86_400.0 / FS_PER_NS,
        aggregate_ns_per_day: sps * dt * 86_400.0 / FS_PER_NS * r,
        mean_temperature_k: mean(&temps),
        final_potential_energy_ev: final_energies,
        exchange_seconds: sim.moves.seconds("replica_exchange"),
        replica_exchange: rex_summary.clone(),
        reinitialized: {
            // Each rank reinitialises its own members; the summary (rank
            // 0's) lists every rank's, ordered as one process would.
            let mut all = team.all_records(&reinitialized);
            all.sort_by_key(|&(member, step)| (step, member));
            all
        },
        cuda_graphs: stepper.status().to_string(),
        barostat_acceptance: sim.barostat().map(|b| b.acceptance()),
        final_volume_a3: final_volumes,
        output_directory: out.clone(),
    };
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    if let Some(r) = reporters.as_mut() {
        r.finish(&sim, &json)?;
        std::fs::write(out.join("summary.json"), &json)
            .map_err(|e| Error::output(&out.join("summary.json"), e))?;
    }
    if !quiet {
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

/// Rank 0's outputs of a run resumed from `ck` (read from `path`), cut
/// back to what it recorded, with the lines a resume prints.
fn reopen_outputs(
    sim: &Simulation,
    out: &Path,
    slots: Vec<usize>,
    ck: &Checkpoint,
    path: &Path,
    note: Option<String>,
    quiet: bool,
) -> Result<ReporterSet> {
    if !quiet {
        if let Some(note) = note {
            eprintln!("warning: {note}");
        }
        eprintln!(
            "resuming from {} at step {}",
            path.display(),
            ck.header.step
        );
    }
    let r = ReporterSet::open(sim, out, slots, Some(&ck.header.reporters), quiet)?;
    if let (Some(then), Some(now)) = (&ck.header.model_sha256, &sim.model_sha256) {
        if then != now {
            eprintln!(
                "warning: continuing with a changed model file (SHA-256 {then} until step {}, {now} from then on; --allow-model-change)",
                ck.header.step
            );
            let history = format!("{then} until step {}; {now} after", ck.header.step);
            r.observables().set_parameter("model_sha256", now)?;
            r.observables()
                .set_parameter("model_sha256_history", &history)?;
        }
    }
    // A package compiled since (or none any more): the force path changes
    // here, and the parameters say so.
    if ck.header.package_sha256 != sim.package_sha256 {
        let name = |sha: &Option<String>| match sha {
            Some(sha) => format!("compiled package {sha}"),
            None => "the model file".to_string(),
        };
        let (then, now) = (name(&ck.header.package_sha256), name(&sim.package_sha256));
        let step = ck.header.step;
        eprintln!(
            "warning: continuing on another force path ({then} until step {step}, {now} from then on; --allow-model-change)"
        );
        let o = r.observables();
        o.set_parameter(
            "package_sha256",
            sim.package_sha256.as_deref().unwrap_or(""),
        )?;
        o.set_parameter(
            "package_sha256_history",
            &format!("{then} until step {step}; {now} after"),
        )?;
        o.set_parameter("model", &sim.force.describe())?;
    }
    Ok(r)
}

/// Rank 0's outputs of a fresh run: earlier results removed, the config
/// copied, every reporter's file created.
fn create_outputs(
    sim: &Simulation,
    out: &Path,
    slots: Vec<usize>,
    quiet: bool,
) -> Result<ReporterSet> {
    remove_owned_outputs(out)?;
    let config = &sim.config;
    std::fs::write(out.join("config.toml"), &config.source.text)
        .map_err(|e| Error::output(&out.join("config.toml"), e))?;
    let r = ReporterSet::open(sim, out, slots, None, quiet)?;
    r.observables().set_parameter(
        "production_start_step",
        &config.production_start().to_string(),
    )?;
    Ok(r)
}

/// Enlargements of a neighbour list a run accepts: each at least 1.3×
/// the room, so more means a system collapsing, not a list too small.
const MAX_REGROWTHS: usize = 20;

/// Name of the test-only environment switch that makes a run signal or kill
/// itself right after a given step (a screen: after its K-th molecule):
/// `sigint@K`, `sigterm@K`, `kill@K`, or `stop@K` (SIGSTOP: the run is
/// suspended mid-run with its files open until a SIGCONT, so a reader can be
/// tested against a live writer).
/// It lets tests stop a run at a known step instead of after a guessed
/// delay, so they test the same thing on any machine.
pub const FAULT_ENV: &str = "MLFF_MD_TEST_FAULT";

/// A signal this process sends itself after step `step` ([`FAULT_ENV`]).
pub(crate) struct FaultInjection {
    signal: i32,
    /// How many times it is raised, back to back.
    times: usize,
    step: u64,
}

impl FaultInjection {
    pub(crate) fn from_env() -> Result<Option<FaultInjection>> {
        let Ok(spec) = std::env::var(FAULT_ENV) else {
            return Ok(None);
        };
        let bad = || {
            Error::Invalid(format!(
                "{FAULT_ENV}={spec:?}: expected sigint@STEP, sigint2@STEP, sigterm@STEP, kill@STEP or stop@STEP"
            ))
        };
        let (name, step) = spec.split_once('@').ok_or_else(bad)?;
        let (signal, times) = match name {
            "sigint" => (libc::SIGINT, 1),
            "sigint2" => (libc::SIGINT, 2),
            "sigterm" => (libc::SIGTERM, 1),
            "kill" => (libc::SIGKILL, 1),
            "stop" => (libc::SIGSTOP, 1),
            _ => return Err(bad()),
        };
        let step = step.trim().parse().map_err(|_| bad())?;
        Ok(Some(FaultInjection {
            signal,
            times,
            step,
        }))
    }

    pub(crate) fn at(&self, step: u64) {
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
