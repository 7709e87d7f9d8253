//! `mlff-md screen`: minimise every molecule of a library with batched FIRE,
//! many different molecules per force call, keeping the batch full
//! ([`inflight`]: a molecule leaves as soon as it converges or runs out of
//! iterations, and the next one of the library takes its place), then
//! optionally sample conformers of each ([`conformers`]) and minimise those
//! too, keeping the lowest energy. Outcomes go to a ledger as they come
//! ([`results`]), so a stopped screen resumes where it was. Each molecule's
//! result depends on nothing but itself (up to the model's floating-point
//! sums, which differ with the batch's composition).

pub mod config;
pub mod conformers;
pub mod inflight;
pub mod library;
pub mod order;
pub mod results;
pub mod sdf;

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::device::{describe, parse_device, resolve};
use crate::error::{Error, Result};
use crate::force::ForceProvider;
use crate::io::lock::OutputLock;
use crate::simulation::{force_provider, model_sha256};
use crate::state::BatchState;
use crate::system::Molecule;
use config::ScreenConfig;
use inflight::{evaluate, Finished, PhaseTimes, Runner, Task};
use library::{Entry, Record};

use results::{Ledger, Outcome};

/// Options of `mlff-md screen` that are not part of the config.
#[derive(Debug, Clone, Default)]
pub struct ScreenOptions {
    /// Library inputs: SDF (.sdf, .sdf.gz), other structure files, folders.
    pub inputs: Vec<PathBuf>,
    /// Replaces [output] directory.
    pub output: Option<PathBuf>,
    /// Replaces [model] device.
    pub device: Option<String>,
    /// Continue the screen whose ledger is in the output directory.
    pub resume: bool,
    /// Replace an earlier screen's results.
    pub overwrite: bool,
    pub quiet: bool,
    /// Set to a signal number to stop after the current block of iterations.
    pub stop: Option<Arc<AtomicUsize>>,
}

/// Figures of a screen (also `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ScreenSummary {
    pub records: usize,
    pub skipped: usize,
    /// Molecules finished by this invocation, and by earlier ones (resume).
    pub screened: usize,
    pub screened_before: usize,
    pub converged: usize,
    pub not_converged: usize,
    pub device: String,
    pub model: String,
    /// Atoms a batch may hold, and how that was decided.
    pub batch_atoms: usize,
    pub batch_sizing: String,
    pub force_calls: u64,
    /// The screen itself (what molecules_per_second divides by).
    pub wall_seconds: f64,
    pub molecules_per_second: f64,
    /// Before the screen: reading the library, loading the model and the
    /// memory probe (in a user's wait, not in wall_seconds).
    pub setup_seconds: f64,
    /// wall_seconds by phase of the minimisation loop.
    pub phases: PhaseTimes,
    /// Conformer sampling's MD, when configured (in wall_seconds).
    pub sampling_seconds: f64,
    pub output_directory: PathBuf,
}

/// What identifies a screen, so a resume refuses a different one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ScreenHeader {
    inputs: Vec<PathBuf>,
    records: usize,
    model: String,
    model_sha256: Option<String>,
    dtype: String,
    max_force: f64,
    max_steps: u64,
    max_step: f64,
    /// (Absent in headers of screens without conformer sampling.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conformers: Option<config::ConformerConfig>,
}

/// Measurement switch: `1` keeps TorchScript's graph optimisation on in a
/// screen (it is off by default there, see [`screen`]).
pub const JIT_ENV: &str = "MLFF_MD_SCREEN_JIT_OPTIMIZE";

const HEADER_FILE: &str = "screen.json";
const SUMMARY_FILE: &str = "summary.json";

/// Files a screen writes (removed by --overwrite).
const OWNED: [&str; 5] = [
    HEADER_FILE,
    SUMMARY_FILE,
    results::LEDGER_FILE,
    results::CSV_FILE,
    results::SDF_FILE,
];

