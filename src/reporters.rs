//! Reporters: everything that writes while a run goes, each on its own
//! schedule (OpenMM's reporters): the observables file, the trajectories
//! (per member and per temperature), the replica-exchange records and the
//! progress line. At a step where any is due (or a checkpoint is), the run
//! pulls one [`HostFrame`] from the device — one copy of what the due
//! reporters and the checkpoint read — and hands it to each of them.
//!
//! Adding one: a type implementing [`Reporter`] in a file of its own, and
//! one line in [`ReporterSet::open`]. Reporters that keep a file say where
//! it stands in [`Reporter::sync`], which the checkpoint records so that a
//! continued run cuts the file back to it.

use std::any::Any;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

use crate::config::WrapMode;
use crate::error::Result;
use crate::io::checkpoint::ReporterPositions;
use crate::io::exchange::ExchangeRecorder;
use crate::io::trajectory::{member_file_stem, write_topology};
use crate::io::wrap::MoleculeWrapper;
use crate::io::{ObservablesWriter, TrajectoryWriter};
use crate::sampling::{ReplicaExchange, ReplicaExchangeMove};
use crate::simulation::Simulation;
use crate::state::to_host_f64;
use crate::system::cell::Cell;
use crate::units::{BAR_IN_EV_PER_A3, FS_PER_NS, KB_EV_PER_K};

/// What to copy to the host besides the per-member energies and cells.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Wants {
    pub positions: bool,
    /// Velocities and forces (a checkpoint).
    pub dynamics: bool,
    /// Each member's virial, for the pressure: one more force evaluation
    /// (only where the run records pressure).
    pub virial: bool,
}

impl Wants {
    pub fn or(self, other: Wants) -> Wants {
        Wants {
            positions: self.positions || other.positions,
            dynamics: self.dynamics || other.dynamics,
            virial: self.virial || other.virial,
        }
    }
}

/// The state at one step on the host, from one device→host copy.
pub struct HostFrame {
    pub step: u64,
    pub time_fs: f64,
    /// [R] eV.
    pub potential: Vec<f64>,
    /// [R] eV.
    pub kinetic: Vec<f64>,
    /// Each periodic member's cell.
    pub cells: Option<Vec<Cell>>,
    /// [rows · 3] Å (with `Wants::positions`).
    pub positions: Option<Vec<f64>>,
    /// [rows · 3] (with `Wants::dynamics`).
    pub velocities: Option<Vec<f64>>,
    pub forces: Option<Vec<f64>>,
    /// [R] eV: each member's virial (with `Wants::virial`, where the run
    /// records pressure).
    pub virial: Option<Vec<f64>>,
}

impl HostFrame {
    /// Each member's kinetic temperature (K) for `dof` degrees of freedom
    /// per member.
    pub fn temperatures(&self, dof: f64) -> Vec<f64> {
        self.kinetic
            .iter()
            .map(|k| 2.0 * k / (dof * KB_EV_PER_K))
            .collect()
    }

    /// Each member's pressure (bar), (2 K + W)/(3 V) from the kinetic
    /// energy K, the virial W and the cell volume V; None without a virial.
    pub fn pressures_bar(&self) -> Option<Vec<f64>> {
        let (virial, cells) = (self.virial.as_ref()?, self.cells.as_ref()?);
        Some(
            self.kinetic
                .iter()
                .zip(virial)
                .zip(cells)
                .map(|((k, w), c)| (2.0 * k + w) / (3.0 * c.volume()) / BAR_IN_EV_PER_A3)
                .collect(),
        )
    }