/// Run a screen; Err(Interrupted) after a signal, with everything finished
/// so far written.
pub fn screen(config: &ScreenConfig, opts: &ScreenOptions) -> Result<ScreenSummary> {
    let begun = Instant::now();
    // TorchScript's profiling executor specialises a model's graph on the
    // input shapes, which change whenever molecules leave or enter the
    // batch; on an H200 the ANI-2xt screen of the MOSES library ran 12 %
    // faster without it (benches/results/screen_NVIDIA-H200_2026-12-03).
    crate::force::torchscript::set_executor_optimize(
        std::env::var(JIT_ENV).is_ok_and(|v| v == "1"),
    );
    let device_text = opts.device.as_deref().unwrap_or(&config.model.device);
    let device =
        resolve(parse_device(device_text).map_err(Error::Invalid)?).map_err(Error::Invalid)?;
    let out = opts.output.clone().unwrap_or_else(|| config.output_dir());
    prepare_output_dir(&out, opts)?;
    let _lock = OutputLock::acquire(&out)?;
    if opts.overwrite {
        for f in OWNED {
            let p = out.join(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| Error::output_path(&p, e))?;
            }
        }
    }

    let mut entries = library::read(&opts.inputs)?;
    let mut molecules = build_molecules(&mut entries);
    let (first, probe_molecule) = molecules
        .iter()
        .enumerate()
        .find_map(|(i, m)| m.as_ref().map(|m| (i, m)))
        .ok_or_else(|| {
            let first_reason = entries.iter().find_map(|e| match e {
                Entry::Bad(b) => Some(format!("; the first: {}: {}", b.source, b.reason)),
                Entry::Good(_) => None,
            });
            Error::Invalid(format!(
                "no usable record among the {} of {}{}",
                entries.len(),
                list_paths(&opts.inputs),
                first_reason.unwrap_or_default()
            ))
        })?;
    let kind = Kind::Double;
    let probe = BatchState::from_members(&[(probe_molecule, first)], device, kind);
    // Skin 0: every FIRE iteration is a fresh evaluation, so a stored list
    // would be rebuilt at every call anyway.
    let force = force_provider(&config.model, &config.source, &probe, false, 0.0)?;
    let sha = model_sha256(&config.model, &config.source);
    drop(probe);
    admit(&mut entries, &mut molecules, force.as_ref());
    let skipped = entries
        .iter()
        .filter(|e| matches!(e, Entry::Bad(_)))
        .count();

    let header = ScreenHeader {
        inputs: opts.inputs.clone(),
        records: entries.len(),
        model: force.describe(),
        model_sha256: sha,
        dtype: format!("{:?}", config.model.dtype),
        max_force: config.minimize.max_force,
        max_steps: config.minimize.max_steps,
        max_step: config.minimize.max_step,
        conformers: config.conformers.clone(),
    };
    check_header(&out, &header, opts.resume)?;
    let mut ledger = Ledger::open(&out)?;
    let screened_before = ledger.done.values().filter(|o| o.is_final()).count();
    let pending: Vec<usize> = entries
        .iter()
        .filter(|e| {
            matches!(e, Entry::Good(_))
                && !ledger.done.get(&e.index()).is_some_and(Outcome::is_final)
        })
        .map(Entry::index)
        .collect();
    let log = |line: String| {
        if !opts.quiet {
            eprintln!("{line}");
        }
    };
    for e in &entries {
        if let Entry::Bad(b) = e {
            log(format!(
                "skipped record {} ({}, {}): {}",
                b.index + 1,
                b.name,
                b.source,
                b.reason
            ));
        }
    }
    log(format!(
        "screening {} of {} records ({} skipped, {} done before) with {} on {}",
        pending.len(),
        entries.len(),
        skipped,
        screened_before,
        force.describe(),
        describe(device)
    ));

    let (budget, sizing) = batch_budget(config, device, force.as_ref(), &molecules, &pending)?;
    log(format!("batches of up to {budget} atoms ({sizing})"));
    let fault = crate::run::FaultInjection::from_env()?;
    let start = Instant::now();
    let mut screened = 0usize;
    let progress = Progress::new(pending.len(), opts.quiet);
    let note = |line: &str| progress.note(line);
    let mut runner = Runner {
        force: force.as_ref(),
        molecules: &molecules,
        device,
        minimize: &config.minimize,
        max_molecules: config.batch.max_molecules,
        budget,
        force_calls: 0,
        times: PhaseTimes::default(),
        stop: opts.stop.as_deref(),
        note: &note,
    };
    // A molecule is done when its outcome is final: at once without
    // conformer sampling, else after its frames are minimised too.
    let mut finish = |ledger: &mut Ledger, outcome: Outcome| -> Result<()> {
        let is_final = outcome.is_final();
        ledger.record(outcome)?;
        if is_final {
            screened += 1;
            progress.done(1);
            if let Some(f) = &fault {
                f.at(screened as u64);
            }
        }
        Ok(())
    };
    let stage = if config.conformers.is_some() {
        results::MINIMIZED
    } else {
        results::FINAL
    };
    // First minimisation of every record without an outcome yet.
    let first: VecDeque<Task> = pending
        .iter()
        .filter(|&&i| !ledger.done.contains_key(&i))
        .map(|&record| Task {
            record,
            start: None,
            frame: None,
        })
        .collect();
    let mut sampling_seconds = 0.0;
    let work = (|| -> Result<usize> {
        let mut interrupted = runner.run(first, &mut |f: Finished| {
            let outcome = outcome_of(&f, &entries, stage, None);
            finish(&mut ledger, outcome)
        })?;
        if let (Some(c), 0) = (&config.conformers, interrupted) {
            // Conformers of the molecules minimised but not yet final.
            let starts: Vec<(usize, Vec<[f64; 3]>)> = pending
                .iter()
                .filter_map(|i| ledger.done.get(i))
                .filter(|o| !o.is_final())
                .map(|o| (o.index, o.positions.clone()))
                .collect();
            let sampling = Instant::now();
            let sampled = conformers::sample(
                c,
                force.as_ref(),
                &molecules,
                &starts,
                (runner.budget, device),
                opts.stop.as_deref(),
            )?;
            sampling_seconds = sampling.elapsed().as_secs_f64();
            runner.force_calls += sampled.force_calls;
            let tasks = sampled.tasks;
            let per_record = (c.members * c.frames) as usize;
            // Each record's best frame so far, and how many of its frames are done.
            let mut best: BTreeMap<usize, Finished> = BTreeMap::new();
            let mut done: BTreeMap<usize, usize> = BTreeMap::new();
            interrupted = if sampled.stopped_by != 0 {
                sampled.stopped_by
            } else {
                runner.run(tasks.into(), &mut |f: Finished| {
                    let record = f.task.record;
                    let n = done.entry(record).or_insert(0);
                    *n += 1;
                    let complete = *n == per_record;
                    let better = f.energy.is_finite()
                        && best.get(&record).is_none_or(|b| f.energy < b.energy);
                    if better {
                        best.insert(record, f);
                    }
                    if complete {
                        // The lowest energy of the first minimisation and its frames.
                        let first = ledger.done[&record].clone();
                        let outcome = match best.remove(&record) {
                            Some(b) if b.energy < first.energy_ev => Outcome {
                                energy_start_ev: first.energy_start_ev,
                                ..outcome_of(&b, &entries, results::FINAL, b.task.frame)
                            },
                            _ => Outcome {
                                stage: results::FINAL.into(),
                                ..first
                            },
                        };
                        finish(&mut ledger, outcome)?;
                    }
                    Ok(())
                })?
            };
        }
        Ok(interrupted)
    })();
    progress.finish();
    let wall = start.elapsed().as_secs_f64();
    // The ledger holds what finished; the tables show it (the rest
    // pending) whether the screen ended or could not go on.
    let tables = results::write_csv(&out, &entries, &ledger.done)
        .and_then(|csv| Ok((csv, results::write_sdf(&out, &entries, &ledger.done)?)));
    let finals: Vec<&Outcome> = ledger.done.values().filter(|o| o.is_final()).collect();
    let interrupted = match work {
        Ok(signal) => signal,
        Err(e) => {
            if let Ok((csv, sdf)) = &tables {
                log(format!(
                    "{} molecule{} finished before the error: {} and {} (the others pending)",
                    finals.len(),
                    if finals.len() == 1 { "" } else { "s" },
                    csv.display(),
                    sdf.display()
                ));
            }
            return Err(e);
        }
    };
    let (csv, sdf_path) = tables?;
    let converged = finals.iter().filter(|o| o.converged).count();
    let summary = ScreenSummary {
        records: entries.len(),
        skipped,
        screened,
        screened_before,
        converged,
        not_converged: finals.len() - converged,
        device: describe(device),
        model: force.describe(),
        batch_atoms: runner.budget,
        batch_sizing: sizing,
        force_calls: runner.force_calls,
        wall_seconds: wall,
        molecules_per_second: screened as f64 / wall.max(1e-9),
        setup_seconds: (start - begun).as_secs_f64(),
        phases: runner.times,
        sampling_seconds,
        output_directory: out.clone(),
    };
    results::write_atomically(
        &out.join(SUMMARY_FILE),
        serde_json::to_string_pretty(&summary)
            .expect("summary serialises")
            .as_bytes(),
    )?;
    if interrupted != 0 {
        let left = entries.len() - skipped - finals.len();
        return Err(Error::Interrupted {
            signal: interrupted as i32,
            message: format!(
                "stopped after {} of {} molecules ({left} left); results so far in {} and {}; continue with --resume",
                finals.len(),
                entries.len() - skipped,
                csv.display(),
                sdf_path.display()
            ),
        });
    }
    Ok(summary)
}