    /// One copy of energies, kinetic energies, cells and what `wants` asks
    /// for, all as float64 (exact for float32 state). The virial, when
    /// asked for and recorded, costs one more force evaluation first.
    pub fn pull(sim: &Simulation, wants: Wants) -> Result<HostFrame> {
        let state = &sim.state;
        let flat = |t: &Tensor| t.to_kind(Kind::Double).reshape([-1]);
        let mut parts = vec![flat(&state.energies), flat(&state.kinetic_energy())];
        if let Some(c) = &state.cells {
            parts.push(flat(c));
        }
        let with_virial = wants.virial && sim.records_pressure();
        if with_virial {
            parts.push(flat(&sim.force.virial(state)?));
        }
        for (wanted, t) in [
            (wants.positions, &state.positions),
            (wants.dynamics, &state.velocities),
            (wants.dynamics, &state.forces),
        ] {
            if wanted {
                parts.push(flat(t));
            }
        }
        let host = to_host_f64(&Tensor::cat(&parts, 0));
        let r = state.n_members;
        let rows = state.positions.numel();
        let mut rest = host.as_slice();
        let mut take = |n: usize| {
            let (a, b) = rest.split_at(n);
            rest = b;
            a.to_vec()
        };
        let potential = take(r);
        let kinetic = take(r);
        let cells = state
            .cells
            .as_ref()
            .map(|_| Cell::all_from_rows(&take(9 * r)));
        let virial = with_virial.then(|| take(r));
        let positions = wants.positions.then(|| take(rows));
        let velocities = wants.dynamics.then(|| take(rows));
        let forces = wants.dynamics.then(|| take(rows));
        Ok(HostFrame {
            step: state.step,
            time_fs: sim.time_fs(),
            potential,
            kinetic,
            cells,
            positions,
            velocities,
            forces,
            virial,
        })
    }
}

/// Something that writes during a run (see the module docs).
pub trait Reporter: Any {
    /// Whether it writes at the current step.
    fn due(&self, sim: &Simulation) -> bool;

    /// What it reads of the frame besides energies and cells.
    fn wants(&self) -> Wants {
        Wants::default()
    }

    fn report(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()>;

    /// At the start of a fresh run, with the starting state.
    fn start(&mut self, _frame: &HostFrame, _sim: &Simulation) -> Result<()> {
        Ok(())
    }

    /// Put its output on disk and record where it stands.
    fn sync(&mut self, _at: &mut ReporterPositions) -> Result<()> {
        Ok(())
    }

    /// At the end of a finished run (`summary_json`: summary.json's text).
    fn finish(&mut self, _sim: &Simulation, _summary_json: &str) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The reporters of a run.
pub struct ReporterSet {
    reporters: Vec<Box<dyn Reporter>>,
}

impl ReporterSet {
    /// Open every output in `out`: fresh ones, or (`resume_at`) those of an
    /// earlier run, cut back to what its checkpoint recorded. `slots`: the
    /// batch slots whose trajectories are written; `quiet`: no progress.
    pub fn open(
        sim: &Simulation,
        out: &Path,
        slots: Vec<usize>,
        resume_at: Option<&ReporterPositions>,
        quiet: bool,
    ) -> Result<ReporterSet> {
        let observables = ObservablesReporter::open(sim, out, resume_at)?;
        let exchanges = ExchangeReporter::open(sim, &observables.writer, resume_at)?;
        let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
        if let Some(e) = exchanges {
            reporters.push(Box::new(e));
        }
        reporters.push(Box::new(observables));
        reporters.push(Box::new(ProgressReporter::new(sim, quiet)));
        if let Some(t) = TrajectoryReporter::open(sim, out, slots, resume_at)? {
            reporters.push(Box::new(t));
        }
        Ok(ReporterSet { reporters })
    }

    /// What the reporters due now read.
    pub fn wants(&self, sim: &Simulation) -> Option<Wants> {
        self.reporters
            .iter()
            .filter(|r| r.due(sim))
            .map(|r| r.wants())
            .reduce(Wants::or)
    }

    /// Every reporter due now, in order, from `frame`.
    pub fn report(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()> {
        for r in &mut self.reporters {
            if r.due(sim) {
                r.report(frame, sim)?;
            }
        }
        Ok(())
    }

    /// What [`ReporterSet::start`] reads: what any reporter reads.
    pub fn start_wants(&self) -> Wants {
        self.reporters
            .iter()
            .map(|r| r.wants())
            .fold(Wants::default(), Wants::or)
    }

    /// The starting state of a fresh run, `frame` pulled with
    /// [`ReporterSet::start_wants`].
    pub fn start(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()> {
        for r in &mut self.reporters {
            r.start(frame, sim)?;
        }
        Ok(())
    }

    /// Put everything on disk and say where each output stands.
    pub fn sync(&mut self) -> Result<ReporterPositions> {
        let mut at = ReporterPositions {
            observables_rows: 0,
            exchange_rows: 0,
            trajectory_bytes: Vec::new(),
        };
        for r in &mut self.reporters {
            r.sync(&mut at)?;
        }
        Ok(at)
    }

    pub fn finish(&mut self, sim: &Simulation, summary_json: &str) -> Result<()> {
        for r in &mut self.reporters {
            r.finish(sim, summary_json)?;
        }
        Ok(())
    }

    pub fn get<R: Reporter>(&self) -> Option<&R> {
        self.reporters
            .iter()
            .find_map(|r| r.as_any().downcast_ref())
    }

    pub fn get_mut<R: Reporter>(&mut self) -> Option<&mut R> {
        self.reporters
            .iter_mut()
            .find_map(|r| r.as_any_mut().downcast_mut())
    }

    /// The observables file (parameters are written to it at the start and
    /// the end of a run).
    pub fn observables(&self) -> &ObservablesWriter {
        &self
            .get::<ObservablesReporter>()
            .expect("every run records observables")
            .writer
    }

    /// The progress line or bar.
    pub fn progress(&mut self) -> &mut ProgressReporter {
        self.get_mut::<ProgressReporter>()
            .expect("every run has a progress reporter")
    }
}

macro_rules! any_impls {
    () => {
        fn as_any(&self) -> &dyn Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    };
}

/// observables.h5: energies, temperatures (and the thermostat temperatures,
/// volumes, densities and pressures where they exist) every
/// `observables_interval` steps.
pub struct ObservablesReporter {
    pub writer: ObservablesWriter,
    every: u64,
}

impl ObservablesReporter {
    fn open(sim: &Simulation, out: &Path, resume_at: Option<&ReporterPositions>) -> Result<Self> {
        let path = out.join("observables.h5");
        let names = sim.observable_names();
        let writer = match resume_at {
            None => ObservablesWriter::create(
                &path,
                sim.team.total,
                &names,
                &sim.metadata(),
                &sim.config.author(),
            )?,
            Some(at) => ObservablesWriter::open_existing(
                &path,
                sim.team.total,
                &names,
                at.observables_rows,
                &ADDED_LATER,
            )?,
        };
        for name in writer.lacking() {
            eprintln!(
                "note: {} was written before {name} was recorded; the continued run does not add it",
                path.display()
            );
        }
        Ok(ObservablesReporter {
            writer,
            every: sim.config.output.observables_interval,
        })
    }
}

/// Observables added after files were first written: a continued run whose
/// file lacks one goes on without it (any other missing series is an error).
const ADDED_LATER: [&str; 1] = ["pressure"];

impl Reporter for ObservablesReporter {
    fn due(&self, sim: &Simulation) -> bool {
        sim.state.step % self.every == 0
    }

    fn wants(&self) -> Wants {
        Wants {
            virial: true,
            ..Wants::default()
        }
    }

    fn report(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()> {
        let values = sim.observables_from(frame);
        let refs: Vec<&[f64]> = values.iter().map(Vec::as_slice).collect();
        self.writer.append(frame.step, frame.time_fs, &refs)?;
        self.writer.flush()
    }

    fn start(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()> {
        self.report(frame, sim)
    }

    fn sync(&mut self, at: &mut ReporterPositions) -> Result<()> {
        self.writer.flush()?;
        at.observables_rows = self.writer.rows();
        Ok(())
    }

    fn finish(&mut self, _sim: &Simulation, summary_json: &str) -> Result<()> {
        self.writer.set_parameter("summary", summary_json)?;
        self.writer.flush()
    }

    any_impls!();
}

/// /replica_exchange in observables.h5: every exchange attempt.
pub struct ExchangeReporter {
    recorder: ExchangeRecorder,
}

impl ExchangeReporter {
    fn open(
        sim: &Simulation,
        observables: &ObservablesWriter,
        resume_at: Option<&ReporterPositions>,
    ) -> Result<Option<Self>> {
        let Some(rex) = sim.replica_exchange() else {
            return Ok(None);
        };
        let recorder = match resume_at {
            None => ExchangeRecorder::create(observables, rex)?,
            Some(at) => ExchangeRecorder::open_existing(observables, at.exchange_rows)?,
        };
        Ok(Some(ExchangeReporter { recorder }))
    }
}

impl Reporter for ExchangeReporter {
    fn due(&self, sim: &Simulation) -> bool {
        sim.moves
            .get::<ReplicaExchangeMove>()
            .is_some_and(|m| m.attempt_at(sim.state.step).is_some())
    }

    fn report(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()> {
        if let Some(m) = sim.moves.get::<ReplicaExchangeMove>() {
            if let Some(a) = m.attempt_at(frame.step) {
                self.recorder
                    .record(frame.step, &m.rex, &a.energies, &a.outcome)?;
            }
        }
        Ok(())
    }

    fn sync(&mut self, at: &mut ReporterPositions) -> Result<()> {
        at.exchange_rows = self.recorder.rows();
        Ok(())
    }

    fn finish(&mut self, sim: &Simulation, _summary_json: &str) -> Result<()> {
        if let Some(rex) = sim.replica_exchange() {
            let summary = rex.summary(sim.integrator.timestep());
            self.recorder.finish(
                rex,
                &serde_json::to_string_pretty(&summary).expect("summary serialises"),
            )?;
        }
        Ok(())
    }

    any_impls!();
}

/// One trajectory file per member (`member_NNNN`) and, under replica
/// exchange, one per temperature (`temperature_KK_T`, whichever member is
/// at it), every `trajectory_interval` steps of production; periodic
/// members' molecules are written whole (`[output] wrap`).
pub struct TrajectoryReporter {
    members: TrajectoryWriter,
    /// Demultiplexed per-temperature trajectories (replica exchange).
    temperatures: Option<TrajectoryWriter>,
    /// Batch slots whose trajectories are written.
    slots: Vec<usize>,
    wrapper: Option<MoleculeWrapper>,
    every: u64,
    production_start: u64,
}

impl TrajectoryReporter {
    fn open(
        sim: &Simulation,
        out: &Path,
        slots: Vec<usize>,
        resume_at: Option<&ReporterPositions>,
    ) -> Result<Option<Self>> {
        let config = &sim.config;
        let every = config.output.trajectory_interval;
        if every == 0 {
            return Ok(None);
        }
        let format = config.output.trajectory_format;
        let template = &sim.molecule.template;
        if resume_at.is_none() {
            write_topology(out, template)?;
        }
        let open = |stems: &[String]| match resume_at {
            None => TrajectoryWriter::create(out, format, stems, template),
            Some(at) => {
                TrajectoryWriter::append(out, format, stems, template, &at.trajectory_bytes)
            }
        };
        // Frames hold every member of the run, slot s being member s.
        let stems: Vec<String> = slots.iter().map(|&s| member_file_stem(s)).collect();
        let members = open(&stems)?;
        let temperatures = sim
            .replica_exchange()
            .map(|rex| open(&demux_stems(rex)))
            .transpose()?;
        let wrapper = (sim.state.cells.is_some() && config.output.wrap == WrapMode::Molecules)
            .then(|| MoleculeWrapper::new(template.size(), &template.topology().bonds()));
        Ok(Some(TrajectoryReporter {
            members,
            temperatures,
            slots,
            wrapper,
            every,
            production_start: config.production_start(),
        }))
    }
}

impl Reporter for TrajectoryReporter {
    /// Production's first frame is the state it starts from.
    fn due(&self, sim: &Simulation) -> bool {
        let step = sim.state.step;
        step >= self.production_start
            && (step % self.every == 0 || (step == self.production_start && step > 0))
    }

    fn wants(&self) -> Wants {
        Wants {
            positions: true,
            ..Wants::default()
        }
    }

    fn report(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()> {
        let mut positions = frame.positions.clone().unwrap_or_default();
        if let (Some(w), Some(cells)) = (&self.wrapper, &frame.cells) {
            w.wrap(&mut positions, cells);
        }
        let cells = frame.cells.as_deref();
        self.members
            .write(frame.step, frame.time_fs, &positions, &self.slots, cells)?;
        if let (Some(t), Some(rex)) = (self.temperatures.as_mut(), sim.replica_exchange()) {
            t.write(
                frame.step,
                frame.time_fs,
                &positions,
                &demux_slots(rex),
                cells,
            )?;
        }
        Ok(())
    }

    fn start(&mut self, frame: &HostFrame, sim: &Simulation) -> Result<()> {
        if self.production_start == 0 {
            self.report(frame, sim)?;
        }
        Ok(())
    }

    fn sync(&mut self, at: &mut ReporterPositions) -> Result<()> {
        at.trajectory_bytes.extend(self.members.sync()?);
        if let Some(t) = self.temperatures.as_mut() {
            at.trajectory_bytes.extend(t.sync()?);
        }
        Ok(())
    }

    any_impls!();
}

/// File stem of each demultiplexed (per-temperature) trajectory.
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

/// Progress every `observables_interval` steps: a bar on a terminal, a
/// line every ~10 % (and at most every 30 s) otherwise, with steps/s,
/// ns/day, the mean kinetic temperature and the time left. Also keeps the
/// mean temperatures for the run's summary.
pub struct ProgressReporter {
    bar: Option<indicatif::ProgressBar>,
    log_lines: bool,
    first: u64,
    total: u64,
    every: u64,
    dt_fs: f64,
    dof: f64,
    start: Instant,
    last_log: Instant,
    next_log_step: u64,
    /// Mean kinetic temperature (K) at each report.
    pub temperatures: Vec<f64>,
}

impl ProgressReporter {
    fn new(sim: &Simulation, quiet: bool) -> Self {
        let (first, total) = (sim.state.step, sim.config.run.steps);
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
        ProgressReporter {
            bar,
            log_lines: !quiet && !tty,
            first,
            total,
            every: sim.config.output.observables_interval,
            dt_fs: sim.integrator.timestep(),
            dof: sim.dof,
            start: Instant::now(),
            last_log: Instant::now(),
            next_log_step: first + tenth,
            temperatures: Vec::new(),
        }
    }

    /// The step loop starts now (the clock of steps/s).
    pub fn restart_clock(&mut self) {
        self.start = Instant::now();
    }

    /// A line that must not tear the bar.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.log_lines => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

impl Reporter for ProgressReporter {
    fn due(&self, sim: &Simulation) -> bool {
        sim.state.step % self.every == 0
    }

    fn report(&mut self, frame: &HostFrame, _sim: &Simulation) -> Result<()> {
        let t = frame.temperatures(self.dof);
        let mean_t = t.iter().sum::<f64>() / t.len().max(1) as f64;
        self.temperatures.push(mean_t);
        let step = frame.step;
        let elapsed = self.start.elapsed();
        let sps = (step - self.first) as f64 / elapsed.as_secs_f64().max(1e-9);
        let ns_day = sps * self.dt_fs * 86_400.0 / FS_PER_NS;
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
        Ok(())
    }

    any_impls!();
}