/// The ledger line of a finished minimisation.
fn outcome_of(f: &Finished, entries: &[Entry], stage: &str, conformer: Option<usize>) -> Outcome {
    Outcome {
        index: f.task.record,
        name: entries[f.task.record].name().to_string(),
        energy_start_ev: f.energy_start,
        energy_ev: f.energy,
        max_force: f.max_force,
        converged: f.converged,
        iterations: f.iterations,
        positions: f.positions.clone(),
        stage: stage.to_string(),
        conformer,
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuse a directory holding another screen's results unless told what to
/// do with them.
fn prepare_output_dir(out: &Path, opts: &ScreenOptions) -> Result<()> {
    crate::run::refuse_non_directory(out)?;
    let has_results = OWNED.iter().any(|f| out.join(f).exists());
    if has_results && !opts.resume && !opts.overwrite {
        return Err(Error::Invalid(format!(
            "output directory {} holds an earlier screen; pass --resume to continue it, --overwrite to replace it, or --output to choose another",
            out.display()
        )));
    }
    if opts.resume && !out.join(HEADER_FILE).exists() {
        return Err(Error::Invalid(format!(
            "--resume: {} holds no screen to continue (no {HEADER_FILE})",
            out.display()
        )));
    }
    std::fs::create_dir_all(out)
        .map_err(|e| Error::output_path(out, format!("cannot create the output directory: {e}")))?;
    Ok(())
}

/// Write the header of a fresh screen, or check a resumed one's.
fn check_header(out: &Path, header: &ScreenHeader, resume: bool) -> Result<()> {
    let path = out.join(HEADER_FILE);
    if resume {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::output_path(&path, e))?;
        let old: ScreenHeader = serde_json::from_str(&text)
            .map_err(|e| Error::output_path(&path, format!("not a screen header: {e}")))?;
        if &old != header {
            return Err(Error::Invalid(format!(
                "--resume: this screen differs from the one in {} (library, model file or [minimize] settings); its results would not belong together. Was: {}; now: {}",
                out.display(),
                serde_json::to_string(&old).unwrap_or_default(),
                serde_json::to_string(header).unwrap_or_default()
            )));
        }
        return Ok(());
    }
    results::write_atomically(
        &path,
        serde_json::to_string_pretty(header)
            .expect("header serialises")
            .as_bytes(),
    )
}

/// The molecule of a record (its structure, masses from the elements, its
/// charge); Err names what is wrong with it.
fn molecule_of(r: &Record) -> Result<Molecule> {
    let symbols: Vec<&str> = r.mol.symbols.iter().map(String::as_str).collect();
    let mut m = Molecule::from_symbols(&symbols, &r.mol.positions)?;
    if r.charge != 0 {
        m.formal_charge = Some((r.charge, "the record's formal charges".into()));
    }
    Ok(m)
}

/// The molecule of every readable record (None for the others, which
/// become skipped records with the reason, e.g. an unknown element).
fn build_molecules(entries: &mut [Entry]) -> Vec<Option<Molecule>> {
    entries
        .iter_mut()
        .map(|e| {
            let Entry::Good(r) = e else { return None };
            match molecule_of(r) {
                Ok(m) => Some(m),
                Err(Error::Structure { message, .. }) => {
                    e.reject(message);
                    None
                }
                Err(other) => {
                    e.reject(other.to_string());
                    None
                }
            }
        })
        .collect()
}

/// Skip the records the model cannot take: elements it does not know, a
/// net charge when it takes none.
fn admit(entries: &mut [Entry], molecules: &mut [Option<Molecule>], force: &dyn ForceProvider) {
    let elements = force.supported_elements();
    for (e, slot) in entries.iter_mut().zip(molecules.iter_mut()) {
        let (Entry::Good(r), Some(m)) = (&*e, slot.as_ref()) else {
            continue;
        };
        let mut unknown: Vec<&str> = match &elements {
            Some(allowed) => m
                .atomic_numbers
                .iter()
                .zip(&r.mol.symbols)
                .filter(|(z, _)| !allowed.contains(z))
                .map(|(_, s)| s.as_str())
                .collect(),
            None => Vec::new(),
        };
        unknown.sort();
        unknown.dedup();
        let reason = if !unknown.is_empty() {
            Some(format!(
                "the model does not know element(s) {}",
                unknown.join(", ")
            ))
        } else if r.charge != 0 && !force.takes_charge() {
            Some(format!(
                "charged ({:+}) and the model takes no charge (it assumes neutral molecules)",
                r.charge
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            e.reject(reason);
            *slot = None;
        }
    }
}

/// Atoms per batch: the hard cap, or on a GPU what `memory_fraction` of
/// the free device memory holds at the bytes per atom a probe call of
/// the library's largest molecules measures (TorchSim's approach), if less.
fn batch_budget(
    config: &ScreenConfig,
    device: Device,
    force: &dyn ForceProvider,
    molecules: &[Option<Molecule>],
    pending: &[usize],
) -> Result<(usize, String)> {
    let cap = config.batch.max_atoms;
    let Device::Cuda(ordinal) = device else {
        return Ok((
            cap,
            "[batch] max_atoms; no device memory to measure on the CPU".into(),
        ));
    };
    let Some(&largest) = pending
        .iter()
        .max_by_key(|&&i| molecules[i].as_ref().map_or(0, Molecule::n_atoms))
    else {
        return Ok((cap, "nothing to screen".into()));
    };
    let m = molecules[largest]
        .as_ref()
        .expect("pending records are admitted");
    // About 8k atoms: large enough that the fixed cost of a call does not
    // dominate the measured memory.
    let copies = (8192 / m.n_atoms()).clamp(1, config.batch.max_molecules);
    let members: Vec<(&Molecule, usize)> = (0..copies).map(|k| (m, k)).collect();
    let mut probe = BatchState::from_members(&members, device, Kind::Double);
    crate::cuda_graph::release_cached_memory();
    crate::cuda_graph::reset_peak_memory(ordinal);
    let (base, _) = crate::cuda_graph::memory_stats(ordinal).unwrap_or((0, 0));
    evaluate(force, &mut probe)?;
    let (peak, _) = crate::cuda_graph::memory_stats(ordinal).unwrap_or((0, 0));
    drop(probe);
    crate::cuda_graph::release_cached_memory();
    let probe_atoms = copies * m.n_atoms();
    let per_atom = (peak.saturating_sub(base) as f64 / probe_atoms as f64).max(1.0);
    let Some((free, _)) = crate::cuda_graph::device_memory(ordinal) else {
        return Ok((cap, "[batch] max_atoms; device memory not readable".into()));
    };
    let fits = (config.batch.memory_fraction * free as f64 / per_atom) as usize;
    let note = format!(
        "probe: {probe_atoms} atoms took {:.1} KiB per atom; {:.0} % of the {:.1} GiB free holds {fits} atoms; cap [batch] max_atoms = {cap}",
        per_atom / 1024.0,
        config.batch.memory_fraction * 100.0,
        free as f64 / (1u64 << 30) as f64
    );
    Ok((fits.clamp(1, cap), note))
}

/// Molecules done: a bar on a terminal, a line every ~10 % otherwise, with
/// molecules/s and the time left.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    total: usize,
    done: std::cell::Cell<usize>,
    next_line: std::cell::Cell<usize>,
    start: Instant,
}

impl Progress {
    fn new(total: usize, quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {pos}/{len} molecules  {per_sec}  ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            lines: !quiet && !tty,
            total,
            done: 0.into(),
            next_line: total.div_ceil(10).max(1).into(),
            start: Instant::now(),
        }
    }

    fn done(&self, n: usize) {
        let done = self.done.get() + n;
        self.done.set(done);
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        } else if self.lines && (done >= self.next_line.get() || done == self.total) {
            self.next_line.set(done + self.total.div_ceil(10).max(1));
            let secs = self.start.elapsed().as_secs_f64();
            let rate = done as f64 / secs.max(1e-9);
            let left = (self.total - done) as f64 / rate.max(1e-9);
            eprintln!(
                "{done}/{} molecules, {rate:.1} molecules/s, {:.0} s left",
                self.total, left
            );
        }
    }

    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.lines => eprintln!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
